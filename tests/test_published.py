"""The files the batch layer publishes for the live desk, read while they are republished."""

from __future__ import annotations

import threading

import polars as pl

from energy_assets import published


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
