"""The warehouse lost after a realistic run and rebuilt from the journals: a real listener on
the playground (duplicates, malformed frames, reconnects), real drains with the capture
retention at 0, real price runs in a Dagster instance against a vendor on loopback (two
revisions and a refetch), the real exposure refresh, and `energy-assets rebuild` as the
operator runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from dagster_duckdb import DuckDBResource
from upath import UPath

from energy_assets.exposure.assets import trader_exposure
from energy_assets.journals.archive import compress, write_checked
from energy_assets.journals.deals import archive_capture
from energy_assets.journals.replay import view_at
from energy_assets.journals.resources import ArchiveResource
from energy_assets.operations.recent_prices import RANGE_END, RANGE_START
from energy_assets.playground.server import ExchangeOptions
from energy_assets.prices.assets import REFERENCE_PRICES_ASSETS
from energy_assets.prices.client import MarketDataClient
from energy_assets.trades.drain import drain
from energy_assets.warehouse import dashboard_resource
from tests.conftest import REPO
from tests.journals.conftest import fill_and_drain, run_check
from tests.prices.conftest import Answer, valid_period_price
from tests.trades.conftest import wait_until

# Seconds or more: Dagster runs and the rebuild command as a process.
pytestmark = pytest.mark.slow

START = datetime(2026, 11, 29, 0, 30, tzinfo=UTC)
#: Six local hours of each market: (first, last) partition (a whole day took 4x the time,
#: most of it Dagster recording a materialisation per partition, and showed nothing more).
RANGES = {
    "DE": ("2026-11-29-00:00+0100", "2026-11-29-05:00+0100"),
    "GB": ("2026-11-29-00:00+0000", "2026-11-29-05:00+0000"),
}
#: Their periods: DE's 6 hours and 24 quarter-hours, GB's 12 half-hours.
PERIODS = 6 + 24 + 12
#: The vendor's revisions: (last_update, value added to every hour's base).
REVISIONS = [
    ("2026-11-28T12:00:00+00:00", 0.0),
    ("2026-11-28T18:00:00+00:00", 7.25),
    ("2026-11-28T23:00:00+00:00", -3.5),
]
TABLES = {
    "raw_trades": "id",
    "feed_gaps": "source",
    "capture_segments": "segment",
    "reference_prices": "market, delivery_start, delivery_end",
    "reference_price_revisions": "market, delivery_start, delivery_end, last_update",
}


def snapshot(db: Path) -> dict[str, list]:
    with duckdb.connect(str(db), read_only=True) as conn:
        present = {
            row[0] for row in conn.execute("SELECT table_name FROM duckdb_tables()").fetchall()
        }
        tables = {}
        for name, order in TABLES.items():
            if name not in present:
                tables[name] = []
                continue
            columns = "* EXCLUDE (ingested_at)" if name == "capture_segments" else "*"
            tables[name] = conn.execute(
                f"SELECT {columns} FROM energy.{name} ORDER BY {order}"
            ).fetchall()
        return tables


def exposure(db: Path) -> list:
    with duckdb.connect(str(db), read_only=True) as conn:
        return conn.execute(
            "SELECT * FROM energy.trader_exposure ORDER BY trader_id, market, delivery_start, delivery_end"
        ).fetchall()


def assert_same_rows(rows: list[tuple], expected: list[tuple]) -> None:
    assert len(rows) == len(expected)
    for row, wanted in zip(rows, expected, strict=True):
        for value, want in zip(row, wanted, strict=True):
            if isinstance(want, float):
                assert value == pytest.approx(want, rel=1e-9, abs=1e-9), (row, wanted)
            else:
                assert value == want, (row, wanted)


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "energy_assets.cli", *args],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def refresh_exposure(db: Path) -> None:
    result = dg.materialize(
        [trader_exposure],
        instance=dg.DagsterInstance.get(),
        resources={"warehouse": DuckDBResource(database=str(db))},
    )
    assert result.success


def price_run(vendor_url: str, db: Path, archive: Path) -> None:
    for asset in REFERENCE_PRICES_ASSETS:
        first, last = RANGES[asset.key.path[-1]]
        result = dg.materialize(
            [asset],
            instance=dg.DagsterInstance.get(),
            resources={
                "warehouse": DuckDBResource(database=str(db)),
                "archive": ArchiveResource(url=str(archive), retention_days=2557),
                "market_data": MarketDataClient(base_url=vendor_url, budget_enabled=False),
                "dashboard": dashboard_resource(),
            },
            tags={RANGE_START: first, RANGE_END: last},
        )
        assert result.success


@pytest.fixture
def realistic_run(
    tmp_path, energy_env, dagster_home, start_playground, thread_listener, scripted_market_data
):
    """What the desk's platform holds after a morning: returns (env, moments)."""
    capture = Path(energy_env["ENERGY_CAPTURE_DIR"])
    db = Path(energy_env["ENERGY_DUCKDB_PATH"])
    archive = capture / "archive"
    pg = start_playground(
        exchange=ExchangeOptions(
            rate=0,
            seed=27,
            duplicate_rate=0.1,
            malformed_rate=0.1,
            close_every=300,
            max_deals=800,
            start_time=START,
        )
    )
    listener = thread_listener(pg.exchange_url, capture, seal_seconds=0.2)
    # Drains while the stream runs, each followed by the retention (0: the waiting area is
    # emptied at once, as in the issue): several bundles, nothing left outside the archive.
    with duckdb.connect(str(db)) as conn:
        while not pg.finished.is_set():
            drain(conn, capture, retention=timedelta(0))
            time.sleep(0.2)
        wait_until(lambda: listener.listener.counters.frames >= pg.frames_sent, message="frames")
        listener.stop()
        drain(conn, capture, retention=timedelta(0))
    assert not list((capture / "drained").iterdir())
    assert pg.duplicates_sent and pg.malformed_sent and listener.listener.counters.reconnects

    vendor = scripted_market_data()
    revision = {"n": 0}

    def answer(params: dict) -> Answer:
        last_update, shift = REVISIONS[revision["n"]]
        base = valid_period_price(params)["value"]
        return Answer(body=valid_period_price(params, value=base + shift, last_update=last_update))

    vendor.default = answer
    moments = {}
    price_run(vendor.url, db, archive)
    moments["after_first"] = datetime.now(UTC)
    revision["n"] = 1
    price_run(vendor.url, db, archive)
    price_run(vendor.url, db, archive)  # the same revision fetched again
    revision["n"] = 2
    price_run(vendor.url, db, archive)
    refresh_exposure(db)
    return energy_env, moments


