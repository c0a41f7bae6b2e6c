"""Logging setup for the long-running commands (worker, relay): plain ``key=value`` text or one JSON object per line (``log_json``).

Structured fields are passed with ``extra={...}``; both formatters append every attribute a record has
beyond the standard ones, so ``log.info("cache invalidated", extra={"keys_deleted": 3})`` renders as
``... cache invalidated keys_deleted=3`` or ``{"msg": "cache invalidated", "keys_deleted": 3, ...}``.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra=`` fields of a record."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One compact JSON object per record: ts, level, logger, msg, the extra fields, exc (if any)."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        data.update(record_fields(record))
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(data, default=str).decode()


class KeyValueFormatter(logging.Formatter):
    """``time LEVEL logger: message k=v k=v``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = record_fields(record)
        if fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return line


def configure_logging(level: str, *, json: bool) -> None:
    """Send every log record (slotguard's, Faust's, aiokafka's) to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json else KeyValueFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiokafka logs every group-coordination step at INFO; keep it for warnings unless debugging.
    if root.level > logging.DEBUG:
        logging.getLogger("aiokafka").setLevel(logging.WARNING)
