"""The code location loads: a broken import never reaches the UI."""

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
