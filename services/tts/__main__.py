"""``python -m services.tts``: one TTS replica (``--list-voices`` prints the voices)."""

from __future__ import annotations

import argparse

from services.tts.engine import TtsEngine
from services.tts.metrics import TtsMetrics
from services.tts.settings import TtsSettings
from services.tts.voices import list_voices
from shared import eventloop
from shared.logs import setup_logging
from shared.routing import RoutingSettings
from shared.worker import WorkerRuntime


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m services.tts", description=__doc__)
    parser.add_argument("--list-voices", action="store_true", help="print the voices and exit")
    args = parser.parse_args()
    if args.list_voices:
        for voice in list_voices():
            print(
                f"{voice.name}\t{voice.language.value}\t{', '.join(voice.aliases)}\t"
                f"{voice.description}"
            )
        return 0
    settings = TtsSettings()
    setup_logging(settings.log_level, settings.log_json, name="tts")
    metrics = TtsMetrics()
    engine = TtsEngine(settings, metrics, routing=RoutingSettings().load())
    runtime = WorkerRuntime(engine, settings, metrics)
    eventloop.run(runtime.run(), settings.event_loop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
