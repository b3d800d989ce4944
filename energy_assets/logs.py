"""Structured logs for the platform's own processes: one line per event, `key=value`.

    log = event_logger("listener")
    log.info("reconnected", attempt=3, delay_s=0.8)
    # 2026-11-25T13:00:00.123Z level=info logger=listener event=reconnected attempt=3 delay_s=0.8

Inside a Dagster run, use `context.log` instead: Dagster stamps those lines with the run id.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any


def _value(value: Any) -> str:
    """The value as written: quoted when it holds a space, `=` or `"`, and control characters
    (a newline in a requested path) escaped, so an event is always one line."""
    text = str(value)
    if text == "" or any(ch in text for ch in ' ="') or not text.isprintable():
        text = text.replace("\\", "\\\\").replace('"', '\\"')
        text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
        return '"' + text + '"'
    return text


def format_event(level: str, logger: str, event: str, fields: dict[str, Any]) -> str:
    stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    parts = [stamp, f"level={level}", f"logger={logger}", f"event={_value(event)}"]
    parts += [f"{key}={_value(value)}" for key, value in fields.items()]
    return " ".join(parts)


class EventLogger:
    """Writes one structured line per event to stderr."""

    def __init__(self, name: str, level: int = logging.INFO):
        self.name = name
        self.level = level

    def _emit(self, level: int, event: str, fields: dict[str, Any]) -> None:
        if level < self.level:
            return
        stream = sys.stderr  # looked up at each event: pytest's capture replaces it
        stream.write(format_event(logging.getLevelName(level).lower(), self.name, event, fields))
        stream.write("\n")
        stream.flush()

    def info(self, event: str, **fields: Any) -> None:
        self._emit(logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit(logging.WARNING, event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit(logging.ERROR, event, fields)


def event_logger(name: str) -> EventLogger:
    return EventLogger(name)
