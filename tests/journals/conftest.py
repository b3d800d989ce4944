"""The journals' tests use the trade capture's listener and the prices' scripted vendor; and
two helpers: a warehouse drained for real, and the integrity check run in Dagster."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource

from energy_assets.journals.checks import journal_matches_warehouse
from energy_assets.journals.resources import ArchiveResource
from energy_assets.trades.buffer import CaptureBuffer
from energy_assets.trades.drain import drain
from tests.prices.conftest import scripted_market_data  # noqa: F401
from tests.trades.conftest import make_deals, thread_listener  # noqa: F401


def fill_and_drain(
    capture: Path, db: Path, deals: int, drains: int, archive_url: str | None = None
) -> None:
    """`deals` deals (5 % sent twice) through the capture buffer, drained in `drains` runs."""
    made = make_deals(deals, seed=9)
    stream = made + made[::20]
    buffer = CaptureBuffer(capture, seal_frames=5_000)
    per_drain = -(-len(stream) // drains)
    with duckdb.connect(str(db)) as conn:
        for start in range(0, len(stream), per_drain):
            for deal in stream[start : start + per_drain]:
                buffer.append(deal, datetime.now(UTC))
            buffer.seal()
            drain(conn, capture, retention=timedelta(0), archive_url=archive_url)


def run_check(db: Path, archive: Path) -> dg.AssetCheckEvaluation:
    result = dg.materialize(
        [journal_matches_warehouse],
        instance=dg.DagsterInstance.get(),
        resources={
            "warehouse": DuckDBResource(database=str(db)),
            "archive": ArchiveResource(url=str(archive), retention_days=2557),
        },
        selection=dg.AssetSelection.checks(journal_matches_warehouse),
    )
    assert result.success
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation
