"""The files the batch layer publishes for the live desk, read while they are republished."""

from __future__ import annotations

import io
import threading
from datetime import UTC, datetime, timedelta

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from energy_assets import published
from energy_assets.tables import PRICE_ROW


def test_a_reader_sees_one_whole_publication_while_they_are_replaced(tmp_path):
    # The planner republishes prices.parquet every few seconds while the desk and the planner's
    # sensor read it: a read that opened the file twice (its footer, then its pages) mixed two
    # publications and raised "File out of specification".
    small = pl.DataFrame({"n": list(range(10))})
    large = pl.DataFrame({"n": list(range(50_000))})
    published.write(small, tmp_path, "numbers.parquet")
    stop = threading.Event()

    def republish() -> None:
        while not stop.is_set():
            for frame in (large, small):
                published.write(frame, tmp_path, "numbers.parquet")

    writer = threading.Thread(target=republish)
    writer.start()
    try:
        heights = {published.read(tmp_path, "numbers.parquet").height for _ in range(300)}
    finally:
        stop.set()
        writer.join()
    assert heights <= {10, 50_000}


def _prices_file() -> bytes:
    """A real `prices.parquet` of two periods, as the batch layer publishes it."""
    start = datetime(2026, 12, 2, 11, tzinfo=UTC)
    frame = pl.DataFrame(
        {
            "market": ["DE", "GB"],
            "delivery_start": [start, start],
            "delivery_end": [start + timedelta(hours=1), start + timedelta(minutes=30)],
            "value": [45.0, 61.5],
            "currency": ["EUR", "GBP"],
            "last_update": [start, start],
            "fetched_at": [start, start],
        },
        schema=PRICE_ROW,
    )
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()


GOOD = _prices_file()


@st.composite
def mutated(draw) -> bytes:
    """A real file with a few bytes changed and perhaps cut short: the deeper parts of the
    reader (footer, schema, pages)."""
    data = bytearray(GOOD)
    for _ in range(draw(st.integers(0, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))])


@settings(max_examples=300)
@given(st.one_of(st.binary(max_size=2048), mutated()))
def test_any_bytes_in_a_published_file_are_a_frame_or_none_never_an_exception(
    tmp_path_factory, data
):
    directory = tmp_path_factory.mktemp("published")
    (directory / published.PRICES).write_bytes(data)
    frame = published.read(directory, published.PRICES)
    assert frame is None or frame.schema == PRICE_ROW
