"""llama.cpp's own OpenAI-compatible HTTP server, serving a GGUF model, for tests.

``python -m tests.support.chat_server MODEL.gguf`` loads the model into
``xllamacpp.Server`` (llama.cpp's server, routes ``/v1/chat/completions`` and more) on
an ephemeral loopback port, prints ``LISTENING <base_url>`` and serves until its stdin
closes, so it never outlives the test that started it.
"""

from __future__ import annotations

import argparse
import sys

import xllamacpp


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.n_parallel = 1
    params.n_ctx = args.ctx
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.warmup = False
    params.verbosity = -1
    params.ui = False
    params.n_threads_http = 2
    params.hostnames = ["127.0.0.1"]
    params.port = 0
    server = xllamacpp.Server(params)
    address = server.listening_address
    print(f"LISTENING {address}", flush=True)
    sys.stdin.read()  # EOF: the parent is done (or gone)
    del server
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
