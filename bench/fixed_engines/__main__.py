"""``python -m bench.fixed_engines asr|llm|tts``: one fixed-delay replica (bench only)."""

from __future__ import annotations

import argparse

from bench.fixed_engines.asr import FixedAsrEngine
from bench.fixed_engines.llm import FixedLlmEngine
from bench.fixed_engines.settings import FixedSettings
from bench.fixed_engines.tts import FixedTtsEngine
from shared import eventloop
from shared.logs import setup_logging
from shared.metrics import ServiceMetrics
from shared.worker import Engine, WorkerRuntime


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fixed_engines", description=__doc__)
    parser.add_argument("service", choices=("asr", "llm", "tts"))
    args = parser.parse_args()
    settings = FixedSettings()
    setup_logging(settings.log_level, settings.log_json, name=f"fixed-{args.service}")
    engine: Engine
    match args.service:
        case "asr":
            engine = FixedAsrEngine(settings)
        case "llm":
            engine = FixedLlmEngine(settings)
        case _:
            engine = FixedTtsEngine(settings)
    runtime = WorkerRuntime(engine, settings, ServiceMetrics(args.service))
    # The same event loop as the real services: only the engines differ.
    eventloop.run(runtime.run(), settings.event_loop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
