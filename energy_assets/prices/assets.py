"""`reference_prices`: the vendor's reference price of each delivery hour, in DuckDB.

A graph-backed asset of four steps, so that the DuckDB pool (one step at a time across the
whole instance) is held only while DuckDB is open, never while the vendor is being waited on
nor while Dagster records the run's materialisations:

    plan_price_fetch (pool)    which hours have trades
    fetch_reference_prices     HTTP, concurrent, budgeted
    store_reference_prices     (pool) one transaction, then prices.parquet for the live desk
    report_reference_prices    one materialisation event per partition
"""

import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import dagster as dg
from dagster_duckdb import DuckDBResource

from energy_assets.journals.prices import append_answers
from energy_assets.journals.resources import ArchiveResource
from energy_assets.prices.budget import BULK, FRESH
from energy_assets.prices.client import MarketDataClient, ReferencePrice
from energy_assets.prices.partitions import (
    delivery_to_partition_key,
    partition_key_to_delivery,
    reference_price_partitions,
)
from energy_assets.prices.store import publish_prices, store_prices
from energy_assets.settings import settings
from energy_assets.tables import RAW_TRADES, REFERENCE_PRICES, exists
from energy_assets.warehouse import DUCKDB_POOL

ASSET_KEY = dg.AssetKey("reference_prices")
#: Run tag: `fresh` (the planner's batches) may use the whole request budget, anything else is `bulk`.
PRIORITY_TAG = "energy/price_priority"
#: Run tag: ISO time before which the run must not fetch (a slot's revisions are not all out).
NOT_BEFORE_TAG = "energy/fetch_not_before"

PARTITIONS = reference_price_partitions()


@dataclass
class FetchedPrices:
    """What the fetch step hands to the store step."""

    prices: list[ReferencePrice] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    requests: int = 0
    retries: int = 0
    budget_wait_s: float = 0.0
    fetch_s: float = 0.0


def order_for_fetch(keys: list[str], hours_with_trades: set[tuple[date, str]]) -> list[str]:
    """Hours with positions first (they mark the book), then the rest; each in time order."""
    first = [key for key in keys if partition_key_to_delivery(key) in hours_with_trades]
    chosen = set(first)
    return first + [key for key in keys if key not in chosen]


def _hours_with_trades(conn, keys: list[str]) -> set[tuple[date, str]]:
    if not keys or not exists(conn, RAW_TRADES):
        return set()
    first, _ = partition_key_to_delivery(keys[0])
    last, _ = partition_key_to_delivery(keys[-1])
    rows = conn.execute(
        f"SELECT DISTINCT delivery_day, delivery_hour FROM {RAW_TRADES} "
        "WHERE delivery_day BETWEEN ? AND ?",
        [first, last],
    ).fetchall()
    return {(day, hour) for day, hour in rows}


@dg.op(pool=DUCKDB_POOL, ins={"vendor": dg.In(dg.Nothing)}, out=dg.Out(list))
def plan_price_fetch(context: dg.OpExecutionContext, warehouse: DuckDBResource) -> list[str]:
    """The partitions of this run in fetch order: hours with trades first."""
    keys = list(context.partition_keys)
    with warehouse.get_connection() as conn:
        traded = _hours_with_trades(conn, keys)
    ordered = order_for_fetch(keys, traded)
    first = sum(1 for key in keys if partition_key_to_delivery(key) in traded)
    context.log.info(f"{len(keys)} hours to fetch, {first} of them with trades, fetched first")
    return ordered


@dg.op(out=dg.Out(FetchedPrices))
def fetch_reference_prices(
    context: dg.OpExecutionContext, market_data: MarketDataClient, ordered_keys: list
) -> FetchedPrices:
    """Fetch every hour of the run from the vendor, concurrently and within the budget."""
    tags = context.run.tags
    priority = FRESH if tags.get(PRIORITY_TAG) == FRESH else BULK
    not_before = tags.get(NOT_BEFORE_TAG)
    if not_before:
        wait = datetime.fromisoformat(not_before).timestamp() - time.time()
        if wait > 0:
            context.log.info(f"waiting {wait:.1f} s until the slot's revisions are published")
            time.sleep(wait)
    started = time.perf_counter()
    report = market_data.fetch_many(
        [(key, *partition_key_to_delivery(key)) for key in ordered_keys], priority=priority
    )
    fetched = FetchedPrices(
        prices=[report.prices[key] for key in ordered_keys if key in report.prices],
        errors={key: str(error) for key, error in report.errors.items()},
        requests=report.requests,
        retries=report.retries,
        budget_wait_s=report.budget_wait_s,
        fetch_s=time.perf_counter() - started,
    )
    context.log.info(
        f"fetched {len(fetched.prices)} of {len(ordered_keys)} hours ({priority}) with "
        f"{fetched.requests} requests, {fetched.retries} retries, "
        f"{fetched.budget_wait_s:.1f} s waiting for the budget, in {fetched.fetch_s:.1f} s"
    )
    return fetched


def _key_of(price: ReferencePrice) -> str:
    return delivery_to_partition_key(price.delivery_day, price.delivery_hour)


@dataclass
class StoredPrices:
    """What the store step hands to the step that reports the materialisations."""

    prices: list[ReferencePrice]
    metadata: dict
    errors: dict[str, str]


