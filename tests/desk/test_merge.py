"""What the desk shows for a period both the buffer and `confirmed.parquet` hold: the row with
more deals, the confirmed one of as many; every other period as its one source has it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
from hypothesis import given
from hypothesis import strategies as st

from energy_assets.desk.live import CONFIRMED, LIVE, merge
from energy_assets.exposure.positions import BOOK_SCHEMA, PERIOD_KEY

T0 = datetime(2026, 12, 1, tzinfo=UTC)
#: (trader, hour after T0) -> deals: a few traders over a wide span of hours, so that the live
#: book's span covers some confirmed periods and not others.
books = st.dictionaries(
    st.tuples(st.sampled_from(["alice", "bob"]), st.integers(0, 2_000)),
    st.integers(1, 5),
    max_size=12,
)


def book_rows(deals: dict[tuple[str, int], int]) -> pl.DataFrame:
    rows = [
        {
            "trader_id": trader,
            "market": "DE",
            "delivery_start": T0 + timedelta(hours=hour),
            "delivery_end": T0 + timedelta(hours=hour + 1),
            "delivery_day": (T0 + timedelta(hours=hour)).date(),
            "trades": trades,
        }
        for (trader, hour), trades in deals.items()
    ]
    return pl.DataFrame(
        rows, schema={c: BOOK_SCHEMA[c] for c in [*PERIOD_KEY, "delivery_day", "trades"]}
    )


@given(live=books, confirmed=books)
def test_each_period_shows_the_row_with_more_deals_and_the_confirmed_one_of_as_many(
    live, confirmed
):
    merged = merge(book_rows(live), book_rows(confirmed))
    shown = {
        (row["trader_id"], int((row["delivery_start"] - T0) / timedelta(hours=1))): (
            row["trades"],
            row["status"],
        )
        for row in merged.iter_rows(named=True)
    }
    assert merged.height == len(shown)  # one row a period
    expected = {}
    for key in live.keys() | confirmed.keys():
        ours, theirs = live.get(key, 0), confirmed.get(key, 0)
        expected[key] = (theirs, CONFIRMED) if theirs >= ours else (ours, LIVE)
    assert shown == expected
