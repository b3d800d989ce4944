"""`reference_prices_planner`: the vendor's budget spent by value, a small batch at a time.

Every 15 s the sensor reads the live book from the capture buffer (`trades.book`: a deal just
made counts at once), the revisions we hold (`prices.parquet`, what DuckDB holds) and the
budget left (the shared budget file), asks `plan.plan_fetches` for the fetch list and requests
ONE run of `reference_prices_planned` for it: at most what the vendor allows now (50 a minute),
and per 10-minute revision slot at most a sixth of the hour's 1,000, so every slot of the hour
has its share. The run fetches, stores and publishes the batch within seconds of the answers
and reports one materialisation per partition; its output metadata lists what it fetched and
why. One batch at a time: the next is planned once the previous one has stored, on what it
stored. A period whose newest revision we hold is not planned again until the next slot's
revision is certainly out (slot + 31 s); so at start-up the first tick plans the traded open
periods first, and after that each slot's revisions are fetched once, positions first.

The table holds the default market's hours (`reference_prices` partitions, whose day and
label the vendor is asked in the contract's hourly form: Berlin's local hours); the planner is
given those periods, each closing at its market's gate closure (5 minutes before delivery).
"""

from collections import Counter
from datetime import UTC, datetime

import dagster as dg
import polars as pl

from energy_assets import published
from energy_assets.markets import DEFAULT_MARKET, MARKETS, Period, hour_period
from energy_assets.prices.assets import (
    ASSET_KEY,
    PRIORITY_TAG,
    FetchedPrices,
    StoredPrices,
    store_reference_prices,
)
from energy_assets.prices.budget import FRESH, RequestBudget
from energy_assets.prices.client import MarketDataClient
from energy_assets.prices.partitions import (
    delivery_to_partition_key,
    open_hours,
    partition_key_to_delivery,
)
from energy_assets.prices.plan import BudgetLeft, PlannedFetch, grid_slot, period_key, plan_fetches
from energy_assets.settings import settings
from energy_assets.trades.book import Book, read_book

JOB_NAME = "reference_prices_planned"
#: Run tag: how many periods of each tier the batch fetches (`closing=2,position=31,...`).
PLAN_TAG = "energy/price_plan"
#: The vendor's revision slots in an hour: each may spend this share of the hour's budget.
SLOTS_PER_HOUR = 6
INTERVAL_S = 15


def key_period(key: str) -> Period | None:
    """The period a `reference_prices` partition key names: its day and `HH-HH` label, asked
    of the vendor in the contract's hourly form, are the default market's local hour (the
    trades book them so). None for the label Berlin skips or repeats on a DST night."""
    period = hour_period(DEFAULT_MARKET, *partition_key_to_delivery(key))
    return period if isinstance(period, Period) else None


def period_key_of(period: Period) -> str:
    """The `reference_prices` partition key of a default-market hour: its local day and hour."""
    return delivery_to_partition_key(period.local_day, period.label)


def held_revisions(prices: pl.DataFrame | None) -> dict:
    """`last_update` of the revision we hold, per period, from `prices.parquet`."""
    if prices is None or prices.is_empty():
        return {}
    held = {}
    for day, label, last_update in prices.select(
        "delivery_day", "delivery_hour", "last_update"
    ).iter_rows():
        period = hour_period(DEFAULT_MARKET, day, label)
        if isinstance(period, Period):
            held[period_key(period)] = last_update
    return held


