"""`reference_prices_planner`: the vendor's budget spent by value, a small batch at a time.

Every 15 s the sensor reads the live book from the capture buffer (`trades.book`: a deal just
made counts at once), the revisions we hold (`prices.parquet`, what DuckDB holds) and the
budget left (the shared budget file), asks `plan.plan_fetches` for the fetch list and requests
ONE run of `reference_prices_planned` for it: at most what it is sure to get now (of 50 a
minute; while open positions' prices are due it holds backfills off, so all 50),
and per 10-minute revision slot at most a sixth of the hour's 1,000, so every slot of the hour
has its share. The run fetches, stores and publishes the batch within seconds of the answers
and reports one materialisation per partition; its output metadata lists what it fetched and
why. One batch at a time: the next is planned once the previous one has stored, on what it
stored. A period whose newest revision we hold is not planned again until the next slot's
revision is certainly out (slot + 31 s); so at start-up the first tick plans the traded open
periods first, and after that each slot's revisions are fetched once, positions first.

The planner is given every open period of every market, each product (DE's hours and
quarter-hours, GB's half-hours), each closing at its market's gate closure, inside the one
account's budget; each is asked by its instants (`period_request`) and the run materialises
the partitions of `reference_prices/<market>` (local hours) whose periods it stored.
"""

from collections import Counter
from datetime import UTC, datetime

import dagster as dg
import polars as pl

from energy_assets import published
from energy_assets.markets import MARKETS, Invalid, Period, open_periods
from energy_assets.prices.assets import (
    PRIORITY_TAG,
    FetchedPrices,
    StoredPrices,
    fetch_periods,
    price_asset_key,
    store_reference_prices,
)
from energy_assets.prices.budget import FRESH, RequestBudget
from energy_assets.prices.client import MarketDataClient
from energy_assets.prices.partitions import period_partition_key
from energy_assets.prices.plan import (
    CLOSING,
    POSITION,
    BudgetLeft,
    PlannedFetch,
    grid_slot,
    period_key,
    plan_fetches,
    worth_a_run,
)
from energy_assets.tables import PRICE_KEY
from energy_assets.trades.book import Book, read_book
from energy_assets.trades.resources import CaptureBufferResource
from energy_assets.warehouse import DashboardResource

JOB_NAME = "reference_prices_planned"
#: Run tag: how many periods of each tier the batch fetches (`closing=2,position=31,...`).
PLAN_TAG = "energy/price_plan"
#: The vendor's revision slots in an hour: each may spend this share of the hour's budget.
SLOTS_PER_HOUR = 6
INTERVAL_S = 15


def held_revisions(prices: pl.DataFrame | None) -> dict:
    """`last_update` of the revision we hold, per period, from `prices.parquet`."""
    if prices is None or prices.is_empty():
        return {}
    return {
        (market, start, end): last_update
        for market, start, end, last_update in prices.select(*PRICE_KEY, "last_update").iter_rows()
    }


