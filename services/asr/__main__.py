"""``python -m services.asr``: one ASR replica (prints ``READY asr ...`` when serving)."""

from __future__ import annotations

from services.asr.engine import AsrEngine
from services.asr.metrics import SERVICE, AsrMetrics
from services.asr.settings import AsrSettings
from shared import eventloop
from shared.logs import setup_logging
from shared.metrics import ServiceMetrics
from shared.routing import RoutingSettings
from shared.worker import WorkerRuntime


def main() -> int:
    settings = AsrSettings()
    setup_logging(settings.log_level, settings.log_json, name=SERVICE)
    metrics = ServiceMetrics(SERVICE)
    engine = AsrEngine(settings, AsrMetrics(metrics), RoutingSettings().load())
    runtime = WorkerRuntime(engine, settings, metrics)
    eventloop.run(runtime.run(), settings.event_loop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