def test_a_lost_warehouse_is_rebuilt_from_the_journals(realistic_run):
    env, moments = realistic_run
    db = Path(env["ENERGY_DUCKDB_PATH"])
    before, exposure_before = snapshot(db), exposure(db)
    with duckdb.connect(str(db), read_only=True) as conn:
        refreshed = dict(
            conn.execute("SELECT trader_id, pnl FROM energy.trader_pnl_history").fetchall()
        )
    assert len(before["raw_trades"]) == 800
    assert len(before["reference_price_revisions"]) == PERIODS * 3
    integrity = run_check(db, Path(env["ENERGY_CAPTURE_DIR"]) / "archive")
    assert integrity.passed and f"| 0 of {PERIODS * 3} |" in integrity.metadata["days"].value
    db.unlink()
    Path(str(db) + ".wal").unlink(missing_ok=True)

    done = cli("rebuild", env=env)
    assert done.returncode == 0, done.stderr
    assert "800 deals" in done.stdout
    assert f"{PERIODS} period prices with {PERIODS * 3:,} revisions" in done.stdout
    assert snapshot(db) == before
    refresh_exposure(db)
    # The same rows; sums of floats may differ in their last bits (DuckDB adds in parallel).
    assert_same_rows(exposure(db), exposure_before)

    # Replay: between the first and the second revision the desk saw the first one.
    at = moments["after_first"]
    view = view_at(at, Path(env["ENERGY_CAPTURE_DIR"]) / "archive")
    seen = {
        (market, start, end): value
        for market, start, end, value in view.prices.select(
            "market", "delivery_start", "delivery_end", "reference_price"
        ).iter_rows()
    }
    expected = {
        (market, start.astimezone(UTC), end.astimezone(UTC)): value
        for market, start, end, value, _, last_update, _ in before["reference_price_revisions"]
        if last_update == datetime.fromisoformat(REVISIONS[0][0])
    }
    assert seen == expected and len(seen) == PERIODS
    assert view.deals == 800
    # The PnL the one refresh (after every price run) recorded in trader_pnl_history, replayed
    # from the journals at an instant after it.
    totals = view_at(datetime.now(UTC), Path(env["ENERGY_CAPTURE_DIR"]) / "archive").totals()
    assert dict(zip(totals["trader_id"], totals["pnl"], strict=True)) == pytest.approx(refreshed)
    shown = cli("replay", "--at", at.isoformat(), "--trader", "flex_trader_1", env=env)
    assert shown.returncode == 0, shown.stderr
    assert f"800 deals received, {PERIODS} delivery periods priced" in shown.stdout
    # Read by a reader that stops before the end (`| head`): no traceback, status 1.
    piped = subprocess.Popen(
        [sys.executable, "-m", "energy_assets.cli", "replay", "--at", at.isoformat()],
        cwd=REPO,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    piped.stdout.close()
    said = piped.stderr.read().decode()
    assert piped.wait(timeout=60) == 1 and said == ""


def test_a_corrupted_archive_file_is_named_and_the_warehouse_kept(tmp_path, energy_env):
    capture, db = Path(energy_env["ENERGY_CAPTURE_DIR"]), Path(energy_env["ENERGY_DUCKDB_PATH"])
    fill_and_drain(capture, db, deals=2_000, drains=3)
    before = snapshot(db)
    bundles = sorted((capture / "archive" / "deals").glob("*/*.tar.zst"))
    assert len(bundles) == 3
    damaged = bundles[1]
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))

    done = cli("rebuild", env=energy_env)
    assert done.returncode == 2
    assert str(damaged) in done.stderr and "does not match its checksum" in done.stderr
    assert snapshot(db) == before
    assert not list(db.parent.glob("*.rebuild-*"))


