"""The code location loads: a broken import never reaches the UI."""

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


def test_definitions_load():
    from energy_assets.definitions import defs

    assert "warehouse" in defs.resources


@pytest.mark.slow
def test_dagster_definitions_validate(dagster_home, energy_env):
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr


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
