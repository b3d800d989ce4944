"""`reference_prices`: the vendor's reference price of each delivery period of every market,
in DuckDB, keyed by (market, delivery_start, delivery_end).

A graph-backed asset of four steps, so that the DuckDB pool (one step at a time across the
whole instance) is held only while DuckDB is open, never while the vendor is being waited on
nor while Dagster records the run's materialisations:

    plan_price_fetch (pool)    the partitions' periods, those with trades first
    fetch_reference_prices     HTTP, concurrent, budgeted
    store_reference_prices     (pool) one transaction, then prices.parquet for the live desk
    report_reference_prices    one materialisation event per partition
"""

import time
from dataclasses import dataclass, field
from datetime import UTC, timedelta

import dagster as dg
from dagster_duckdb import DuckDBResource

from energy_assets.journals.prices import append_answers
from energy_assets.journals.resources import ArchiveResource
from energy_assets.markets import MARKETS, Invalid, Market, Period
from energy_assets.prices.budget import BULK, FRESH
from energy_assets.prices.client import MarketDataClient
from energy_assets.prices.partitions import (
    market_price_partitions,
    partition_periods,
    period_partition_key,
)
from energy_assets.prices.period_prices import PeriodPrice, period_request
from energy_assets.prices.plan import PeriodKey, period_key
from energy_assets.prices.store import publish_prices, store_prices
from energy_assets.tables import RAW_TRADES, REFERENCE_PRICES, exists
from energy_assets.warehouse import DUCKDB_POOL, DashboardResource

#: `reference_prices/DE`, `reference_prices/GB`: one asset per market, one table for all.
ASSET_PREFIX = "reference_prices"
#: Run tag: `fresh` (the planner's batches) may use the whole request budget, anything else is `bulk`.
PRIORITY_TAG = "energy/price_priority"


def price_asset_key(market: str) -> dg.AssetKey:
    """The asset of `market`'s reference prices."""
    return dg.AssetKey([ASSET_PREFIX, market])


def _market_of(context) -> Market:
    return MARKETS[context.assets_def.key.path[-1]]


@dataclass
class FetchedPrices:
    """What the fetch step hands to the store step."""

    prices: list[PeriodPrice] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    requests: int = 0
    retries: int = 0
    budget_wait_s: float = 0.0
    fetch_s: float = 0.0
    #: The partitions (local hours) with a period that failed: not materialised by the run.
    failed_partitions: list[str] = field(default_factory=list)


def order_for_fetch(periods: list[Period], traded: set[PeriodKey]) -> list[Period]:
    """Periods with trades first (they mark the book), then the rest; each in the order given."""
    first = [p for p in periods if period_key(p) in traded]
    return first + [p for p in periods if period_key(p) not in traded]


def _traded_periods(conn, periods: list[Period]) -> set[PeriodKey]:
    if not periods or not exists(conn, RAW_TRADES):
        return set()
    rows = conn.execute(
        f"SELECT DISTINCT market, delivery_start, delivery_end FROM {RAW_TRADES} "
        "WHERE delivery_start BETWEEN ? AND ?",
        [min(p.delivery_start for p in periods), max(p.delivery_start for p in periods)],
    ).fetchall()
    return {(market, start.astimezone(UTC), end.astimezone(UTC)) for market, start, end in rows}


@dg.op(pool=DUCKDB_POOL, ins={"vendor": dg.In(dg.Nothing)}, out=dg.Out(list))
def plan_price_fetch(context: dg.OpExecutionContext, warehouse: DuckDBResource) -> list[Period]:
    """The periods of this run's partitions, every market's, in fetch order: traded first."""
    market = _market_of(context)
    periods: list[Period] = []
    for key in context.partition_keys:
        found = partition_periods(market, key)
        periods += [] if isinstance(found, Invalid) else found
    with warehouse.get_connection() as conn:
        traded = _traded_periods(conn, periods)
    ordered = order_for_fetch(periods, traded)
    first = sum(1 for p in periods if period_key(p) in traded)
    context.log.info(
        f"{len(periods)} periods of {market.code} in {len(context.partition_keys)} local hours "
        f"to fetch, {first} of "
        "them with trades, fetched first"
    )
    return ordered


