"""`journal_matches_warehouse` in a real Dagster instance, on a warehouse drained for real."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from tests.journals.conftest import fill_and_drain, run_check

# Seconds or more: Dagster runs in a real instance.
pytestmark = pytest.mark.slow


def test_the_check_warns_when_the_journal_lacks_what_the_warehouse_holds(dagster_home, energy_env):
    capture, db = Path(energy_env["ENERGY_CAPTURE_DIR"]), Path(energy_env["ENERGY_DUCKDB_PATH"])
    fill_and_drain(capture, db, deals=1_000, drains=4)
    archive = capture / "archive"
    assert run_check(db, archive).passed

    lost = sorted((archive / "deals").glob("*/*.tar.zst"))[2]
    lost.unlink()
    Path(str(lost) + ".json").unlink()
    evaluation = run_check(db, archive)
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    problems = evaluation.metadata["problems"].value
    assert "only in warehouse" in problems and lost.name.split(".")[0] in problems
