"""UTC hour labels of the hourly `reference_prices` partitions (`prices/partitions.py`), their
only user. Delivery periods, local days and labels of the markets are `energy_assets.markets`.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

HOURS_PER_DAY = 24
# ASCII digits, the whole string: `\d` matches any Unicode digit ("٠٧-٠٨") and `$` matches
# before a trailing newline ("07-08\n").
_HOUR_LABEL = re.compile(r"([0-9]{2})-([0-9]{2})")


def hour_label(hour: int) -> str:
    """`7` -> `"07-08"`; `23` -> `"23-24"`."""
    if not 0 <= hour < HOURS_PER_DAY:
        raise ValueError(f"delivery hour must be 0..23, got {hour!r}")
    return f"{hour:02d}-{hour + 1:02d}"


def parse_hour_label(label: str) -> int:
    """`"07-08"` -> `7`. Raises ValueError on anything but `HH-HH` with HH+1."""
    match = _HOUR_LABEL.fullmatch(label) if isinstance(label, str) else None
    if not match:
        raise ValueError(f"delivery hour must look like 'HH-HH', got {label!r:.60}")
    start, end = int(match.group(1)), int(match.group(2))
    if not (0 <= start < HOURS_PER_DAY and end == start + 1):
        raise ValueError(f"delivery hour must be one of 00-01 … 23-24, got {label!r}")
    return start


def delivery_start(day: date, hour: int) -> datetime:
    """When delivery of (day, hour) starts, in UTC; the project's gate closure."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(hours=hour)
