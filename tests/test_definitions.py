"""The code location loads: a broken import never reaches the UI (`dg check defs` as the
README gives it: tests/operations/test_dg.py)."""

import os
import subprocess
import sys

import pytest


def test_definitions_load():
    from energy_assets.definitions import defs

    assert "warehouse" in defs.resources


@pytest.mark.slow
def test_loading_the_definitions_creates_nothing_and_leaves_the_environment_alone(tmp_path):
    # The platform's and Dagster's variables (polars sets its allocator's own on import).
    script = (
        "import os; ours = lambda: {k: v for k, v in os.environ.items() "
        "if k.startswith(('ENERGY_', 'DAGSTER_'))}; before = ours(); "
        "import energy_assets.definitions; print(str(ours() == before).lower())"
    )
    env = {
        **os.environ,
        "ENERGY_DUCKDB_PATH": str(tmp_path / "w" / "warehouse.duckdb"),
        "ENERGY_CAPTURE_DIR": str(tmp_path / "c"),
        "ENERGY_DASHBOARD_DIR": str(tmp_path / "d"),
    }
    env.pop("ENERGY_ARCHIVE_URL", None)
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.stdout.strip() == "true", result.stderr
    assert list(tmp_path.iterdir()) == []


def test_lineage_starts_at_the_exchange_and_the_vendor_and_the_desk_assets_have_freshness():
    import dagster as dg

    from energy_assets.definitions import defs
    from energy_assets.tables import RAW_TRADES, REFERENCE_PRICES

    graph = defs.resolve_asset_graph()
    node = graph.get
    assert node(dg.AssetKey("raw_trades")).parent_keys == {dg.AssetKey("exchange_feed")}
    # One price asset per market, each writing its rows of the one table.
    prices = [dg.AssetKey(["reference_prices", code]) for code in ("DE", "GB")]
    for key in prices:
        assert node(key).parent_keys == {dg.AssetKey("market_data_api")}
    for key in ("exchange_feed", "market_data_api"):
        assert not node(dg.AssetKey(key)).is_materializable
    for key in (dg.AssetKey("raw_trades"), *prices, dg.AssetKey("trader_exposure")):
        assert node(key).freshness_policy is not None, key
    for table, key in (
        (RAW_TRADES, dg.AssetKey("raw_trades")),
        *((REFERENCE_PRICES, k) for k in prices),
    ):
        metadata = node(key).metadata
        assert metadata["dagster/table_name"] == f"energy.{table.name}"
        columns = [column.name for column in metadata["dagster/column_schema"].columns]
        assert columns == table.column_names
