"""Log set-up: text lines for people, or one JSON object per line for log pipelines.

Context rides on the standard ``extra`` argument: ``log.info("assigned", extra={"partitions":
[...]})`` adds a ``partitions`` field to the JSON object (text lines show only the message).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, any ``extra`` fields, and the
    exception with its traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def fatal(message: str) -> None:
    """The line a command ends with when it stops on an error: ``streamserve: <message>`` on
    stderr, or a CRITICAL JSON object with STREAMSERVE_LOG_FORMAT=json (also when the settings
    themselves were refused, before logging was set up)."""
    handlers = logging.getLogger().handlers
    as_json = any(isinstance(h.formatter, JsonFormatter) for h in handlers) or (
        os.environ.get("STREAMSERVE_LOG_FORMAT") == "json"
    )
    if not as_json:
        print(f"streamserve: {message}", file=sys.stderr, flush=True)
        return
    record = logging.LogRecord("streamserve", logging.CRITICAL, "", 0, message, None, None)
    print(JsonFormatter().format(record), file=sys.stderr, flush=True)


def setup_logging(level: str, log_format: str = "text") -> None:
    """Send every log line to stderr, as text or JSON."""
    handler = logging.StreamHandler(sys.stderr)
    json_lines = log_format == "json"
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
