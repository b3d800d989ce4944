"""Checks of each market's rows of `energy.reference_prices`, evaluated in one step (one short
DuckDB connection) per market."""

from collections.abc import Iterator

import dagster as dg
from dagster_duckdb import DuckDBResource

from energy_assets.markets import EARLIEST, MARKETS, Market
from energy_assets.prices.answer import CLOCK_SKEW
from energy_assets.prices.assets import price_asset_key
from energy_assets.prices.period_prices import price_rules
from energy_assets.tables import RAW_TRADES, REFERENCE_PRICES, ensure_price_tables, exists
from energy_assets.warehouse import DUCKDB_POOL


def reference_price_checks(market: Market) -> dg.AssetChecksDefinition:
    """`market`'s checks: finite, plausible, in its currency, every traded period priced."""
    key = price_asset_key(market.code)
    finite = dg.AssetCheckSpec(
        "values_finite", asset=key, description="Every stored price is a finite number."
    )
    plausible = dg.AssetCheckSpec(
        "values_plausible",
        asset=key,
        description="Every stored price is inside the market's limits (±9,999 per MWh) and "
        "its last_update between 2000 and when it was fetched plus the clock skew. The client "
        "refuses anything else, so a failure here is a row stored before answers were judged "
        "(or corruption): an operator deletes it; a later revision replaces it in any case.",
    )
    one_currency = dg.AssetCheckSpec(
        "one_currency",
        asset=key,
        description=f"Every stored price of {market.code} is in its currency, {market.currency}.",
    )
    coverage = dg.AssetCheckSpec(
        "covers_traded_periods",
        asset=key,
        description=f"Every delivery period of {market.code} with trades in energy.raw_trades "
        "has its own reference price (a warning while one is missing: positions in it cannot "
        "be marked).",
    )
    rules = price_rules(market.code)

    @dg.multi_asset_check(
        specs=[finite, plausible, one_currency, coverage],
        name=f"reference_price_checks_{market.code}",
        pool=DUCKDB_POOL,
        can_subset=True,
    )
    def _checks(
        context: dg.AssetCheckExecutionContext, warehouse: DuckDBResource
    ) -> Iterator[dg.AssetCheckResult]:
        selected = context.selected_asset_check_keys
        with warehouse.get_connection() as conn:
            ensure_price_tables(conn)
            prices = f"(SELECT * FROM {REFERENCE_PRICES} WHERE market = $market)"
            if finite.key in selected:
                bad = conn.execute(
                    f"SELECT count(*) FROM {prices} WHERE value IS NULL OR NOT isfinite(value)",
                    {"market": market.code},
                ).fetchone()[0]
                yield dg.AssetCheckResult(
                    check_name=finite.name, passed=bad == 0, metadata={"non_finite_rows": bad}
                )
            if plausible.key in selected:
                skew_s = int(CLOCK_SKEW.total_seconds())
                offenders = conn.execute(
                    f"""
                    SELECT delivery_start, delivery_end, value, last_update FROM {prices}
                    WHERE NOT (value BETWEEN $low AND $high)
                       OR last_update < $earliest
                       OR last_update > fetched_at + INTERVAL {skew_s} SECOND
                    ORDER BY 1, 2
                    """,
                    {
                        "market": market.code,
                        "low": rules.low,
                        "high": rules.high,
                        "earliest": EARLIEST,
                    },
                ).fetchall()
                yield dg.AssetCheckResult(
                    check_name=plausible.name,
                    passed=not offenders,
                    metadata={
                        "implausible_rows": len(offenders),
                        "first_implausible": dg.MetadataValue.json(
                            [
                                f"{start.isoformat()}/{end.isoformat()}: {value!r}, "
                                f"last_update {stamp.isoformat()}"
                                for start, end, value, stamp in offenders[:20]
                            ]
                        ),
                    },
                )
            if one_currency.key in selected:
                currencies = [
                    row[0]
                    for row in conn.execute(
                        f"SELECT DISTINCT currency FROM {prices} ORDER BY 1",
                        {"market": market.code},
                    ).fetchall()
                ]
                yield dg.AssetCheckResult(
                    check_name=one_currency.name,
                    passed=set(currencies) <= {market.currency},
                    metadata={"currencies": dg.MetadataValue.json(currencies)},
                )
            if coverage.key in selected:
                if not exists(conn, RAW_TRADES):
                    yield dg.AssetCheckResult(
                        check_name=coverage.name,
                        passed=True,
                        severity=dg.AssetCheckSeverity.WARN,
                        metadata={
                            "note": "energy.raw_trades does not exist yet: no traded periods"
                        },
                    )
                    return
                traded = f"""(SELECT DISTINCT market, delivery_start, delivery_end
                    FROM {RAW_TRADES} WHERE market = $market)"""
                missing = conn.execute(
                    f"""
                    SELECT delivery_start, delivery_end FROM {traded} t
                    ANTI JOIN {prices} p USING (market, delivery_start, delivery_end)
                    ORDER BY 1, 2
                    """,
                    {"market": market.code},
                ).fetchall()
                count = conn.execute(
                    f"SELECT count(*) FROM {traded}", {"market": market.code}
                ).fetchone()[0]
                yield dg.AssetCheckResult(
                    check_name=coverage.name,
                    passed=not missing,
                    severity=dg.AssetCheckSeverity.WARN,
                    metadata={
                        "traded_periods": count,
                        "periods_without_price": len(missing),
                        "first_missing": dg.MetadataValue.json(
                            [
                                f"{start.isoformat()}/{end.isoformat()}"
                                for start, end in missing[:20]
                            ]
                        ),
                    },
                )

    return _checks


REFERENCE_PRICE_CHECKS = [reference_price_checks(market) for market in MARKETS.values()]