def test_a_rebuild_killed_half_way_leaves_the_old_warehouse(tmp_path, energy_env):
    capture, db = Path(energy_env["ENERGY_CAPTURE_DIR"]), Path(energy_env["ENERGY_DUCKDB_PATH"])
    fill_and_drain(capture, db, deals=50_000, drains=10)
    before = snapshot(db)
    proc = subprocess.Popen(
        [sys.executable, "-m", "energy_assets.cli", "rebuild"],
        cwd=REPO,
        env={**os.environ, **energy_env},
        stdout=subprocess.PIPE,
        text=True,
    )
    # Killed once it has started writing the new file, long before it could be complete.
    wait_until(lambda: any(db.parent.glob("*.rebuild-*.duckdb")), message="the new file")
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL  # killed, not finished
    assert snapshot(db) == before
    # The next rebuild clears what the killed one left and completes.
    done = cli("rebuild", env=energy_env)
    assert done.returncode == 0, done.stderr
    assert snapshot(db) == before
    assert not list(db.parent.glob("*.rebuild-*"))


def test_a_rebuild_that_would_lose_rows_is_refused(tmp_path, energy_env):
    capture, db = Path(energy_env["ENERGY_CAPTURE_DIR"]), Path(energy_env["ENERGY_DUCKDB_PATH"])
    wrong = cli("rebuild", "--archive", str(tmp_path / "nowhere"), env=energy_env)
    assert wrong.returncode == 2 and "no journal in" in wrong.stderr
    fill_and_drain(capture, db, deals=1_000, drains=2)
    before = snapshot(db)
    # Deals drained before the archive existed: here, a bundle gone from the archive.
    lost = sorted((capture / "archive" / "deals").glob("*/*.tar.zst"))[0]
    lost.unlink()
    Path(str(lost) + ".json").unlink()

    refused = cli("rebuild", env=energy_env)
    assert refused.returncode == 2
    assert "fewer rows than the warehouse holds (raw_trades:" in refused.stderr
    assert snapshot(db) == before
    forced = cli("rebuild", "--allow-fewer", env=energy_env)
    assert forced.returncode == 0, forced.stderr
    assert 0 < len(snapshot(db)["raw_trades"]) < len(before["raw_trades"])


def test_a_rebuild_refuses_while_another_process_writes_or_the_file_is_damaged(
    tmp_path, energy_env
):
    capture, db = Path(energy_env["ENERGY_CAPTURE_DIR"]), Path(energy_env["ENERGY_DUCKDB_PATH"])
    fill_and_drain(capture, db, deals=200, drains=1)
    with duckdb.connect(str(db)):  # as a Dagster step holds it
        refused = cli("rebuild", env=energy_env)
    assert refused.returncode == 2
    assert f"{db} is open in another process" in refused.stderr
    assert not list(db.parent.glob("*.rebuild-*"))
    assert cli("rebuild", env=energy_env).returncode == 0

    db.write_bytes(b"not a DuckDB file, a bad migration's leftovers" * 100)
    damaged = cli("rebuild", env=energy_env)
    assert damaged.returncode == 2 and f"{db} cannot be opened" in damaged.stderr
    db.rename(db.with_name("damaged.duckdb"))
    assert cli("rebuild", env=energy_env).returncode == 0