@dg.op(pool=DUCKDB_POOL, out=dg.Out(StoredPrices))
def store_reference_prices(
    context: dg.OpExecutionContext,
    warehouse: DuckDBResource,
    archive: ArchiveResource,
    fetched: FetchedPrices,
) -> StoredPrices:
    """Append the fetched prices to the prices' journal, then write them in one transaction
    (the only time this step holds the pool), then publish every hour's current price for
    the live desk (`prices.parquet`). Journal first: whatever DuckDB holds, the journal
    holds too."""
    append_answers(archive.root, fetched.prices, context.run_id)
    with warehouse.get_connection() as conn:
        stored = store_prices(conn, fetched.prices)
        # After the commit, from the table: what the desk sees is what DuckDB holds, a
        # newer stored revision included.
        published_hours = publish_prices(conn, settings().dashboard_dir)
    values = [p.value for p in fetched.prices]
    metadata = {
        # publish_prices writes every current row of the table.
        "dagster/row_count": published_hours,
        "partitions_fetched": len(fetched.prices),
        "partitions_failed": len(fetched.errors),
        "requests": fetched.requests,
        "retries": fetched.retries,
        "revisions_seen": stored.new_revisions,
        "hours_published": published_hours,
        "min_value": min(values) if values else None,
        "max_value": max(values) if values else None,
        "budget_wait_s": round(fetched.budget_wait_s, 3),
        "fetch_s": round(fetched.fetch_s, 3),
    }
    context.log.info(f"stored {len(fetched.prices)} hours, {stored.new_revisions} new revisions")
    return StoredPrices(
        prices=fetched.prices,
        metadata={k: v for k, v in metadata.items() if v is not None},
        errors=fetched.errors,
    )


@dg.op(out=dg.Out(dg.Nothing))
def report_reference_prices(context: dg.OpExecutionContext, stored: StoredPrices):
    """Report what was stored; fail naming the hours that failed.

    A step of its own, outside the DuckDB pool: Dagster records one materialisation event per
    partition here (benchmarks/README.md, prices), and the trade drains need the pool."""
    if not stored.errors:
        yield dg.Output(None, metadata=stored.metadata)
        return
    # Partial failure: the hours that were fetched are stored and reported materialised one by
    # one; the failed ones were planned by the run and get no materialisation, so the failed
    # run leaves them failed in Dagster's eyes and a re-run of the failed partitions fetches
    # just them.
    for price in stored.prices:
        yield dg.AssetMaterialization(
            asset_key=ASSET_KEY,
            partition=_key_of(price),
            metadata={
                "value": price.value,
                "unit": price.unit,
                "last_update": price.last_update.isoformat(),
            },
        )
    failed = sorted(stored.errors)
    detail = "\n".join(f"{key}: {stored.errors[key]}" for key in failed[:50])
    raise dg.Failure(
        description=(
            f"{len(failed)} of {len(failed) + len(stored.prices)} reference-price partitions "
            f"failed after their retries: {', '.join(failed[:20])}"
            f"{' …' if len(failed) > 20 else ''}\n{detail}"
        ),
        metadata={
            **stored.metadata,
            "failed_partitions": dg.MetadataValue.json(failed),
            # Each failed period's reason (a refused answer, the vendor down after retries).
            "failure_reasons": dg.MetadataValue.json(
                {key: stored.errors[key][:300] for key in failed[:200]}
            ),
        },
    )


#: The vendor, outside this platform: lineage starts here.
MARKET_DATA_API = dg.AssetSpec(
    "market_data_api",
    group_name="prices",
    kinds={"api"},
    description="The vendor's Market Data API (`ENERGY_MARKET_DATA_URL`): the reference price "
    "of every delivery hour, revised on a 10-minute grid and published up to 30 s late; 50 "
    "requests a minute and 1,000 an hour.",
)

#: One missed 10-minute revision slot warns (the run of a slot ends ~1 minute after it); three
#: missed slots, half an hour of vendor revisions the book is not marked with, fail.
PRICES_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(minutes=30), warn_window=timedelta(minutes=15)
)


@dg.graph_asset(
    key=ASSET_KEY,
    group_name="prices",
    partitions_def=PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    kinds={"duckdb"},
    ins={"vendor": dg.AssetIn(MARKET_DATA_API.key)},
    metadata=REFERENCE_PRICES.definition_metadata(),
)
def _reference_prices(vendor):
    """The vendor's reference price (EUR/MWh) of each delivery hour, one row per hour in
    `energy.reference_prices` (the latest revision seen) and every distinct revision in
    `energy.reference_price_revisions`. Partition `2023-02-20-15:00` is delivery day
    2023-02-20, hour 15-16 (Berlin time). A range is fetched concurrently in one run and written in
    one transaction; the open hours re-fetched by value, as their revisions come out, by
    `reference_prices_planner`. Each run then publishes every hour's current price for the
    live desk (`prices.parquet` in `ENERGY_DASHBOARD_DIR`). Fresh while a run stored prices
    in the last 15 minutes (one missed revision slot warns), failing after 30 (three slots:
    the book is marked with half-hour-old prices)."""
    return report_reference_prices(
        store_reference_prices(fetch_reference_prices(plan_price_fetch(vendor)))
    )


# `dg.graph_asset` takes no freshness policy (1.13); the spec gets it here.
reference_prices = _reference_prices.map_asset_specs(
    lambda spec: dg.apply_freshness_policy(spec, PRICES_FRESHNESS)
)
