"""`energy-assets demo` as an operator runs it (on free ports): everything comes up on
supervisord, a killed program comes back, and one Ctrl-C stops every program and everything
it started, with nothing lost."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from energy_assets.operations.demo import (
    DemoOptions,
    plan,
    port_in_use,
    postgres_root,
    prepare_dagster_home,
)
from energy_assets.warehouse import DUCKDB_POOL
from tests.conftest import REPO, free_port

# Seconds or more: `energy-assets demo` with every program.
pytestmark = pytest.mark.slow

SPAWNED = re.compile(r"spawned: '(\w+)' with pid (\d+)")


def group_members(pgid: int) -> list[int]:
    """Live processes of process group `pgid` (zombies are dead)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def option(section: str, name: str) -> str:
    """A `name=value` line's value in a supervisord section."""
    return re.search(rf"^{name}=(.*)$", section, re.M).group(1)


RUNS = """query ($filter: RunsFilter) { runsOrError(filter: $filter) { ... on Runs {
  results { runId status startTime tags { key } } } } }"""


def sensor_runs(ui: str, sensor: str, job: str) -> list[dict]:
    """The runs of `job` that `sensor` requested itself (not as a backfill), as the UI lists them."""
    tags = [{"key": "dagster/sensor_name", "value": sensor}]
    variables = {"filter": {"pipelineName": job, "tags": tags}}
    answer = requests.post(
        f"{ui}/graphql", json={"query": RUNS, "variables": variables}, timeout=10
    )
    runs = answer.json()["data"]["runsOrError"]["results"]
    for run in runs:
        assert re.fullmatch(r"[0-9a-f-]{36}", run["runId"]), run
    return [run for run in runs if {"key": "dagster/backfill"} not in run["tags"]]


def _wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"demo exited ({proc.returncode}) before {what}:\n{log.read_text()}"
            )
        try:
            if predicate():
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()}")