def test_a_warehouse_from_before_markets_comes_to_the_new_schema_by_rebuild(tmp_path, energy_env):
    """The journals of a `main` from before markets hold the contract's first form only; its
    warehouse has no market or instants. The drain refuses that table and says to rebuild; the
    rebuild reads every old line as Berlin's hour, and leaves out (counted, with --allow-fewer)
    the one the fall-back night makes ambiguous, which the old warehouse had booked as UTC."""
    capture, db = Path(energy_env["ENERGY_CAPTURE_DIR"]), Path(energy_env["ENERGY_DUCKDB_PATH"])
    old = [
        ("a" * 32, "2026-10-24", "12-13"),  # 10:00-11:00 UTC in Berlin's summer time
        ("b" * 32, "2026-10-25", "03-04"),  # 02:00-03:00 UTC, after the clocks went back
        ("c" * 32, "2026-10-25", "02-03"),  # happens twice in Berlin: cannot be booked
    ]
    received = "2026-10-24T06:00:00.000000+00:00"
    lines = [
        {
            "id": deal_id,
            "price": 40.0,
            "quantity": 2.0,
            "direction": "buy",
            "delivery_day": day,
            "delivery_hour": label,
            "trader_id": "flex_trader_1",
            "execution_time": received,
            "received_at": received,
        }
        for deal_id, day, label in old
    ]
    segment = tmp_path / "old" / "20261024T060000000000Z-1-0.jsonl"
    segment.parent.mkdir()
    segment.write_text("".join(json.dumps(line) + "\n" for line in lines))
    archive_capture([segment], capture / "archive")
    # The prices' journal of that main: the hourly form's answers, by day and label.
    answers = [
        {
            "delivery_day": day,
            "delivery_hour": label,
            "value": value,
            "unit": "euro/mwh",
            "last_update": "2026-10-24T05:50:00.000000+00:00",
            "fetched_at": "2026-10-24T05:55:00.000000+00:00",
        }
        for day, label, value in [
            ("2026-10-24", "12-13", 41.5),
            ("2026-10-25", "03-04", 43.5),
            ("2026-10-25", "02-03", 99.0),  # which 02-03? left out, never guessed
        ]
    ]
    journal = capture / "archive" / "prices" / "2026-10-24" / "20261024T055500000000Z-1-r.jsonl.zst"
    write_checked(
        UPath(journal),
        compress("".join(json.dumps(a) + "\n" for a in answers).encode()),
        {"answers": len(answers)},
    )
    with duckdb.connect(str(db)) as conn:
        conn.execute("CREATE SCHEMA energy")
        conn.execute(
            "CREATE TABLE energy.raw_trades (id VARCHAR, price DOUBLE, quantity DOUBLE, "
            "direction VARCHAR, delivery_day DATE, delivery_hour VARCHAR, trader_id VARCHAR, "
            "execution_time TIMESTAMPTZ, received_at TIMESTAMPTZ, segment VARCHAR)"
        )
        for line in lines:
            conn.execute(
                "INSERT INTO energy.raw_trades VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [*list(line.values()), segment.name],
            )
        with pytest.raises(Exception, match="run `energy-assets rebuild`"):
            drain(conn, capture)

    refused = cli("rebuild", env=energy_env)
    assert refused.returncode == 2 and "raw_trades: 2 < 3" in refused.stderr
    done = cli("rebuild", "--allow-fewer", env=energy_env)
    assert done.returncode == 0, done.stderr
    assert "1 unbookable" in done.stdout
    with duckdb.connect(str(db), read_only=True) as conn:
        rows = conn.execute(
            "SELECT id, market, delivery_start, delivery_end, delivery_day, delivery_hour "
            "FROM energy.raw_trades ORDER BY id"
        ).fetchall()
        prices = conn.execute(
            "SELECT market, delivery_start, delivery_end, value, currency "
            "FROM energy.reference_prices ORDER BY ALL"
        ).fetchall()
    assert [(r[0][0], r[1], r[2].astimezone(UTC), r[3].astimezone(UTC)) for r in rows] == [
        ("a", "DE", datetime(2026, 10, 24, 10, tzinfo=UTC), datetime(2026, 10, 24, 11, tzinfo=UTC)),
        ("b", "DE", datetime(2026, 10, 25, 2, tzinfo=UTC), datetime(2026, 10, 25, 3, tzinfo=UTC)),
    ]
    # The old answers are Berlin's hours too, each marking exactly its own period.
    assert [(m, a.astimezone(UTC), b.astimezone(UTC), v, c) for m, a, b, v, c in prices] == [
        (
            "DE",
            datetime(2026, 10, 24, 10, tzinfo=UTC),
            datetime(2026, 10, 24, 11, tzinfo=UTC),
            41.5,
            "EUR",
        ),
        (
            "DE",
            datetime(2026, 10, 25, 2, tzinfo=UTC),
            datetime(2026, 10, 25, 3, tzinfo=UTC),
            43.5,
            "EUR",
        ),
    ]
    # The drain works on the rebuilt warehouse.
    with duckdb.connect(str(db)) as conn:
        assert drain(conn, capture).total_rows == 2
