"""End to end through the real Dagster daemon, on both instances (SQLite and PostgreSQL).

A playground on free ports, the listener and `dagster-daemon run` as subprocesses. Nobody
launches a run: the trade sensor drains the capture buffer, `recent_prices_sensor` fetches the
prices of the recent hours and the automation sensor refreshes the exposure. The test then checks the warehouse against the
deals the playground sent and against an exposure computed here, in plain Python.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from datetime import date, datetime
from pathlib import Path

import dagster as dg
import pytest
from dagster import DagsterInstance

from energy_assets import published
from energy_assets.markets import MARKETS
from energy_assets.playground.server import ExchangeOptions
from energy_assets.prices.assets import price_asset_key
from energy_assets.tables import PRICE_KEY
from energy_assets.warehouse import connect
from tests.conftest import REPO, stop_process_group

#: Runs not finished yet (queued ones included).
IN_PROGRESS_RUN_STATUSES = [
    status
    for status in dg.DagsterRunStatus
    if status
    not in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
]

# Seconds or more: the real daemon, listener and playground as processes.
pytestmark = pytest.mark.slow

DEALS = 60

#: Whole pipeline, from the first deal to the exposure that includes the last one.
DEADLINE_S = 230


def _daemon_argv() -> list[str]:
    return [
        str(Path(sys.executable).parent / "dagster-daemon"),
        "run",
        "-w",
        str(REPO / "workspace.yaml"),
    ]


def _latest(instance: DagsterInstance, key: str | dg.AssetKey):
    records = instance.fetch_materializations(dg.AssetKey.from_coercible(key), limit=1).records
    return records[0] if records else None


def _latest_price(instance: DagsterInstance):
    """The newest materialisation of any market's prices."""
    found = [_latest(instance, price_asset_key(code)) for code in MARKETS]
    return max((r for r in found if r), key=lambda r: r.storage_id, default=None)


def _in_flight(instance: DagsterInstance) -> list[str]:
    return [
        f"{run.job_name}:{run.status.value}"
        for run in instance.get_runs(dg.RunsFilter(statuses=IN_PROGRESS_RUN_STATUSES))
    ]


def _wait(what: str, predicate, deadline: float, status) -> None:
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(1.0)
    raise AssertionError(f"timed out waiting for {what}; {status()}")


def independent_exposure(trades, prices) -> dict[tuple, dict]:
    """Per (trader, market, delivery start, delivery end), straight from the contract's
    definitions: a deal is MW over its period (MWh = MW × hours), marked with the price of
    exactly its period (`prices` by market, start and end)."""
    groups: dict[tuple, dict] = defaultdict(
        lambda: {"trades": 0, "bought": 0.0, "sold": 0.0, "paid": 0.0, "received": 0.0}
    )
    for trader, market, start, end, direction, price, quantity in trades:
        g = groups[(trader, market, start, end)]
        hours = (end - start).total_seconds() / 3600
        g["trades"] += 1
        if direction == "buy":
            g["bought"] += quantity * hours
            g["paid"] += quantity * hours * price
        else:
            g["sold"] += quantity * hours
            g["received"] += quantity * hours * price
    out = {}
    for (trader, market, start, end), g in groups.items():
        net = g["bought"] - g["sold"]
        cash = g["received"] - g["paid"]
        reference = prices.get((market, start, end))
        out[(trader, market, start, end)] = {
            "trades": g["trades"],
            "bought_mwh": g["bought"],
            "sold_mwh": g["sold"],
            "net_mwh": net,
            "buy_vwap": g["paid"] / g["bought"] if g["bought"] else None,
            "sell_vwap": g["received"] / g["sold"] if g["sold"] else None,
            "cash": cash,
            "reference_price": reference,
            "pnl": None if reference is None else cash + net * reference,
            "exposure": None if reference is None else net * reference,
        }
    return out


def _close(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)


