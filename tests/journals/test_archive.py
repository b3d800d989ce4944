"""The deals' journal on disk: where it lives, how a finished day is compacted, and that the
waiting area's retention never touches it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
from upath import UPath

from energy_assets.journals.archive import decompress, read_checked
from energy_assets.journals.deals import archive_capture, compact, read_days
from energy_assets.journals.rebuild import rebuild
from energy_assets.trades.buffer import CaptureBuffer
from energy_assets.trades.drain import drain
from tests.journals.conftest import fill_and_drain
from tests.trades.conftest import make_deals


def segment(folder: Path, moment: datetime, n: int, deals) -> Path:
    path = folder / f"{moment:%Y%m%dT%H%M%S%fZ}-1-{n:09d}.jsonl"
    lines = [
        json.dumps({**deal.to_dict(), "received_at": moment.isoformat()}) + "\n" for deal in deals
    ]
    path.write_text("".join(lines))
    return path


def test_a_finished_day_is_compacted_into_one_bundle_holding_every_file(tmp_path):
    root = tmp_path / "archive"
    yesterday = datetime.now(UTC).replace(hour=10) - timedelta(days=1)
    deals = make_deals(30, seed=2)
    for n in range(3):
        path = segment(tmp_path, yesterday + timedelta(minutes=n), n, deals[n * 10 : n * 10 + 10])
        archive_capture([path], root)
    folder = root / "deals" / yesterday.date().isoformat()
    assert len(list(folder.glob("*.tar.zst"))) == 3
    before = list(read_days(root))

    merged = compact(root, yesterday.date())
    assert [p.name for p in folder.glob("*.tar.zst")] == [merged.name]
    assert sorted(p.name for p in folder.iterdir()) == [merged.name, merged.name + ".json"]
    (day,) = read_days(root)
    assert [s[:2] for s in day.segments] == [s[:2] for s in before[0].segments]
    assert sum(len(cut) for _, cut, _ in day.segments) > 0 and len(day.segments) == 3
    assert compact(root, yesterday.date()) is None


def test_the_archive_moves_with_its_url_and_outlives_the_retention(tmp_path):
    capture, db = tmp_path / "capture", tmp_path / "warehouse.duckdb"
    elsewhere = tmp_path / "other-disk" / "journals"
    fill_and_drain(capture, db, deals=500, drains=2, archive_url=f"file://{elsewhere}")
    assert not (capture / "archive").exists()
    assert len(list((elsewhere / "deals").glob("*/*.tar.zst"))) == 2
    assert not list((capture / "drained").iterdir())  # the waiting area, emptied at 0 h
    with duckdb.connect(str(db)) as conn:
        drain(conn, capture, retention=timedelta(0), archive_url=f"file://{elsewhere}")
        stored = conn.execute("SELECT count(*) FROM energy.raw_trades").fetchone()[0]
    db.unlink()
    result = rebuild(db, f"file://{elsewhere}", progress=lambda line: None)
    assert result.deals == stored == 500


def test_quarantined_frames_are_archived_once_even_when_the_retention_deletes_them(tmp_path):
    capture, db = tmp_path / "capture", tmp_path / "warehouse.duckdb"
    buffer = CaptureBuffer(capture)
    sent = []
    with duckdb.connect(str(db)) as conn:
        for round_ in range(3):
            for n in range(4):
                raw = f'{{"not a deal": {round_}{n}}}'
                buffer.quarantine(raw, "missing field id", datetime.now(UTC))
                sent.append(raw)
            buffer.append(make_deals(1, seed=round_)[0], datetime.now(UTC))
            buffer.seal()
            # Retention 0 deletes the quarantine file after each drain: the listener starts
            # a new one, which must be archived from its first line.
            drain(conn, capture, retention=timedelta(0))
            drain(conn, capture, retention=timedelta(0))  # nothing new: nothing archived
    chunks = sorted((capture / "archive" / "quarantine").glob("*/*.jsonl.zst"))
    assert len(chunks) == 3
    archived = [
        json.loads(text)["raw"]
        for chunk in chunks
        for text in decompress(read_checked(UPath(chunk))[0]).decode().splitlines()
    ]
    assert archived == sent
