"""Checks of `energy.reference_prices`, evaluated in one step (one short DuckDB connection)."""

from collections.abc import Iterator

import dagster as dg
from dagster_duckdb import DuckDBResource

from energy_assets.prices.answer import CLOCK_SKEW, EARLIEST_UPDATE, EURO_MWH
from energy_assets.prices.assets import ASSET_KEY
from energy_assets.tables import RAW_TRADES, REFERENCE_PRICES, ensure_price_tables, exists
from energy_assets.warehouse import DUCKDB_POOL

FINITE = dg.AssetCheckSpec(
    "values_finite", asset=ASSET_KEY, description="Every stored price is a finite number."
)
PLAUSIBLE = dg.AssetCheckSpec(
    "values_plausible",
    asset=ASSET_KEY,
    description="Every stored price is inside the market's limits (±9,999 per MWh) and its "
    "last_update between 2000 and when it was fetched plus the clock skew. The client refuses "
    "anything else, so a failure here is a row stored before answers were judged (or "
    "corruption): an operator deletes it; a later revision replaces it in any case.",
)
ONE_UNIT = dg.AssetCheckSpec(
    "one_unit", asset=ASSET_KEY, description="Every stored price is in the same unit."
)
COVERAGE = dg.AssetCheckSpec(
    "covers_traded_hours",
    asset=ASSET_KEY,
    description="Every delivery hour with trades in energy.raw_trades has a reference price "
    "(a warning while one is missing: positions in it cannot be marked).",
)


@dg.multi_asset_check(
    specs=[FINITE, PLAUSIBLE, ONE_UNIT, COVERAGE], pool=DUCKDB_POOL, can_subset=True
)
def reference_price_checks(
    context: dg.AssetCheckExecutionContext, warehouse: DuckDBResource
) -> Iterator[dg.AssetCheckResult]:
    selected = context.selected_asset_check_keys
    with warehouse.get_connection() as conn:
        ensure_price_tables(conn)
        prices = REFERENCE_PRICES
        if FINITE.key in selected:
            bad = conn.execute(
                f"SELECT count(*) FROM {prices} WHERE value IS NULL OR NOT isfinite(value)"
            ).fetchone()[0]
            yield dg.AssetCheckResult(
                check_name=FINITE.name,
                passed=bad == 0,
                metadata={"non_finite_rows": bad},
            )
        if PLAUSIBLE.key in selected:
            skew_s = int(CLOCK_SKEW.total_seconds())
            offenders = conn.execute(
                f"""
                SELECT delivery_day, delivery_hour, value, last_update FROM {prices}
                WHERE NOT (value BETWEEN ? AND ?)
                   OR last_update < ?
                   OR last_update > fetched_at + INTERVAL {skew_s} SECOND
                ORDER BY 1, 2
                """,
                [EURO_MWH.low, EURO_MWH.high, EARLIEST_UPDATE],
            ).fetchall()
            yield dg.AssetCheckResult(
                check_name=PLAUSIBLE.name,
                passed=not offenders,
                metadata={
                    "implausible_rows": len(offenders),
                    "first_implausible": dg.MetadataValue.json(
                        [
                            f"{day.isoformat()} {hour}: {value!r}, last_update {stamp.isoformat()}"
                            for day, hour, value, stamp in offenders[:20]
                        ]
                    ),
                },
            )
        if ONE_UNIT.key in selected:
            units = [
                row[0]
                for row in conn.execute(f"SELECT DISTINCT unit FROM {prices} ORDER BY 1").fetchall()
            ]
            yield dg.AssetCheckResult(
                check_name=ONE_UNIT.name,
                passed=len(units) <= 1,
                metadata={"units": dg.MetadataValue.json(units)},
            )
        if COVERAGE.key in selected:
            if not exists(conn, RAW_TRADES):
                yield dg.AssetCheckResult(
                    check_name=COVERAGE.name,
                    passed=True,
                    severity=dg.AssetCheckSeverity.WARN,
                    metadata={"note": "energy.raw_trades does not exist yet: no traded hours"},
                )
                return
            missing = conn.execute(
                f"""
                SELECT DISTINCT t.delivery_day, t.delivery_hour
                FROM {RAW_TRADES} t
                ANTI JOIN {prices} p USING (delivery_day, delivery_hour)
                ORDER BY 1, 2
                """
            ).fetchall()
            traded = conn.execute(
                f"SELECT count(*) FROM (SELECT DISTINCT delivery_day, delivery_hour FROM {RAW_TRADES})"
            ).fetchone()[0]
            yield dg.AssetCheckResult(
                check_name=COVERAGE.name,
                passed=not missing,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={
                    "traded_hours": traded,
                    "hours_without_price": len(missing),
                    "first_missing": dg.MetadataValue.json(
                        [f"{day.isoformat()} {hour}" for day, hour in missing[:20]]
                    ),
                },
            )
