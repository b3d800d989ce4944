"""`trader_exposure` and `exposure_dashboard`: load, call the pure maths, store, publish."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from energy_assets import published
from energy_assets.exposure import store
from energy_assets.markets import MARKETS
from energy_assets.prices.assets import ASSET_PREFIX, price_asset_key
from energy_assets.settings import settings
from energy_assets.tables import TRADER_EXPOSURE, table_value
from energy_assets.warehouse import DUCKDB_POOL, DashboardResource

GROUP = "exposure"

#: Every market's prices, the upstream the automation alone refreshes this asset for.
PRICES = dg.AssetSelection.key_prefixes([ASSET_PREFIX])

#: New trades refresh this asset inside the `drain_and_refresh` run that drained them; this
#: covers the rest: a price partition materialised, `raw_trades` materialised by a run that did
#: not also refresh this asset (`any_deps_updated` ignores those, so a drain never causes a
#: second refresh), and once when missing. Not `eager()`: it waits for every hourly price
#: partition, and past or future hours never fetched are always missing. Not waiting for runs
#: in flight: a year's price backfill would freeze the desk's exposure (both upstreams commit in
#: one transaction, so a refresh reads a consistent state). Never past a failed blocking check.
EXPOSURE_CONDITION = (
    (
        (
            dg.AutomationCondition.newly_missing()
            | dg.AutomationCondition.any_deps_updated().ignore(PRICES)
        )
        .since_last_handled()
        .with_label("missing_or_trades_updated_since_last_handled")
        # A price update is handled only by a request of this sensor: a drain run that read
        # the prices just before a price run committed is handled in the same tick as the
        # price. `since` keeps the later of the two by the timestamps `newly_updated` and
        # `newly_requested` carry; `&`, `|` and `any_deps_updated()` carry none, and the reset
        # won: the revision was lost (tests/exposure/test_assets.py reproduces both races).
        | dg.AutomationCondition.any_deps_match(dg.AutomationCondition.newly_updated())
        .allow(PRICES)
        .since(dg.AutomationCondition.newly_requested())
        .with_label("prices_updated_since_requested")
    )
    & ~dg.AutomationCondition.in_progress()
    & dg.AutomationCondition.all_deps_blocking_checks_passed()
).with_label("refresh_on_new_trades_or_prices")

#: Refreshed with every drain and after every price revision: stale when both are.
EXPOSURE_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(minutes=30), warn_window=timedelta(minutes=15)
)


class ExposureConfig(dg.Config):
    full_recompute: bool = False
    """Recompute every delivery day, not only the changed ones: the repair after a deal of
    `energy.raw_trades` was corrected in place (a day's count of deals unchanged)."""


@dg.asset(
    key="trader_exposure",
    group_name=GROUP,
    deps=[
        dg.AssetDep("raw_trades"),
        # Every partition of every market's prices feeds the one unpartitioned exposure table.
        *(
            dg.AssetDep(price_asset_key(code), partition_mapping=dg.AllPartitionMapping())
            for code in MARKETS
        ),
    ],
    pool=DUCKDB_POOL,
    automation_condition=EXPOSURE_CONDITION,
    freshness_policy=EXPOSURE_FRESHNESS,
    kinds={"duckdb", "polars"},
)
def trader_exposure(
    context: dg.AssetExecutionContext, config: ExposureConfig, warehouse: DuckDBResource
):
    """Per trader and delivery period of each market: deals, MWh bought, sold and net, average
    prices, cash, the period's latest reference price, PnL and exposure, in the market's
    currency (`energy.trader_exposure`; PnL and exposure empty until the period is priced,
    unless it is flat: then its PnL is its cash).
    Beside it the open MW on each market's finest grid (`energy.trader_net_position`), totals
    per trader and currency and per market day, and each refresh's PnL change split into new
    trades and price moves (`energy.trader_pnl_history`). Recomputes only the market days whose
    deals or prices changed; stale after 15 minutes without a refresh, failing after 30."""
    with warehouse.get_connection() as conn:
        result = store.refresh(
            conn, datetime.now(UTC), run_id=context.run_id, full=config.full_recompute
        )
    for table in result.missing_inputs:
        context.log.warning(f"{table} does not exist yet: counted as empty")
    context.log.info(
        f"recomputed {result.days_recomputed} delivery day(s) in {result.seconds:.3f}s"
    )
    # On the materialisation only, not the step's output event too (as in raw_trades).
    context.add_asset_metadata(exposure_metadata(result))
    return dg.MaterializeResult()


def exposure_metadata(result: store.RefreshResult) -> dict:
    totals = result.totals
    periods = int(totals["periods"].sum() or 0)
    metadata = {
        # One row of energy.trader_exposure per trader and delivery period.
        "dagster/table_name": str(TRADER_EXPOSURE),
        "dagster/row_count": periods,
        "traders": totals["trader_id"].n_unique(),
        "periods": periods,
        "unpriced_periods": int(totals["unpriced_periods"].sum() or 0),
        "trades": int(totals["trades"].sum() or 0),
        "days_recomputed": result.days_recomputed,
        "refresh_seconds": round(result.seconds, 4),
        "largest_exposures": largest_exposures_table(result.largest),
        "trader_totals": trader_totals_table(totals, result.history),
    }
    # Money per currency, plotted over time by the UI (`total_pnl_eur`, `total_pnl_gbp`, ...);
    # a currency's PnL is left out (never 0) while none of its periods is priced.
    for (currency,), books in totals.group_by("currency", maintain_order=True):
        suffix = str(currency).lower()
        priced = books.filter(pl.col("pnl").is_not_null())
        if priced.height:
            metadata[f"total_pnl_{suffix}"] = float(priced["pnl"].sum())
            metadata[f"gross_exposure_{suffix}"] = float(priced["gross_exposure"].sum())
        changes = result.history.filter(pl.col("currency") == currency)
        if changes.height:
            for part in ("trades", "prices"):
                metadata[f"pnl_change_{part}_{suffix}"] = float(changes[f"pnl_change_{part}"].sum())
    return metadata


def _table(frame: pl.DataFrame) -> dg.TableMetadataValue:
    """A frame as a small table of the run's metadata, its columns typed from the frame's."""
    kinds = {
        name: "int" if kind.is_integer() else "float" if kind.is_float() else "string"
        for name, kind in frame.schema.items()
    }
    return table_value(frame.to_dicts(), kinds)


def largest_exposures_table(top: pl.DataFrame) -> dg.TableMetadataValue:
    """The periods with the largest |exposure| of each currency (`store.LARGEST`)."""
    delivery = pl.format(
        "{}–{} UTC",
        pl.col("delivery_start").dt.strftime("%Y-%m-%d %H:%M"),
        pl.col("delivery_end").dt.strftime("%H:%M"),
    )
    return _table(
        top.select(
            "trader_id",
            "market",
            delivery.alias("delivery"),
            pl.col("net_mwh").round(1),
            pl.col("reference_price", "exposure", "pnl").round(2),
            "currency",
        )
    )


def trader_totals_table(totals: pl.DataFrame, history: pl.DataFrame) -> dg.TableMetadataValue:
    """Per trader and currency: deals, net MWh, PnL, gross exposure, unpriced periods and this
    refresh's PnL change split into new trades and price moves."""
    changes = ["pnl_change_trades", "pnl_change_prices"]
    key = ["trader_id", "currency"]
    return _table(
        totals.join(history.select(*key, *changes), on=key, how="left", nulls_equal=True).select(
            *key,
            "trades",
            pl.col("net_mwh").round(1),
            pl.col("pnl", "gross_exposure").round(2),
            "unpriced_periods",
            pl.col(changes).round(2),
        )
    )


#: Published in the same run as every `trader_exposure` refresh: `drain_and_refresh` holds both,
#: and when automation requests `trader_exposure` this rides along ("will be requested" on the
#: same tick). Not `eager()`: in `make demo` it started a dashboard-only run after a
#: `drain_and_refresh` run had already published.
DASHBOARD_CONDITION = (
    dg.AutomationCondition.newly_missing().since_last_handled()
    | dg.AutomationCondition.any_deps_match(dg.AutomationCondition.will_be_requested())
).with_label("with_every_exposure_refresh")


class DashboardConfig(dg.Config):
    history_snapshots: int = 2880
    """How many of the latest PnL snapshots `pnl_history.parquet` holds: by default two days of
    refreshes at the default 60 s drain cadence, what the desk's chart spans, and a file whose
    write stays well under a second however old the table."""


@dg.asset(
    key="exposure_dashboard",
    group_name=GROUP,
    deps=[trader_exposure],
    pool=DUCKDB_POOL,
    automation_condition=DASHBOARD_CONDITION,
    kinds={"parquet"},
)
def exposure_dashboard(
    context: dg.AssetExecutionContext,
    config: DashboardConfig,
    warehouse: DuckDBResource,
    dashboard: DashboardResource,
):
    """What the live desk (`energy-assets dashboard`) shows as confirmed: every row of
    `trader_exposure` in `confirmed.parquet` and the latest PnL snapshots of
    `trader_pnl_history` in `pnl_history.parquet`, in `ENERGY_DASHBOARD_DIR` (default
    `data/dashboard/`), each file replaced atomically. Published after every
    `trader_exposure` refresh, in the same run."""
    out_dir = dashboard.directory
    with warehouse.get_connection() as conn:
        confirmed, history = store.published_frames(conn, config.history_snapshots)
    paths = [
        published.write(confirmed, out_dir, published.CONFIRMED),
        published.write(history, out_dir, published.PNL_HISTORY),
    ]
    snapshots = history["snapshot_at"].n_unique()
    context.log.info(
        f"published {confirmed.height} confirmed rows and {history.height} PnL "
        f"history rows ({snapshots} snapshots) to {out_dir}"
    )
    context.add_asset_metadata(
        {
            "directory": dg.MetadataValue.path(str(Path(out_dir).resolve())),
            "confirmed_rows": confirmed.height,
            "pnl_history_rows": history.height,
            "pnl_history_snapshots": snapshots,
            "bytes": sum(path.stat().st_size for path in paths),
        }
    )
    return dg.MaterializeResult()


#: Every `ENERGY_EXPOSURE_AUTOMATION_SECONDS`: a price revision reaches the batch exposure within
#: about that, while the live desk shows it at once. A tick that sees a change stores its whole
#: evaluation tree, kept 30 days whatever `retention:` says (EVALUATIONS_TTL_DAYS in Dagster's
#: asset daemon), so the interval is what bounds it (benchmarks/README.md, "Demo at the batch
#: cadence"). Running from the start: the default automation sensor starts stopped (1.13.27).
exposure_automation_sensor = dg.AutomationConditionSensorDefinition(
    "exposure_automation_sensor",
    target=dg.AssetSelection.assets(trader_exposure, exposure_dashboard),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=settings().exposure_automation_seconds,
    description="Refreshes trader_exposure and exposure_dashboard after new reference prices "
    "(new trades refresh them in the drain_and_refresh run).",
)
