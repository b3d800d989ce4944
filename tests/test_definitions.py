"""The code location loads: a broken import never reaches the UI."""

import os
import subprocess
import sys

from tests.conftest import REPO


def test_definitions_load():
    from energy_assets.definitions import defs

    assert "warehouse" in defs.resources


def test_dagster_definitions_validate(dagster_home, energy_env):
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_process_that_loads_the_code_location_records_run_plans_per_range():
    # `dagster asset materialize -m energy_assets.definitions` creates its run in the process
    # that loaded the code: the setting must be there, unless the deployment chose otherwise.
    script = (
        "import os; import energy_assets.definitions; "
        "print(os.environ['DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS'])"
    )
    for given, expected in ((None, "1"), ("0", "0")):
        env = {k: v for k, v in os.environ.items() if "PLANNED_EVENTS" not in k}
        if given is not None:
            env["DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"] = given
        result = subprocess.run(
            [sys.executable, "-c", script],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.stdout.strip() == expected, result.stderr
