"""Structured JSON logs: one object per line, with the `extra` fields (decision_id, ...).

`configure_logging` is called by `winback serve` (and the uvicorn factory), never at import.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from pydantic_core import PydanticSerializationError, to_json

_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "message", ...extra}`; exceptions under `exc_info`."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = record.__dict__
        for key in fields.keys() - _STANDARD:  # the `extra` fields
            if not key.startswith("_"):
                out[key] = fields[key]
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        # pydantic-core's encoder (as the store's JSON columns): a value JSON has no
        # spelling for is written as its `str`; a string UTF-8 cannot hold (a lone
        # surrogate), by `json.dumps`, escaped
        try:
            return to_json(out, fallback=str, inf_nan_mode="constants").decode()
        except PydanticSerializationError:
            return json.dumps(out, default=str)


def configure_logging(level: str = "info") -> None:
    """Send `winback.*` logs to stderr as JSON lines (idempotent)."""
    logger = logging.getLogger("winback")
    logger.setLevel(level.upper())
    if not any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
    logger.propagate = False
    # records need no thread or process names (the JSON has none of them): skip collecting
    # them on every decision log line
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # nor the caller's file and line (`findCaller` walks the stack on every record; the
    # logging module documents setting `_srcfile` to None for exactly this)
    logging._srcfile = None