def _xfail_if_dagsters_pool_race(home: Path) -> None:
    """Dagster's race, not this project's, seen once in a suite of four (2026-12-05): a step
    that asks for a pool slot just as another step frees the last one registers unassigned
    (`has_unassigned_slots`, then `add_pending_step`, two transactions: the free's
    `assign_pending_steps` ran between them) and waits until some other step of the pool comes
    and goes. The in-process executor defers a run worker's interrupt while its step waits
    (only the multiprocess and step-delegating executors call `check_for_interrupts`), so
    the code server waits on that run worker until supervisord kills it. The signature: no
    slot claimed, a step still pending unassigned. Closest upstream report found:
    dagster-io/dagster#31243 (a single-process run's step blocked on a pool of 1)."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        pool = instance.event_log_storage.get_concurrency_info(DUCKDB_POOL)
        stuck = [step.step_key for step in pool.pending_steps if step.assigned_timestamp is None]
    if not pool.claimed_slots and stuck:
        pytest.xfail(f"Dagster's pool-claim race: {stuck} never given the free slot")


@pytest.mark.timeout(300)
def test_demo_comes_up_restarts_a_killed_program_and_one_ctrl_c_stops_everything(
    tmp_path: Path, energy_env
):
    ports = {name: free_port() for name in ("ui", "exchange", "market_data", "dashboard")}
    out = tmp_path / "demo.log"
    env = {**os.environ, **energy_env, "DAGSTER_INSTANCE": "sqlite", "PYTHONUNBUFFERED": "1"}
    env["ENERGY_PRICES_BACKFILL_DAYS"] = "0"
    env.pop("DAGSTER_HOME", None)
    command = [
        sys.executable,
        "-m",
        "energy_assets.cli",
        "demo",
        "--ui-port",
        str(ports["ui"]),
        "--exchange-port",
        str(ports["exchange"]),
        "--market-data-port",
        str(ports["market_data"]),
        "--dashboard-port",
        str(ports["dashboard"]),
        "--dagster-home",
        str(tmp_path / "dagster_home"),
        "--log-dir",
        str(tmp_path / "children"),
    ]
    with open(out, "w") as handle:
        demo = subprocess.Popen(command, env=env, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT)
    supervisord_log = Path(energy_env["ENERGY_DUCKDB_PATH"]).parent / "logs" / "supervisord.log"
    children = tmp_path / "children"
    try:
        ui = f"http://127.0.0.1:{ports['ui']}"
        _wait_for(
            lambda: requests.get(f"{ui}/server_info", timeout=2).ok,
            180,
            "the Dagster UI",
            demo,
            out,
        )
        assert "event=demo_starting" in out.read_text()
        # The UI serves this project's code location, and the instance is the demo's own.
        query = "{ workspaceOrError { ... on Workspace { locationEntries { name } } } }"
        answer = requests.post(f"{ui}/graphql", json={"query": query}, timeout=10).json()
        names = [e["name"] for e in answer["data"]["workspaceOrError"]["locationEntries"]]
        assert len(names) == 1 and names[0].startswith("energy_assets")
        written = (tmp_path / "dagster_home" / "dagster.yaml").read_text()
        assert written.startswith((REPO / "dagster.yaml").read_text())
        assert (tmp_path / "dagster_home" / "event_log.db").exists(), "one event log file"
        dashboard = f"http://127.0.0.1:{ports['dashboard']}/"
        _wait_for(lambda: requests.get(dashboard, timeout=5).ok, 60, "the dashboard", demo, out)
        # Deals flow into the capture buffer.
        segments = Path(energy_env["ENERGY_CAPTURE_DIR"]) / "segments"
        _wait_for(lambda: any(segments.glob("*.jsonl.open")), 30, "an open segment", demo, out)
        # The sensors drain the buffer and fetch the recent prices by themselves, as the UI's
        # Runs page shows (the same GraphQL): a drain succeeded, the recent prices' run started
        # (two days of every market's periods, ~340 requests, take minutes at the vendor's 50
        # a minute).
        for sensor, job, seen in (
            ("raw_trades_sensor", "drain_and_refresh", lambda run: run["status"] == "SUCCESS"),
            ("recent_prices_sensor", "__ASSET_JOB", lambda run: run["startTime"] is not None),
        ):
            _wait_for(
                lambda sensor=sensor, job=job, seen=seen: any(
                    map(seen, sensor_runs(ui, sensor, job))
                ),
                120,
                f"a run of {sensor} in the UI",
                demo,
                out,
            )

        # A program killed outright is started again, and serves again.
        spawned = dict(SPAWNED.findall(supervisord_log.read_text()))
        os.kill(int(spawned["dashboard"]), signal.SIGKILL)
        _wait_for(
            lambda: (
                dict(SPAWNED.findall(supervisord_log.read_text()))["dashboard"]
                != spawned["dashboard"]
            ),
            30,
            "the dashboard's restart",
            demo,
            out,
        )
        _wait_for(lambda: requests.get(dashboard, timeout=5).ok, 60, "the dashboard", demo, out)
        pids = {name: int(pid) for name, pid in SPAWNED.findall(supervisord_log.read_text())}
        programs = {"playground", "listener", "code", "webserver", "daemon", "dashboard"}
        assert programs <= pids.keys()

        began = time.monotonic()
        demo.send_signal(signal.SIGINT)
        assert demo.wait(90) == 0
        stop_seconds = time.monotonic() - began
    finally:
        if demo.poll() is None:
            demo.kill()
    log = supervisord_log.read_text()

    # Every program, and everything its process group started, is gone.
    for name, pid in pids.items():
        assert group_members(pid) == [], (name, log)
    shutdown = log.split("received SIGINT")[-1]
    stopped = re.findall(r"stopped: (\w+) \((.*?)\)", shutdown)
    assert {name for name, _ in stopped} == set(pids)
    # A program killed after its 30 s: the code server waits for its run workers to end.
    code_log = "\n".join((children / "code.log").read_text().splitlines()[-40:])
    if "SIGKILL" in shutdown:
        _xfail_if_dagsters_pool_race(tmp_path / "dagster_home")
    assert "SIGKILL" not in shutdown, f"every program stopped on its own signal\n{code_log}"
    # No library warns in the logs a user reads (Dagster's beta warning came with every run).
    logs = "".join(path.read_text() for path in children.glob("*.log"))
    assert not re.findall(r"[A-Za-z]+Warning: .*", logs)
    # Listener first, sealing its segment and exiting 0; playground last.
    assert stopped[0] == ("listener", "exit status 0") and stopped[-1][0] == "playground"
    # Nothing left open: every deal the listener counted is in a sealed (or drained) segment.
    capture = Path(energy_env["ENERGY_CAPTURE_DIR"])
    assert not list(capture.glob("segments/*.open"))
    listener_log = (children / "listener.log").read_text()
    last_status = [line for line in listener_log.splitlines() if "event=status" in line][-1]
    counted = int(re.search(r" deals=(\d+)", last_status).group(1))
    stored = sum(
        len(json.loads("[" + ",".join(path.read_text().splitlines()) + "]"))
        for path in [*capture.glob("segments/*.jsonl"), *capture.glob("drained/*.jsonl")]
    )
    assert stored == counted > 0
    assert stop_seconds < 60
    print(f"demo stopped in {stop_seconds:.1f}s")


def test_demo_refuses_taken_ports_before_starting_anything(tmp_path: Path, energy_env):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "energy_assets.cli",
                "demo",
                "--ui-port",
                str(port),
                "--exchange-port",
                str(free_port()),
                "--market-data-port",
                str(free_port()),
                "--no-dashboard",
                "--dagster-home",
                str(tmp_path / "home"),
            ],
            env={**os.environ, **energy_env},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert f"event=port_in_use what=ui host=127.0.0.1 port={port}" in result.stderr
    assert "demo_starting" not in result.stderr


def test_postgres_demo_without_a_server_runs_its_own(tmp_path: Path, monkeypatch):
    for name in ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_DB"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ENERGY_DUCKDB_PATH", str(tmp_path / "data" / "warehouse.duckdb"))
    port = free_port()
    options = DemoOptions(
        dagster_instance="postgres", dagster_home=tmp_path / "home", postgres_port=port
    )
    env, sections = plan(options)  # creates the cluster
    assert env["DAGSTER_PG_PORT"] == str(port)
    assert env["DAGSTER_PG_DB"] == "postgres"  # the cluster's own database
    # The server starts before Dagster and stops after it.
    assert int(option(sections["postgres"], "priority")) < int(option(sections["code"], "priority"))
    server = subprocess.Popen(
        shlex.split(option(sections["postgres"], "command")),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        from dagster import DagsterInstance

        deadline = time.monotonic() + 60
        while not port_in_use("127.0.0.1", port):
            assert time.monotonic() < deadline and server.poll() is None
            time.sleep(0.2)
        prepare_dagster_home(tmp_path / "home", "postgres")
        for name, value in env.items():
            if name.startswith("DAGSTER_"):
                monkeypatch.setenv(name, value)
        with DagsterInstance.get() as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert instance.get_runs() == []
    finally:
        os.killpg(server.pid, signal.SIGINT)  # supervisord's stop signal for it
        assert server.wait(30) is not None
        shutil.rmtree(postgres_root(), ignore_errors=True)


def test_without_the_playground_the_demo_uses_the_configured_services(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ENERGY_EXCHANGE_URL", "ws://exchange.example.invalid:5050")
    monkeypatch.setenv("ENERGY_MARKET_DATA_URL", "http://vendor.example.invalid/v1")
    monkeypatch.setenv("ENERGY_CAPTURE_DIR", "data/capture")
    monkeypatch.delenv("ENERGY_DUCKDB_PATH", raising=False)
    monkeypatch.delenv("DAGSTER_INSTANCE", raising=False)
    options = DemoOptions(playground=False, dashboard=False, dagster_home="data/home")
    env, sections = plan(options)

    assert set(sections) == {"listener", "code", "webserver", "daemon"}
    assert option(sections["listener"], "command").endswith("energy_assets.cli listen")
    assert env["ENERGY_EXCHANGE_URL"] == "ws://exchange.example.invalid:5050"
    assert env["ENERGY_MARKET_DATA_URL"] == "http://vendor.example.invalid/v1"
    # Absolute, so run workers started from another directory find the same files.
    assert env["ENERGY_CAPTURE_DIR"] == str(tmp_path / "data" / "capture")
    assert env["DAGSTER_HOME"] == str(tmp_path / "data" / "home")
    assert env["DAGSTER_INSTANCE"] == "sqlite"
    assert option(sections["daemon"], "stdout_logfile") == str(
        tmp_path / "data" / "logs" / "daemon.log"
    )
