"""Fixtures shared by every test: free ports, a temporary DAGSTER_HOME and DuckDB file,
the platform's environment, and a playground on free ports."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    """The test process's stop signals as in a foreground terminal, however it was started.

    A shell starts a background job with SIGINT ignored; Dagster's first in-process run then
    gives SIGTERM that same disposition (dagster-io/dagster#25749), and every process spawned
    afterwards ignores SIGTERM: Dagster's own log tailer, which it waits 30 s for, and the
    children the tests stop.
    """
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGTERM) == signal.SIG_IGN:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


#: The longest tests' seconds on the idle 2-core machine under `make test` (its slowest
#: durations), by node id or its prefix. The workers' queues are balanced with them: a test not
#: here counts as SLOW_SECONDS if marked slow, else FAST_SECONDS.
SECONDS = {
    "tests/operations/test_demo.py::test_demo_comes_up": 45,
    "tests/operations/test_end_to_end.py": 34,
    "tests/operations/test_pool_slots.py::test_with_the_daemon": 32,
    "tests/operations/test_pool_slots.py::test_a_dead_cli": 20,
    "tests/journals/test_rebuild.py::test_a_lost_warehouse": 27,
    "tests/journals/test_rebuild.py::test_a_rebuild_killed": 15,
    "tests/journals/test_rebuild.py::test_a_rebuild_refuses": 10,
    "tests/journals/test_rebuild.py::test_a_warehouse_from_before": 10,
    "tests/desk/test_push.py::test_a_stalled_client": 25,
    "tests/desk/test_push.py::test_pages_resume": 12,
    "tests/desk/test_login.py::test_no_tampered": 18,
    "tests/desk/test_login.py::test_the_ui_gate": 15,
    "tests/desk/test_login.py::test_each_trader": 9,
    "tests/desk/test_edges.py::test_a_request_head": 12,
    "tests/desk/test_edges.py::test_1100_half_sent": 12,
    "tests/desk/test_pages.py::test_torn_last_line": 9,
    "tests/desk/test_pages.py::test_prices_confirmed": 11,
    "tests/prices/test_planner_daemon.py": 18,
    "tests/prices/test_cli.py::test_partition_ranges": 11,
    "tests/trades/test_assets.py::test_two_drains": 16,
    "tests/trades/test_assets.py::test_checks_fail": 8,
    "tests/trades/test_daemon.py": 16,
    "tests/trades/test_gaps.py::test_a_frozen_listener": 15,
    "tests/trades/test_gaps.py::test_a_half_open_exchange": 13,
    "tests/operations/test_dg.py::test_dg_dev": 14,
    "tests/test_definitions.py::test_dg_check_defs": 11,
    "tests/exposure/test_store.py::test_incremental_refresh": 7,
}
SLOW_SECONDS = 4.0
FAST_SECONDS = 0.5


def _seconds(item: pytest.Item) -> float:
    known = [prefix for prefix in SECONDS if item.nodeid.startswith(prefix)]
    if known:
        return SECONDS[max(known, key=len)]
    return SLOW_SECONDS if item.get_closest_marker("slow") else FAST_SECONDS


@pytest.hookimpl(trylast=True)  # after `-m` and `-k` have deselected
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Each worker's queue starts with its share of the long tests, longest first.

    `--dist worksteal` gives worker k the k-th contiguous quarter of this list, runs it in
    order, and a worker that runs dry steals the end of another's queue. So the long (mostly
    waiting) tests are dealt here to the queue with the fewest seconds, which starts with
    them, and the short ones fill the rest in file order (a module's fixtures stay on one
    worker): no long test starts last while the other workers sit idle. Every worker sorts the
    same collection the same way, as xdist requires."""
    workers = getattr(config, "workerinput", {}).get("workercount", 1)
    sizes, left = [], len(items)
    for k in range(workers):  # as worksteal splits the collection
        sizes.append(left // (workers - k))
        left -= sizes[-1]
    weight = {item.nodeid: _seconds(item) for item in items}
    queues: list[list[pytest.Item]] = [[] for _ in sizes]
    totals = [0.0] * workers
    long_ones = [item for item in items if weight[item.nodeid] >= SLOW_SECONDS]
    for item in sorted(long_ones, key=lambda item: -weight[item.nodeid]):
        open_queues = [k for k in range(workers) if len(queues[k]) < sizes[k]]
        k = min(open_queues, key=lambda k: totals[k])
        queues[k].append(item)
        totals[k] += weight[item.nodeid]
    rest = iter(item for item in items if weight[item.nodeid] < SLOW_SECONDS)
    for k, queue in enumerate(queues):
        queue.extend(next(rest) for _ in range(sizes[k] - len(queue)))
    items[:] = [item for queue in queues for item in queue]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh Dagster instance directory holding the project's dagster.yaml."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


@pytest.fixture
def energy_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The platform's settings pointed at a temporary data directory."""
    env = {
        "ENERGY_CAPTURE_DIR": str(tmp_path / "capture"),
        "ENERGY_DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"),
        "ENERGY_DASHBOARD_DIR": str(tmp_path / "dashboard"),
        # The vendor budget holds bulk requests off around each 10-minute slot, so a test that
        # fetches prices would take 5 s or 60 s by the clock. It has its own tests
        # (tests/prices/test_budget.py), which configure it themselves.
        "ENERGY_MARKET_DATA_BUDGET": "off",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def start_playground() -> Iterator[Callable[..., object]]:
    """`start_playground(exchange=ExchangeOptions(...), market_data=MarketDataOptions(...))`
    starts both stand-ins on free loopback ports and stops them after the test."""
    from energy_assets.playground.server import Playground

    started = []

    def start(**options):
        # Port 0: the OS picks a free port at bind time, so no other process can take it
        # in between; pass exchange_port/market_data_port to choose them.
        options.setdefault("exchange_port", 0)
        options.setdefault("market_data_port", 0)
        playground = Playground(**options).start()
        started.append(playground)
        return playground

    yield start
    for playground in started:
        playground.stop()


@dataclass
class Daemon:
    """A real `dagster-daemon` started by `start_daemon`, its output in `log`."""

    process: subprocess.Popen
    log: Path

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def assert_running(self) -> None:
        assert self.process.poll() is None, self.tail()


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """`start_daemon()` runs the real `dagster-daemon` on the project's definitions (or on
    `target`, e.g. `start_daemon("-f", path)`) in its own session, with this process's
    environment unless `env` is given; it is stopped (SIGTERM, then SIGKILL) after the test."""
    started: list[Daemon] = []

    def start(*target: str, env: dict[str, str] | None = None) -> Daemon:
        if not target:
            workspace = tmp_path / "workspace.yaml"
            workspace.write_text(
                "load_from:\n  - python_module:\n      module_name: energy_assets.definitions\n"
                f"      working_directory: {REPO}\n"
            )
            target = ("-w", str(workspace))
        log = tmp_path / f"daemon-{len(started)}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [str(Path(sys.executable).parent / "dagster-daemon"), "run", *target],
                cwd=REPO,
                env=os.environ.copy() if env is None else env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started.append(Daemon(process, log))
        return started[-1]

    yield start
    for daemon in started:
        stop_process_group(daemon.process)


def stop_process_group(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM to the process's group, SIGKILL after `timeout` seconds."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
