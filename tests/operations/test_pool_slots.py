"""A killed run never keeps the `duckdb` pool slot: with the daemon it is freed within 30 s;
a dead CLI run's slot is freed by the operator's one command (docs/operations.md)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from energy_assets.warehouse import DUCKDB_POOL
from tests.conftest import REPO

# Seconds or more: the real daemon and Dagster CLI processes.
pytestmark = pytest.mark.slow

DEFS = str(Path(__file__).with_name("pool_defs.py"))
BIN = Path(sys.executable).parent


def _wait(what: str, predicate, timeout: float, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _slot_holders(instance: dg.DagsterInstance) -> list[str]:
    """The runs holding a `duckdb` slot, as the UI's pool page lists them."""
    info = instance.event_log_storage.get_concurrency_info(DUCKDB_POOL)
    return [slot.run_id for slot in info.claimed_slots]


def _runs(instance: dg.DagsterInstance, job: str) -> list[dg.DagsterRun]:
    return instance.get_runs(dg.RunsFilter(job_name=job))


@pytest.fixture
def pool_env(dagster_home: Path, tmp_path: Path) -> dict[str, str]:
    # Creates the storage now: processes started together would race to create its tables.
    with dg.DagsterInstance.get():
        pass
    return {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "POOL_TEST_PID_FILE": str(tmp_path / "holder.pid"),
        "PYTHONUNBUFFERED": "1",
    }


@pytest.mark.timeout(240)
def test_with_the_daemon_a_killed_runs_slot_is_free_within_30_s(
    pool_env, tmp_path: Path, start_daemon
):
    pid_file = Path(pool_env["POOL_TEST_PID_FILE"])
    start_daemon("-f", DEFS, env=pool_env)

    def launch(job: str) -> None:
        done = subprocess.run(
            [str(BIN / "dagster"), "job", "launch", "-f", DEFS, "-j", job],
            env=pool_env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr

    launch("hold")
    _wait("the holding run's worker", pid_file.exists, 150)
    with dg.DagsterInstance.get() as instance:
        [held] = _runs(instance, "hold")
        assert _slot_holders(instance) == [held.run_id]
        launch("need")

        os.kill(int(pid_file.read_text()), signal.SIGKILL)
        killed_at = time.monotonic()
        _wait("the slot to be freed", lambda: held.run_id not in _slot_holders(instance), 60)
        freed_after = time.monotonic() - killed_at
        assert instance.get_run_by_id(held.run_id).status == dg.DagsterRunStatus.FAILURE

        def need_succeeded() -> bool:
            runs = _runs(instance, "need")
            return bool(runs) and runs[0].status == dg.DagsterRunStatus.SUCCESS

        # The queued run gets the slot: the drains never wait behind a dead run.
        _wait("the next run to succeed", need_succeeded, 90)
    print(f"the killed run's slot was free after {freed_after:.1f}s")
    assert freed_after < 30


@pytest.mark.timeout(240)
def test_a_dead_cli_runs_slot_is_freed_by_deleting_the_run(pool_env, tmp_path: Path):
    pid_file = Path(pool_env["POOL_TEST_PID_FILE"])

    def materialize(asset: str, log: Path) -> subprocess.Popen:
        with open(log, "w") as out:
            return subprocess.Popen(
                [str(BIN / "dagster"), "asset", "materialize", "-f", DEFS, "--select", asset],
                env=pool_env,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    holder = materialize("holds_the_slot", tmp_path / "holder.log")
    _wait("the CLI run to hold the slot", pid_file.exists, 120)
    assert int(pid_file.read_text()) == holder.pid  # in-process: the CLI is the run worker
    holder.send_signal(signal.SIGKILL)
    holder.wait()

    waiting = materialize("needs_the_slot", tmp_path / "waiting.log")
    try:
        with dg.DagsterInstance.get() as instance:
            [dead] = _runs(instance, "__ASSET_JOB")
            assert dead.status == dg.DagsterRunStatus.STARTED  # nobody saw it die
            _wait("the second run to start", lambda: len(_runs(instance, "__ASSET_JOB")) == 2, 90)
            # Blocked on the dead run's slot: nothing frees it by itself.
            time.sleep(10)
            assert waiting.poll() is None, (tmp_path / "waiting.log").read_text()
            assert _slot_holders(instance) == [dead.run_id]

        # The operator's fix (docs/operations.md): delete the dead run; its slot goes with it.
        subprocess.run(
            [str(BIN / "dagster"), "run", "delete", "-f", dead.run_id],
            env=pool_env,
            check=True,
            capture_output=True,
            timeout=60,
        )
        assert waiting.wait(90) == 0, (tmp_path / "waiting.log").read_text()
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
    with dg.DagsterInstance.get() as instance:
        assert instance.get_latest_materialization_event(dg.AssetKey("needs_the_slot")) is not None
        assert _slot_holders(instance) == []