def budget_left(budget: RequestBudget | None, now: datetime, per_minute: int, per_hour: int):
    """What the planner is sure to get now, whatever a backfill takes meanwhile (a batch
    sized to more would wait for the backfill's minute to age out, and publish only then), and
    the hour's budget shared out per revision slot. A backfill held off for a minute or more
    (the planner's own positions hold it off, `next_batch`, or the coming bursts need the rest
    of the hour) takes nothing meanwhile: the batch may have the whole minute. The slot's
    share counts the planner's own requests: a backfill's come out of what the bursts leave
    (`budget.py`), never out of the positions' share."""
    if budget is None:
        return BudgetLeft(minute=per_minute, hour=per_hour // SLOTS_PER_HOUR)
    ts = now.timestamp()
    margin = budget.limits.margin_s
    in_hour = budget.sent_between(ts - budget.limits.hour_s - margin, ts)
    in_minute = sum(1 for t in in_hour if t > ts - budget.limits.minute_s - margin)
    in_slot = len(budget.sent_between(grid_slot(now).timestamp(), ts, FRESH))
    held = budget.bulk_held_for(ts) >= budget.limits.minute_s + margin
    bulk_may_add = 0 if held else max(0, budget.bulk_per_minute(ts) - in_minute)
    return BudgetLeft(
        minute=max(0, per_minute - in_minute - bulk_may_add),
        hour=min(per_hour - len(in_hour), per_hour // SLOTS_PER_HOUR - in_slot),
    )


def next_batch(
    now: datetime,
    book: Book,
    held: dict,
    budget: RequestBudget | None,
    per_minute: int,
    per_hour: int,
) -> tuple[list[PlannedFetch], BudgetLeft]:
    """The batch to fetch now and the budget it was sized to. While open positions' prices are
    due, bulk is held off for the next minute (renewed each tick): the batch may have the whole
    minute window, and a backfill takes what the positions leave (at a start, the recent
    prices' backfill took half of every minute and the catch-up went in batches of 25)."""
    left = budget_left(budget, now, per_minute, per_hour)
    wanted = plan_batch(now, book, held, BudgetLeft(minute=per_minute, hour=left.hour))
    if budget is not None and any(f.tier in (CLOSING, POSITION) for f in wanted):
        limits = budget.limits
        budget.hold_bulk(now.timestamp() + limits.minute_s + limits.margin_s + INTERVAL_S)
        left = budget_left(budget, now, per_minute, per_hour)
    return wanted[: left.now], left


def plan_batch(now: datetime, book: Book, held: dict, budget: BudgetLeft) -> list[PlannedFetch]:
    """The next batch: every open period of every market (each product), planned by value in
    one budget."""
    periods = []
    for market in MARKETS.values():
        for minutes in market.products_minutes:
            found = open_periods(market, now, minutes)
            periods += [] if isinstance(found, Invalid) else found
    return plan_fetches(
        periods,
        now=now,
        gate_closure=lambda period: period.gate_closure,
        open_mw=book.open_mw,
        traded=book.traded,
        held=held,
        budget=budget,
    )


class PlannedBatch(dg.Config):
    """The batch the planner chose: each period (market, ISO start and end), and why."""

    markets: list[str]
    starts: list[str]
    ends: list[str]
    reasons: list[str]

    def periods(self) -> list[Period]:
        return [
            Period(market, datetime.fromisoformat(start), datetime.fromisoformat(end))
            for market, start, end in zip(self.markets, self.starts, self.ends, strict=True)
        ]


def batch_run_request(plan: list[PlannedFetch], now: datetime) -> dg.RunRequest:
    keys = [period_key(fetch.period) for fetch in plan]
    batch = {
        "markets": [market for market, _, _ in keys],
        "starts": [start.isoformat() for _, start, _ in keys],
        "ends": [end.isoformat() for _, _, end in keys],
        "reasons": [f.reason(now) for f in plan],
    }
    tiers = Counter(f.tier for f in plan)
    return dg.RunRequest(
        run_key=f"prices-plan-{now.isoformat()}",
        # Once, for the fetch step; the report reads it there (the run's config is stored with
        # the run and the sensor's tick: twice, it was ~6 KB more of each a batch).
        run_config={"ops": {"fetch_planned_prices": {"config": batch}}},
        tags={PRIORITY_TAG: FRESH, PLAN_TAG: ",".join(f"{t}={n}" for t, n in tiers.items())},
    )


@dg.op(out=dg.Out(FetchedPrices))
def fetch_planned_prices(
    context: dg.OpExecutionContext, config: PlannedBatch, market_data: MarketDataClient
) -> FetchedPrices:
    """Fetch the planned periods at once, with the planner's (`fresh`) budget priority."""
    periods = config.periods()
    fetched = fetch_periods(market_data, periods, FRESH)
    context.log.info(
        f"fetched {len(fetched.prices)} of {len(periods)} planned periods with "
        f"{fetched.requests} requests"
    )
    return fetched


@dg.op(out=dg.Out(dg.Nothing))
def report_planned_prices(context: dg.OpExecutionContext, stored: StoredPrices):
    """One materialisation per partition touched, naming its periods and why each was fetched
    (`why`: period -> reason); the output's metadata lists the whole plan (the fetch step's
    config). Periods that failed fail the run, naming them."""
    config = PlannedBatch(**context.run_config["ops"]["fetch_planned_prices"]["config"])
    periods = config.periods()
    why = dict(zip(map(str, periods), config.reasons, strict=True))
    got = {str(p.period): p for p in stored.prices}
    # The partitions the batch touched: each market's local hours whose periods it stored,
    # none of them failed.
    touched: dict[tuple[str, str], list[str]] = {}
    for price in stored.prices:
        part = (price.period.market, period_partition_key(price.period))
        touched.setdefault(part, []).append(str(price.period))
    failed = set(stored.failed_partitions)
    for (market, key), names in touched.items():
        if key in failed:
            continue
        yield dg.AssetMaterialization(
            asset_key=price_asset_key(market),
            partition=key,
            metadata={"why": dg.MetadataValue.json({name: why.get(name, "") for name in names})},
        )
    rows = "\n".join(
        f"| {name} | {why[name]} | "
        + (
            f"{got[name].value:.2f} (revised {got[name].last_update:%H:%M:%S}Z)"
            if name in got
            else ""
        )
        + f" | {stored.errors.get(name, '')[:80]} |"
        for name in map(str, periods)
    )
    metadata = {
        **stored.metadata,
        "plan": dg.MetadataValue.md(
            "| period | why | stored | error |\n| --- | --- | --- | --- |\n" + rows
        ),
    }
    yield dg.Output(None, metadata=metadata)
    if stored.errors:
        failed = sorted(stored.errors)
        raise dg.Failure(
            description=f"{len(failed)} of {len(periods)} planned periods failed: "
            + ", ".join(failed[:20]),
            metadata={"failed_partitions": dg.MetadataValue.json(stored.failed_partitions)},
        )


@dg.job(
    name=JOB_NAME,
    executor_def=dg.in_process_executor,
    description="One batch of reference prices the planner chose: fetched, stored and "
    "published at once, one materialisation per hour it touched; the output lists why each was fetched.",
    tags={PRIORITY_TAG: FRESH},
)
def reference_prices_planned():
    report_planned_prices(store_reference_prices(fetch_planned_prices()))


@dg.sensor(
    name="reference_prices_planner",
    job=reference_prices_planned,
    minimum_interval_seconds=INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Plans the next batch of reference prices by value (open positions near gate "
    "closure first) from the live book, the revisions held and the vendor's budget left.",
)
def reference_prices_planner(
    context: dg.SensorEvaluationContext,
    market_data: MarketDataClient,
    capture: CaptureBufferResource,
    dashboard: DashboardResource,
):
    running = context.instance.get_run_records(
        dg.RunsFilter(
            job_name=JOB_NAME,
            statuses=[
                dg.DagsterRunStatus.QUEUED,
                dg.DagsterRunStatus.NOT_STARTED,
                dg.DagsterRunStatus.STARTING,
                dg.DagsterRunStatus.STARTED,
            ],
        ),
        limit=1,
    )
    if running:
        return dg.SkipReason(f"batch {running[0].dagster_run.run_id} is still running")
    now = datetime.now(UTC)
    book = read_book(capture.path, now)
    held = held_revisions(published.read(dashboard.directory, published.PRICES))
    plan, budget = next_batch(
        now,
        book,
        held,
        market_data.budget,
        market_data.requests_per_minute,
        market_data.requests_per_hour,
    )
    if not plan:
        return dg.SkipReason(
            f"nothing to fetch: {len(held)} periods held, {len(book.open_mw)} periods with open "
            f"positions, budget left {budget.minute}/min {budget.hour} this slot"
        )
    if not worth_a_run(plan, budget):
        return dg.SkipReason(
            f"{len(plan)} periods fit in the minute window now, none closing: waiting for a "
            "bigger batch"
        )
    return batch_run_request(plan, now)