def fetch_periods(
    market_data: MarketDataClient, periods: list[Period], priority: str
) -> FetchedPrices:
    """Each period by the newer request form (`period_request`), concurrently, budgeted."""
    started = time.perf_counter()
    requests = [period_request(period) for period in periods]
    report = market_data.fetch_requests(requests, priority=priority)
    hour_of = {r.key: period_partition_key(p) for r, p in zip(requests, periods, strict=True)}
    return FetchedPrices(
        prices=[report.prices[r.key] for r in requests if r.key in report.prices],
        errors={key: str(error) for key, error in report.errors.items()},
        requests=report.requests,
        retries=report.retries,
        budget_wait_s=report.budget_wait_s,
        fetch_s=time.perf_counter() - started,
        failed_partitions=sorted({hour_of[key] for key in report.errors if key in hour_of}),
    )


@dg.op(out=dg.Out(FetchedPrices))
def fetch_reference_prices(
    context: dg.OpExecutionContext, market_data: MarketDataClient, ordered: list
) -> FetchedPrices:
    """Fetch every period of the run from the vendor, concurrently and within the budget."""
    priority = FRESH if context.run.tags.get(PRIORITY_TAG) == FRESH else BULK
    fetched = fetch_periods(market_data, ordered, priority)
    context.log.info(
        f"fetched {len(fetched.prices)} of {len(ordered)} periods ({priority}) with "
        f"{fetched.requests} requests, {fetched.retries} retries, "
        f"{fetched.budget_wait_s:.1f} s waiting for the budget, in {fetched.fetch_s:.1f} s"
    )
    return fetched


def _key_of(price: PeriodPrice) -> str:
    return period_partition_key(price.period)


@dataclass
class StoredPrices:
    """What the store step hands to the step that reports the materialisations."""

    prices: list[PeriodPrice]
    metadata: dict
    errors: dict[str, str]
    failed_partitions: list[str] = field(default_factory=list)


@dg.op(pool=DUCKDB_POOL, out=dg.Out(StoredPrices))
def store_reference_prices(
    context: dg.OpExecutionContext,
    warehouse: DuckDBResource,
    archive: ArchiveResource,
    dashboard: DashboardResource,
    fetched: FetchedPrices,
) -> StoredPrices:
    """Append the fetched prices to the prices' journal, then write them in one transaction
    (the only time this step holds the pool), then publish every period's current price for
    the live desk (`prices.parquet`). Journal first: whatever DuckDB holds, the journal
    holds too."""
    append_answers(archive.root, fetched.prices, context.run_id)
    with warehouse.get_connection() as conn:
        stored = store_prices(conn, fetched.prices)
        # After the commit, from the table: what the desk sees is what DuckDB holds, a
        # newer stored revision included.
        published_periods = publish_prices(conn, dashboard.directory)
    values = [p.value for p in fetched.prices]
    metadata = {
        # publish_prices writes every current row of the table.
        "dagster/row_count": published_periods,
        "periods_fetched": len(fetched.prices),
        "periods_failed": len(fetched.errors),
        "requests": fetched.requests,
        "retries": fetched.retries,
        "revisions_seen": stored.new_revisions,
        "periods_published": published_periods,
        "min_value": min(values) if values else None,
        "max_value": max(values) if values else None,
        "budget_wait_s": round(fetched.budget_wait_s, 3),
        "fetch_s": round(fetched.fetch_s, 3),
    }
    context.log.info(f"stored {len(fetched.prices)} periods, {stored.new_revisions} new revisions")
    return StoredPrices(
        prices=fetched.prices,
        metadata={k: v for k, v in metadata.items() if v is not None},
        errors=fetched.errors,
        failed_partitions=fetched.failed_partitions,
    )