# The production-shaped instance (PostgreSQL) only: the demo's SQLite instance runs the same
# daemon, sensors and runs in test_demo.py, trades/test_daemon.py, prices/test_planner_daemon.py
# and test_pool_slots.py, and both instance files keep the same settings (test_instance.py).
@pytest.mark.parametrize("instance_home", ["postgres"], indirect=True)
@pytest.mark.timeout(300)
def test_trades_prices_and_exposure_arrive_untouched_through_the_daemon(
    instance_home, energy_env, start_playground, tmp_path: Path
):
    kind, home, instance_env = instance_home
    playground = start_playground(
        exchange=ExchangeOptions(
            rate=20, traders=3, seed=11, max_deals=DEALS, duplicate_rate=0.1, malformed_rate=0.05
        )
    )
    env = {
        **os.environ,
        **energy_env,
        **instance_env,
        "ENERGY_EXCHANGE_URL": playground.exchange_url,
        "ENERGY_MARKET_DATA_URL": playground.market_data_url,
        "PYTHONUNBUFFERED": "1",
    }
    env["ENERGY_PRICES_BACKFILL_DAYS"] = "0"
    # The exposure after the last price within 10 s instead of the demo's minute: the test's
    # time, not the race (tests/exposure/test_assets.py drives that tick by tick).
    env["ENERGY_EXPOSURE_AUTOMATION_SECONDS"] = "10"
    logs = tmp_path / "logs"
    logs.mkdir()

    def start(name: str, argv: list[str]) -> subprocess.Popen:
        with open(logs / f"{name}.log", "w") as out:
            return subprocess.Popen(
                argv,
                env=env,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    listener = start("listener", [sys.executable, "-m", "energy_assets.cli", "listen"])
    daemon = start("daemon", _daemon_argv())
    began = time.monotonic()
    deadline = began + DEADLINE_S
    try:
        _wait("every deal sent", lambda: len(playground.sent_deals) == DEALS, deadline, lambda: "")
        sent = {deal.id: deal for deal in playground.sent_deals}
        traded = {
            (d.period.market, d.period.delivery_start, d.period.delivery_end) for d in sent.values()
        }

        #: When every traded period's price was published (epoch s), once it was.
        priced_at: list[float] = []

        def missing_prices() -> set:
            """Traded periods without a published price (what the desk reads, after DuckDB's
            commit). Not the partitions: the planner materialises a local hour as soon as it
            stored any of its periods, so one GB half-hour of an hour may still be missing."""
            directory = energy_env["ENERGY_DASHBOARD_DIR"]
            published_prices = published.read(directory, published.PRICES)
            # Read, then the file's time: what was read was written at or before it.
            changed = published.changed_at(directory, published.PRICES)
            held = (
                set()
                if published_prices is None
                else set(published_prices.select(*PRICE_KEY).iter_rows())
            )
            if not traded - held and not priced_at:
                priced_at.append(changed / 1e9)
            return traded - held

        with DagsterInstance.get() as instance:

            def status() -> str:
                trades = _latest(instance, "raw_trades")
                return (
                    f"raw_trades total_rows="
                    f"{trades.asset_materialization.metadata['total_rows'].value if trades else None}, "
                    f"traded periods without a price={len(missing_prices())}, "
                    f"exposure={_latest(instance, 'trader_exposure') is not None}, "
                    f"in flight={_in_flight(instance)}, logs in {logs}"
                )

            def all_trades_drained() -> bool:
                latest = _latest(instance, "raw_trades")
                return latest is not None and (
                    latest.asset_materialization.metadata["total_rows"].value == DEALS
                )

            def prices_stored() -> bool:
                return not missing_prices()

            def exposure_caught_up() -> bool:
                """An exposure run started after the last deal was drained and every traded
                period's price published, so it read them all. Not "no run in flight": the
                planner keeps fetching the untraded open periods (hundreds) 50 at a time,
                and on a busy machine that moment may not come; a price stored after this
                exposure is allowed for below."""
                exposure = _latest(instance, "trader_exposure")
                if exposure is None or not priced_at:
                    return False
                (run,) = instance.get_run_records(dg.RunsFilter(run_ids=[exposure.run_id]))
                drained = _latest(instance, "raw_trades").timestamp
                return (run.start_time or 0) > max(priced_at[0], drained)

            _wait("the drain of every deal", all_trades_drained, deadline, status)
            trades_at = time.monotonic() - began
            _wait("the prices of every traded period", prices_stored, deadline, status)
            _wait(
                "an exposure refresh after the last trades and prices",
                exposure_caught_up,
                deadline,
                status,
            )
            elapsed = time.monotonic() - began
            run_count = len(instance.get_runs())
            origin = time.time() - (time.monotonic() - began)
            for record in reversed(instance.get_run_records()):
                run = record.dagster_run
                print(
                    f"  {run.job_name:<45} {run.status.value:<8} created +{record.create_timestamp.timestamp() - origin:5.1f}s "
                    f"start +{(record.start_time or 0) - origin:5.1f}s end +{(record.end_time or 0) - origin:5.1f}s "
                    f"{run.tags.get('dagster/backfill', '')}"
                )
    finally:
        # As the demo stops them: the listener first (it seals its segment), then Dagster.
        for process, stop in ((listener, signal.SIGTERM), (daemon, signal.SIGINT)):
            stop_process_group(process, timeout=60, stop=stop)
    with DagsterInstance.get() as instance:
        # No deal stored after the exposure we compare against; prices may have been (the
        # planner's later batches), and then the exposure was marked with an earlier revision.
        exposure = _latest(instance, "trader_exposure")
        assert _latest(instance, "raw_trades").storage_id < exposure.storage_id
        prices_after = _latest_price(instance).storage_id > exposure.storage_id
    assert listener.returncode == 0, (logs / "listener.log").read_text()
    print(
        f"{kind}: trades drained after {trades_at:.1f}s, exposure after {elapsed:.1f}s, {run_count} runs"
    )

    # The daemon is down: the warehouse is ours to read.
    with connect(energy_env["ENERGY_DUCKDB_PATH"], read_only=True) as conn:
        rows = conn.execute(
            "SELECT id, price, quantity, direction, delivery_day, delivery_hour, trader_id, "
            "execution_time, market, delivery_start, delivery_end FROM energy.raw_trades"
        ).fetchall()
        prices = {
            (market, start, end): value
            for market, start, end, value in conn.execute(
                "SELECT market, delivery_start, delivery_end, value FROM energy.reference_prices"
            ).fetchall()
        }
        revisions = defaultdict(set)
        for market, start, end, value in conn.execute(
            "SELECT market, delivery_start, delivery_end, value "
            "FROM energy.reference_price_revisions"
        ).fetchall():
            revisions[(market, start, end)].add(value)
        exposure_rows = conn.execute(
            "SELECT trader_id, market, delivery_start, delivery_end, trades, bought_mwh, sold_mwh, net_mwh, "
            "buy_vwap, sell_vwap, cash, reference_price, pnl, exposure "
            "FROM energy.trader_exposure"
        ).fetchall()

    # Every good deal sent, exactly once, every field as sent.
    assert sorted(row[0] for row in rows) == sorted(sent)
    for deal_id, price, quantity, direction, day, hour, trader, executed, *_ in rows:
        deal = sent[deal_id]
        assert (price, quantity, direction, trader, hour) == (
            deal.price,
            deal.quantity,
            deal.direction,
            deal.trader_id,
            deal.delivery_hour,
        )
        assert day == date.fromisoformat(deal.delivery_day)
        assert executed == datetime.fromisoformat(deal.execution_time.replace("Z", "+00:00"))

    # Every traded period has its own reference price: DE hours and quarter-hours, GB
    # half-hours.
    for deal in sent.values():
        period = deal.period
        assert (period.market, period.delivery_start, period.delivery_end) in prices, period

    columns = (
        "trades bought_mwh sold_mwh net_mwh buy_vwap sell_vwap cash reference_price pnl exposure"
    ).split()
    got = {tuple(r[:4]): dict(zip(columns, r[4:], strict=True)) for r in exposure_rows}
    if prices_after:
        # The price each period was marked with: one stored revision of exactly that period,
        # the same for every trader.
        marked: dict[tuple, float] = {}
        for (_, *period), figures in got.items():
            value = figures["reference_price"]
            assert value in revisions[tuple(period)], (period, value)
            assert marked.setdefault(tuple(period), value) == value, period
        prices = marked
    expected = independent_exposure([(r[6], *r[8:11], r[3], r[1], r[2]) for r in rows], prices)
    assert got.keys() == expected.keys()
    for key, figures in expected.items():
        for column, value in figures.items():
            assert _close(got[key][column], value), (key, column, got[key][column], value)
    # Every period is priced, each with exactly its own price (never its hour's).
    assert expected and all(f["reference_price"] is not None for f in expected.values())
