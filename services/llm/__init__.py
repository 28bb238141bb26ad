"""The LLM service: per-session conversation history and streamed answers.

Modules, bottom-up:

* `prompt`   pure prompt assembly and history capping (sans-I/O)
* `templates` sandboxed Jinja2 prompt templates with limits (sans-I/O)
* `chain`    the worker chain: checks, worker messages, output parsing (sans-I/O)
* `workers`  one turn's workers as tasks; `promptlog` the optional prompt record
* `chunks`   pure parsing of the engine's streamed chunks into events
* `stream`   the bounded hand-off of chunks from a generation thread to the event loop
* `backend`  the llama.cpp engine (xllamacpp) behind a small interface we own
* `session`  one call's turns: begin / deltas / end, cancel, history, prefill
* `engine`   the `shared.worker.Engine` the replica runtime plugs in
* `settings`, `metrics`, `__main__`  configuration, metrics and wiring
"""
