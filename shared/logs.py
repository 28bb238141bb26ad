"""stdlib logging setup: plain text for people, JSON lines in production."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": record.created,
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        sid = getattr(record, "sid", None)
        if sid:
            entry["sid"] = sid
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: str = "INFO", as_json: bool = False, name: str = "") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if as_json:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s {name} %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class SessionLogger(logging.LoggerAdapter[logging.Logger]):
    """Prefixes messages with the session id and carries it for JSON logs."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        sid = (self.extra or {}).get("sid", "")
        kwargs.setdefault("extra", {})["sid"] = sid
        return f"[{sid}] {msg}", kwargs
