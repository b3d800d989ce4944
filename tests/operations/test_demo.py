"""`energy-assets demo` as an operator runs it (on free ports): everything comes up, the UI
answers, and one Ctrl-C stops every child and every grandchild with nothing lost."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from energy_assets.operations.demo import Demo, DemoOptions
from energy_assets.operations.instance import REPO
from energy_assets.operations.supervisor import live_group_members
from tests.conftest import free_port

# Seconds or more: `energy-assets demo` with every child.
pytestmark = pytest.mark.slow

STARTED = re.compile(r"event=child_started child=(\w+) pid=(\d+)")


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


@pytest.mark.timeout(240)
def test_demo_comes_up_and_one_ctrl_c_stops_everything(tmp_path: Path, energy_env):
    ports = {name: free_port() for name in ("ui", "exchange", "market_data", "dashboard")}
    out = tmp_path / "demo.log"
    env = {**os.environ, **energy_env, "DAGSTER_INSTANCE": "sqlite", "PYTHONUNBUFFERED": "1"}
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
        "--backfill-days",
        "0",
        "--log-dir",
        str(tmp_path / "children"),
    ]
    with open(out, "w") as handle:
        demo = subprocess.Popen(command, env=env, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT)
    try:
        ui = f"http://127.0.0.1:{ports['ui']}"
        _wait_for(
            lambda: requests.get(f"{ui}/server_info", timeout=2).ok,
            180,
            "the Dagster UI",
            demo,
            out,
        )
        _wait_for(lambda: "event=demo_ready" in out.read_text(), 30, "the banner", demo, out)
        # The UI serves this project's code location, and the instance is the demo's own.
        query = "{ workspaceOrError { ... on Workspace { locationEntries { name } } } }"
        answer = requests.post(f"{ui}/graphql", json={"query": query}, timeout=10).json()
        names = [e["name"] for e in answer["data"]["workspaceOrError"]["locationEntries"]]
        assert len(names) == 1 and names[0].startswith("energy_assets")
        written = (tmp_path / "dagster_home" / "dagster.yaml").read_text()
        assert written.startswith((REPO / "dagster.yaml").read_text())
        assert (tmp_path / "dagster_home" / "event_log.db").exists(), "one event log file"
        assert requests.get(f"http://127.0.0.1:{ports['dashboard']}/", timeout=5).status_code < 500
        # Deals flow into the capture buffer and the start-up backfill was asked for.
        segments = Path(energy_env["ENERGY_CAPTURE_DIR"]) / "segments"
        _wait_for(
            lambda: "event=oneshot_finished child=backfill" in out.read_text(),
            60,
            "the start-up backfill request",
            demo,
            out,
        )
        assert "returncode=0" in next(
            line for line in out.read_text().splitlines() if "oneshot_finished" in line
        )
        _wait_for(lambda: any(segments.glob("*.jsonl.open")), 30, "an open segment", demo, out)
        # The sensor drains the buffer by itself, and the run watcher says so, with the run id.
        runs_log = tmp_path / "children" / "runs.log"
        _wait_for(
            lambda: (
                runs_log.exists()
                and re.search(
                    r"event=run_succeeded run_id=[0-9a-f-]{36} job=drain_and_refresh "
                    r"trigger=sensor:raw_trades_sensor",
                    runs_log.read_text(),
                )
            ),
            90,
            "a drain run reported by the watcher",
            demo,
            out,
        )
        children = {name: int(pid) for name, pid in STARTED.findall(out.read_text())}
        assert {
            "playground",
            "listener",
            "dagster",
            "dashboard",
            "backfill",
            "runs",
        } <= children.keys()

        began = time.monotonic()
        demo.send_signal(signal.SIGINT)
        assert demo.wait(90) == 0
        stop_seconds = time.monotonic() - began
    finally:
        if demo.poll() is None:
            demo.kill()
    log = out.read_text()

    # Every child, and everything its process group started, is gone.
    for name, pid in children.items():
        assert live_group_members(pid) == [], (name, log)
    for name in ("listener", "dagster", "playground", "dashboard", "runs"):
        assert re.search(rf"event=child_stopped child={name} pid=\d+ returncode=", log), name
    assert "event=child_killed" not in log
    assert re.search(r"event=child_stopped child=listener pid=\d+ returncode=0", log)
    # Listener first, playground last.
    order = [m.group(1) for m in re.finditer(r"event=child_stopped child=(\w+)", log)]
    assert order[0] == "listener" and order[-1] == "playground"
    # Nothing left open: the listener sealed its segment, and every deal it counted is in a
    # sealed (or already drained) segment.
    capture = Path(energy_env["ENERGY_CAPTURE_DIR"])
    assert not list(capture.glob("segments/*.open"))
    listener_log = (tmp_path / "children" / "listener.log").read_text()
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
    assert "child_started" not in result.stderr


def test_postgres_demo_without_a_server_starts_its_own(tmp_path: Path, monkeypatch):
    for name in ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_DB"):
        monkeypatch.delenv(name, raising=False)
    root = tmp_path / "data"
    monkeypatch.setenv("ENERGY_DUCKDB_PATH", str(root / "warehouse.duckdb"))
    demo = Demo(
        DemoOptions(
            instance="postgres",
            dagster_home=tmp_path / "home",
            postgres_port=free_port(),
        )
    )
    env = demo.environment()
    try:
        demo._prepare_instance(env)
        assert env["DAGSTER_PG_PORT"] == str(demo.options.postgres_port)
        assert env["DAGSTER_PG_DB"] == "dagster"
        from dagster import DagsterInstance

        monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
        for name in (
            "DAGSTER_PG_HOST",
            "DAGSTER_PG_PORT",
            "DAGSTER_PG_USERNAME",
            "DAGSTER_PG_PASSWORD",
            "DAGSTER_PG_DB",
        ):
            monkeypatch.setenv(name, env[name])
        with DagsterInstance.get() as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert instance.get_runs() == []
    finally:
        if demo.postgres is not None:
            demo.postgres.stop()
            import shutil

            shutil.rmtree(demo.postgres.root, ignore_errors=True)


def test_without_the_playground_the_demo_uses_the_configured_services(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ENERGY_EXCHANGE_URL", "ws://exchange.example.invalid:5050")
    monkeypatch.setenv("ENERGY_MARKET_DATA_URL", "http://vendor.example.invalid/v1")
    monkeypatch.setenv("ENERGY_CAPTURE_DIR", "data/capture")
    monkeypatch.delenv("ENERGY_DUCKDB_PATH", raising=False)
    monkeypatch.delenv("DAGSTER_INSTANCE", raising=False)
    demo = Demo(DemoOptions(playground=False, dashboard_port=None, dagster_home="data/home"))
    env = demo.environment()
    names = [spec.name for spec in demo.children(env)]

    assert names == ["listener", "dagster"]
    assert env["ENERGY_EXCHANGE_URL"] == "ws://exchange.example.invalid:5050"
    assert env["ENERGY_MARKET_DATA_URL"] == "http://vendor.example.invalid/v1"
    # Absolute, so run workers started from another directory find the same files.
    assert env["ENERGY_CAPTURE_DIR"] == str(tmp_path / "data" / "capture")
    assert env["DAGSTER_HOME"] == str(tmp_path / "data" / "home")
    assert env["DAGSTER_INSTANCE"] == "sqlite"
    assert demo.dagster_log(env) == tmp_path / "data" / "logs" / "dagster.log"