def budget_left(budget: RequestBudget | None, now: datetime, per_minute: int, per_hour: int):
    """What the vendor allows now, the hour's budget shared out per revision slot."""
    if budget is None:
        return BudgetLeft(minute=per_minute, hour=per_hour // SLOTS_PER_HOUR)
    ts = now.timestamp()
    margin = budget.limits.margin_s
    in_hour = budget.sent_between(ts - budget.limits.hour_s - margin, ts)
    in_minute = sum(1 for t in in_hour if t > ts - budget.limits.minute_s - margin)
    in_slot = sum(1 for t in in_hour if t >= grid_slot(now).timestamp())
    return BudgetLeft(
        minute=per_minute - in_minute,
        hour=min(per_hour - len(in_hour), per_hour // SLOTS_PER_HOUR - in_slot),
    )


def plan_batch(now: datetime, book: Book, held: dict, budget: BudgetLeft) -> list[PlannedFetch]:
    """The next batch: the default market's open hours, planned by value."""
    market = MARKETS[DEFAULT_MARKET]
    periods = [key_period(key) for key in open_hours(now)]
    return plan_fetches(
        [period for period in periods if period is not None],
        now=now,
        gate_closure=lambda period: market.gate_closure(period.delivery_start),
        open_mw=book.open_mw,
        traded=book.traded,
        held=held,
        budget=budget,
    )


class PlannedBatch(dg.Config):
    """The batch the planner chose: partition keys, and why each one."""

    keys: list[str]
    reasons: list[str]


def batch_run_request(plan: list[PlannedFetch], now: datetime) -> dg.RunRequest:
    keys = [period_key_of(fetch.period) for fetch in plan]
    batch = {"keys": keys, "reasons": [f.reason(now) for f in plan]}
    tiers = Counter(f.tier for f in plan)
    return dg.RunRequest(
        run_key=f"prices-plan-{now.isoformat()}",
        run_config={
            "ops": {
                "fetch_planned_prices": {"config": batch},
                "report_planned_prices": {"config": batch},
            }
        },
        tags={PRIORITY_TAG: FRESH, PLAN_TAG: ",".join(f"{t}={n}" for t, n in tiers.items())},
    )


@dg.op(out=dg.Out(FetchedPrices))
def fetch_planned_prices(
    context: dg.OpExecutionContext, config: PlannedBatch, market_data: MarketDataClient
) -> FetchedPrices:
    """Fetch the planned periods at once, with the schedule's (`fresh`) budget priority."""
    report = market_data.fetch_many(
        [(key, *partition_key_to_delivery(key)) for key in config.keys], priority=FRESH
    )
    context.log.info(
        f"fetched {len(report.prices)} of {len(config.keys)} planned hours with "
        f"{report.requests} requests"
    )
    return FetchedPrices(
        prices=[report.prices[key] for key in config.keys if key in report.prices],
        errors={key: str(error) for key, error in report.errors.items()},
        requests=report.requests,
        retries=report.retries,
        budget_wait_s=report.budget_wait_s,
    )


@dg.op(out=dg.Out(dg.Nothing))
def report_planned_prices(
    context: dg.OpExecutionContext, config: PlannedBatch, stored: StoredPrices
):
    """One materialisation per stored partition, each saying why it was fetched; the output's
    metadata lists the whole plan. Hours that failed fail the run, naming them."""
    why = dict(zip(config.keys, config.reasons, strict=True))
    got = {delivery_to_partition_key(p.delivery_day, p.delivery_hour): p for p in stored.prices}
    for key, price in got.items():
        yield dg.AssetMaterialization(
            asset_key=ASSET_KEY,
            partition=key,
            metadata={
                "value": price.value,
                "unit": price.unit,
                "last_update": price.last_update.isoformat(),
                "why": why.get(key, ""),
            },
        )
    rows = "\n".join(
        f"| {key} | {why[key]} | "
        + (f"{got[key].value:.2f} (revised {got[key].last_update:%H:%M:%S}Z)" if key in got else "")
        + f" | {stored.errors.get(key, '')[:80]} |"
        for key in config.keys
    )
    metadata = {
        **stored.metadata,
        "plan": dg.MetadataValue.md(
            "| hour | why | stored | error |\n| --- | --- | --- | --- |\n" + rows
        ),
    }
    yield dg.Output(None, metadata=metadata)
    if stored.errors:
        failed = sorted(stored.errors)
        raise dg.Failure(
            description=f"{len(failed)} of {len(config.keys)} planned hours failed: "
            + ", ".join(failed[:20]),
            metadata={"failed_partitions": dg.MetadataValue.json(failed)},
        )


@dg.job(
    name=JOB_NAME,
    executor_def=dg.in_process_executor,
    description="One batch of reference prices the planner chose: fetched, stored and "
    "published at once, one materialisation per hour; the output lists why each was fetched.",
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
def reference_prices_planner(context: dg.SensorEvaluationContext, market_data: MarketDataClient):
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
    current = settings()
    book = read_book(current.capture_dir, now)
    held = held_revisions(published.read(current.dashboard_dir, published.PRICES))
    budget = budget_left(
        market_data.budget, now, market_data.requests_per_minute, market_data.requests_per_hour
    )
    plan = plan_batch(now, book, held, budget)
    if not plan:
        return dg.SkipReason(
            f"nothing to fetch: {len(held)} hours held, {len(book.open_mw)} periods with open "
            f"positions, budget left {budget.minute}/min {budget.hour} this slot"
        )
    return batch_run_request(plan, now)
