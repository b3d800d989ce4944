"""Delivery periods: the contract's `HH-HH` hour labels and ISO delivery days.

One delivery day has 24 labelled hours, `00-01` … `23-24`, taken in UTC (see README,
"Time zone"). Every module that names a delivery hour goes through these helpers.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

HOURS_PER_DAY = 24
_HOUR_LABEL = re.compile(r"^(\d{2})-(\d{2})$")
_ISO_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def hour_label(hour: int) -> str:
    """`7` -> `"07-08"`; `23` -> `"23-24"`."""
    if not 0 <= hour < HOURS_PER_DAY:
        raise ValueError(f"delivery hour must be 0..23, got {hour!r}")
    return f"{hour:02d}-{hour + 1:02d}"


def parse_hour_label(label: str) -> int:
    """`"07-08"` -> `7`. Raises ValueError on anything but `HH-HH` with HH+1."""
    match = _HOUR_LABEL.match(label) if isinstance(label, str) else None
    if not match:
        raise ValueError(f"delivery hour must look like 'HH-HH', got {label!r}")
    start, end = int(match.group(1)), int(match.group(2))
    if not (0 <= start < HOURS_PER_DAY and end == start + 1):
        raise ValueError(f"delivery hour must be one of 00-01 … 23-24, got {label!r}")
    return start


def parse_delivery_day(text: str) -> date:
    """`"2023-02-21"` -> date. Strict ISO `YYYY-MM-DD` only."""
    if not isinstance(text, str) or not _ISO_DAY.match(text):
        raise ValueError(f"delivery day must be an ISO date YYYY-MM-DD, got {text!r}")
    return date.fromisoformat(text)


def delivery_start(day: date, hour: int) -> datetime:
    """When delivery of (day, hour) starts, in UTC; the project's gate closure."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(hours=hour)
