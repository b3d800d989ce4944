"""How the desk names a period: in its market's local time, the fall-back night's repeated hour
told apart by its UTC offset."""

from datetime import UTC, datetime, timedelta

import pytest

from energy_assets.desk.render import period_label


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@pytest.mark.parametrize(
    ("market", "start", "minutes", "label"),
    [
        ("DE", "2026-02-06T11:00Z", 60, "12-13"),
        ("DE", "2026-02-06T11:15Z", 15, "12:15-12:30"),
        ("GB", "2026-02-06T12:00Z", 30, "GB 12:00-12:30"),
        # Spring forward in Berlin: 01:00 UTC is 03:00 local, the hour after 01-02.
        ("DE", "2026-03-29T01:00Z", 60, "03-04"),
        # Fall back: 02-03 twice, CEST then CET.
        ("DE", "2026-10-25T00:00Z", 60, "02-03+02:00"),
        ("DE", "2026-10-25T01:00Z", 60, "02-03+01:00"),
        ("DE", "2026-10-25T01:45Z", 15, "02:45-03:00+01:00"),
        ("GB", "2026-10-25T01:00Z", 30, "GB 01:00-01:30+00:00"),
    ],
)
def test_period_labels(market, start, minutes, label):
    begin = at(start.replace("Z", "+00:00"))
    assert period_label(market, begin, begin + timedelta(minutes=minutes)) == label
