"""`dg check defs`, `dg list defs` and `dg dev` exactly as the README gives them, in a fresh
copy of the repository, from a shell with no DAGSTER_HOME and no ENERGY_* variable."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import REPO

# Seconds or more: `dg` loads the definitions in subprocesses; `dg dev` starts Dagster.
pytestmark = pytest.mark.slow


@pytest.fixture
def fresh_clone(tmp_path: Path) -> Path:
    """The repository's files as a clone has them (tracked and new, nothing ignored), with
    the already built `.venv` linked in instead of built again."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    clone = tmp_path / "clone"
    for name in filter(None, listed):
        source = REPO / os.fsdecode(name)
        if source.is_file():
            target = clone / os.fsdecode(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    (clone / ".venv").symlink_to(REPO / ".venv")
    return clone


def clean_env(home: Path) -> dict[str, str]:
    """What a new user's shell holds: no DAGSTER_HOME, none of the platform's variables."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}


def test_dg_check_and_list_defs_work_on_a_fresh_clone(fresh_clone: Path, tmp_path: Path):
    env = clean_env(tmp_path)
    check = subprocess.run(
        [".venv/bin/dg", "check", "defs"],
        cwd=fresh_clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "All definitions loaded successfully" in check.stdout + check.stderr

    listed = subprocess.run(
        [".venv/bin/dg", "list", "defs", "--json"],
        cwd=fresh_clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert listed.returncode == 0, listed.stderr
    for name in (
        "raw_trades",
        "reference_prices/DE",
        "reference_prices/GB",
        "trader_exposure",
        "raw_trades_sensor",
    ):
        assert f'"{name}"' in listed.stdout, name


def without_daemon(log: Path) -> str:
    """The log of `dg dev` without the daemon's tick lines, which bury the rest."""
    return "\n".join(line for line in log.read_text().splitlines() if "dagster.daemon" not in line)


def test_dg_dev_serves_the_ui_on_a_fresh_clone_and_stops_on_ctrl_c(
    fresh_clone: Path, tmp_path: Path
):
    log = tmp_path / "dg-dev.log"
    with open(log, "w") as out:
        # As the README gives it: no port, so Dagster takes 3000 or, taken, a free one, and
        # says which (a port chosen here first could be taken by another test meanwhile).
        dev = subprocess.Popen(
            [".venv/bin/dg", "dev"],
            cwd=fresh_clone,
            env=clean_env(tmp_path),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 150
        while True:
            assert dev.poll() is None, without_daemon(log)
            serving = re.search(r"Serving dagster-webserver on (http://[0-9.:]+)", log.read_text())
            try:
                if serving and requests.get(f"{serving[1]}/server_info", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, without_daemon(log)
            time.sleep(1)
        ui = serving[1]
        query = "{ workspaceOrError { ... on Workspace { locationEntries { name } } } }"
        answer = requests.post(f"{ui}/graphql", json={"query": query}, timeout=30).json()
        entries = answer["data"]["workspaceOrError"]["locationEntries"]
        assert [entry["name"] for entry in entries] == ["energy_assets"]
        # The UI opens on the desk's assets, not on Dagster's newsletter dialog.
        nux = requests.post(f"{ui}/graphql", json={"query": "{ shouldShowNux }"}, timeout=30)
        assert nux.json()["data"] == {"shouldShowNux": False}
        # A terminal's Ctrl-C: SIGINT to the whole foreground group.
        os.killpg(dev.pid, signal.SIGINT)
        assert dev.wait(60) == 0, log.read_text()
    finally:
        if dev.poll() is None:
            os.killpg(dev.pid, signal.SIGKILL)
            dev.wait()
    # Every process `dg dev` started went with it. Not its temporary instance, always: a
    # process still stopping can write the instance's SQLite files again after `dg dev` has
    # removed the directory (seen once in a suite); `.tmp_dagster_home_*/` is in .gitignore,
    # as Dagster advises.
    deadline = time.monotonic() + 30
    while True:
        try:
            os.killpg(dev.pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "a process of dg dev outlived its Ctrl-C"
        time.sleep(0.2)
    # Nothing failed before Ctrl-C. After it, sensor ticks the daemon was still submitting
    # race Dagster's own shutdown (threads told to stop, not joined, before the code server
    # goes: "Location ... does not exist", "Tried to start a run on a server after telling it
    # to shut down"): Dagster's, not this project's, and the exit code above is still 0.
    before = log.read_text().partition("KeyboardInterrupt received")[0]
    raised = re.findall(r"^\s*([\w.]+(?:Error|Exception|Exit)\b.*)$", before, re.M)
    assert raised == [], raised