@dg.op(out=dg.Out(dg.Nothing))
def report_reference_prices(context: dg.OpExecutionContext, stored: StoredPrices):
    """Report what was stored; fail naming the hours that failed.

    A step of its own, outside the DuckDB pool: Dagster records one materialisation event per
    partition here (benchmarks/README.md, prices), and the trade drains need the pool."""
    if not stored.errors:
        yield dg.Output(None, metadata=stored.metadata)
        return
    # Partial failure: the fetched periods are stored; the hours all of whose periods were
    # fetched are reported materialised one by one; the others were planned by the run and
    # get no materialisation, so the failed run leaves them failed in Dagster's eyes and a
    # re-run of the failed partitions fetches just them.
    failed = set(stored.failed_partitions)
    for key in sorted({_key_of(price) for price in stored.prices} - failed):
        yield dg.AssetMaterialization(asset_key=context.assets_def.key, partition=key)
    periods = sorted(stored.errors)
    detail = "\n".join(f"{key}: {stored.errors[key]}" for key in periods[:50])
    raise dg.Failure(
        description=(
            f"{len(periods)} of {len(periods) + len(stored.prices)} periods in "
            f"{len(failed)} reference-price partitions failed after their retries: "
            f"{', '.join(sorted(failed)[:20])}{' …' if len(failed) > 20 else ''}\n{detail}"
        ),
        metadata={
            **stored.metadata,
            "failed_partitions": dg.MetadataValue.json(sorted(failed)),
            # Each failed period's reason (a refused answer, the vendor down after retries).
            "failure_reasons": dg.MetadataValue.json(
                {key: stored.errors[key][:300] for key in periods[:200]}
            ),
        },
    )


#: The vendor, outside this platform: lineage starts here.
MARKET_DATA_API = dg.AssetSpec(
    "market_data_api",
    group_name="prices",
    kinds={"api"},
    description="The vendor's Market Data API (`ENERGY_MARKET_DATA_URL`): the reference price "
    "of every delivery period of every market, revised on a 10-minute grid and published up "
    "to 30 s late; one account for every market: 50 requests a minute and 1,000 an hour.",
)

#: One missed 10-minute revision slot warns (the run of a slot ends ~1 minute after it); three
#: missed slots, half an hour of vendor revisions the book is not marked with, fail.
PRICES_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(minutes=30), warn_window=timedelta(minutes=15)
)


def build_reference_prices(market: Market) -> dg.AssetsDefinition:
    """`reference_prices/<code>`: `market`'s periods, partitioned by its local hours."""

    @dg.graph_asset(
        key=price_asset_key(market.code),
        group_name="prices",
        partitions_def=market_price_partitions(market),
        backfill_policy=dg.BackfillPolicy.single_run(),
        kinds={"duckdb"},
        ins={"vendor": dg.AssetIn(MARKET_DATA_API.key)},
        metadata=REFERENCE_PRICES.definition_metadata(),
        description=(_DESCRIPTION % (market.code, market.time_zone, market.currency)),
    )
    def _reference_prices(vendor):
        return report_reference_prices(
            store_reference_prices(fetch_reference_prices(plan_price_fetch(vendor)))
        )

    # `dg.graph_asset` takes no freshness policy (1.13); the spec gets it here.
    return _reference_prices.map_asset_specs(
        lambda spec: dg.apply_freshness_policy(spec, PRICES_FRESHNESS)
    )


_DESCRIPTION = """The vendor's reference price of each delivery period of %s, per MWh in its
currency: one row per (market, delivery_start, delivery_end) in `energy.reference_prices` (the
latest revision seen) and every distinct revision in `energy.reference_price_revisions`.
Partitions are the market's local hours (%s) with the UTC offset in the key: a DST day has 23
or 25 of them (`2026-10-25-02:00+0200` and `2026-10-25-02:00+0100` are Berlin's two 02-03
hours), each holding every period that starts in it (DE: the hour and its four quarter-hours;
GB: two half-hours), each asked of the vendor by its instants. A range is fetched concurrently
in one run and written in one transaction; the open periods re-fetched by value, as their
revisions come out, by `reference_prices_planner`, which materialises the partitions it
touched. Each run then publishes every period's current price (%s and the other markets') for
the live desk (`prices.parquet` in `ENERGY_DASHBOARD_DIR`). Fresh while a run stored prices in
the last 15 minutes (one missed revision slot warns), failing after 30."""

#: One asset per market (each its own local-time partitions: a multi-partitioned asset has
#: one time dimension, hence one time zone, for all markets).
REFERENCE_PRICES_ASSETS = [build_reference_prices(market) for market in MARKETS.values()]
