"""Fixtures shared by every test: free ports, a temporary DAGSTER_HOME and DuckDB file,
the platform's environment, and a playground on free ports."""

from __future__ import annotations

import shutil
import signal
import socket
from collections.abc import Callable, Iterator
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
