"""Fixtures shared by every test: free ports, a temporary DAGSTER_HOME and DuckDB file,
the platform's environment, and a playground on free ports."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings

REPO = Path(__file__).resolve().parent.parent

# No per-example deadline anywhere: five workers share two cores with Dagster daemons and
# Chromium, so an example's time measures the host (a 0.03 ms example once took 400 ms and
# failed the suite); speed is measured in benchmarks/.
settings.register_profile("suite", deadline=None)
settings.load_profile("suite")


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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files holding end-to-end (`slow`) tests first: the workers take whole files in this
    order, and a long file started last finished alone while the other workers sat idle."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)


#: Its own generator: Hypothesis seeds the `random` module in each example alike, in every
#: worker.
_PORTS = random.SystemRandom()
_GIVEN: set[int] = set()


def _ephemeral_low() -> int:
    """The first port the kernel hands out by itself (default 32768)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback port free now, below the kernel's ephemeral range. A port the kernel hands
    out (to a bind of port 0, or as the source port of any connection) can be taken between
    this pick and the server's own bind: a desk test failed once on "address already in use"
    that way. Each xdist worker picks from a range of its own, and never the same port twice:
    a webserver that took seconds to bind once found a desk of another worker's on its port."""
    low, high = 20_000, max(_ephemeral_low(), 20_001)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    span = max((high - low) // max(workers, 1), 1)
    low += span * (worker % max(workers, 1))
    while True:
        port = _PORTS.randrange(low, low + span)
        if port in _GIVEN:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            _GIVEN.add(port)
            return port


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


def stop_process_group(
    process: subprocess.Popen, timeout: float = 30, stop: int = signal.SIGTERM
) -> None:
    """`stop` to the process's group, SIGKILL after `timeout` seconds; then SIGKILL to what
    the group still holds once its leader is gone: a code server the daemon started outlived
    the suite when its shutdown hung (its clean-up thread died with the test's PostgreSQL; a
    code server hung so after a database failover in dagster-io/dagster#32226)."""
    if process.poll() is None:
        os.killpg(process.pid, stop)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
