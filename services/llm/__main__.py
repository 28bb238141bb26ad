"""``python -m services.llm``: one LLM replica.

Wiring only: settings from ``LLM_*``, the metrics container, the engine, and the
shared replica runtime (control plane, data plane, health, drain). Prints
``READY llm replica=<id> health_port=<port>`` when it takes calls.
"""

from __future__ import annotations

from services.llm.engine import EngineOptions, LlmEngine
from services.llm.metrics import LlmMetrics
from services.llm.settings import LlmSettings
from shared import eventloop
from shared.logs import setup_logging
from shared.routing import RoutingSettings
from shared.worker import WorkerRuntime


def main() -> None:
    settings = LlmSettings()
    setup_logging(settings.log_level, settings.log_json, name="llm")
    metrics = LlmMetrics()
    engine = LlmEngine(EngineOptions.from_settings(settings), metrics, RoutingSettings().load())
    runtime = WorkerRuntime(engine, settings, metrics)
    eventloop.run(runtime.run(), settings.event_loop)


if __name__ == "__main__":
    main()
