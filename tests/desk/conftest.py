"""Live desk fixtures: `energy-assets dashboard` as a real process on a free loopback port,
a capture buffer written by the real `CaptureBuffer`, and headless Chromium via Playwright."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from energy_assets.desk.live import LiveDesk, _prices_for_marking
from energy_assets.exposure.positions import EXPOSURE_SCHEMA, PERIOD_KEY, mark
from energy_assets.markets import hour_period
from energy_assets.tables import PRICE_ROW
from energy_assets.trades.buffer import CaptureBuffer
from energy_assets.trades.deal import Deal, validate_deal
from tests.conftest import REPO, free_port


def live_positions(desk: LiveDesk) -> pl.DataFrame:
    """The desk's own book, the buffer's deals alone, as `trader_exposure` rows marked with the
    published prices: what the desk computes before the batch layer confirms any of it."""
    return (
        mark(desk.book, _prices_for_marking(desk.prices))
        .sort(PERIOD_KEY)
        .collect()
        .cast(EXPOSURE_SCHEMA)
    )


CHROMIUM = "/usr/bin/chromium"


class DeskProcess:
    """`energy-assets dashboard` on a free port, logging to a file; `restart()` keeps the port."""

    def __init__(
        self,
        capture: Path,
        published: Path,
        log: Path,
        port: int | None = None,
        env: dict[str, str] | None = None,
        fd_limit: int | None = None,
    ):
        """`fd_limit`: the service's descriptor limit (`ulimit -n`), as a service manager sets."""
        self.capture, self.published, self.log_path = capture, published, log
        self.env = env or {}  # added to the environment: the login's settings
        self.port = port or free_port()
        self.fd_limit = fd_limit
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> DeskProcess:
        env = {
            **os.environ,
            "ENERGY_CAPTURE_DIR": str(self.capture),
            "ENERGY_DASHBOARD_DIR": str(self.published),
            # Points at a file that does not exist: the service must never need it.
            "ENERGY_DUCKDB_PATH": str(self.capture.parent / "never-created.duckdb"),
            **self.env,
        }
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "energy_assets.cli", "dashboard", "--port", str(self.port)],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=self._limit_fds if self.fd_limit else None,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text()
            try:
                self.health()
                return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"desk did not start:\n{self.log_path.read_text()}")

    def _limit_fds(self) -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.fd_limit, self.fd_limit))

    def health(self) -> dict:
        with urllib.request.urlopen(self.url + "/health", timeout=5) as answer:
            return json.loads(answer.read())

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def restart(self) -> DeskProcess:
        self.stop()
        return self.start()


@pytest.fixture
def desk_dirs(tmp_path: Path) -> tuple[Path, Path]:
    capture, published = tmp_path / "capture", tmp_path / "dashboard"
    capture.mkdir()
    return capture, published


@pytest.fixture
def start_desk(desk_dirs, tmp_path) -> Iterator:
    """`start_desk()` runs the service on the test's capture and published directories."""
    started: list[DeskProcess] = []

    def start(**options) -> DeskProcess:
        capture, published = desk_dirs
        process = DeskProcess(capture, published, tmp_path / "desk.log", **options).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def deal(deal_id: int, trader: str = "alice", **fields) -> Deal:
    values = {
        "id": f"{deal_id:032x}",
        "price": 40.0,
        "quantity": 2.0,
        "direction": "buy",
        "delivery_day": "2026-12-02",
        "delivery_hour": "12-13",
        "trader_id": trader,
        "execution_time": "2026-12-01T10:00:00+00:00",
    } | fields
    return validate_deal(values)


def write_deals(capture: Path, deals: list[Deal], seal: bool = True) -> CaptureBuffer:
    """Append deals with the listener's own buffer code; sealed unless asked not to."""
    buffer = CaptureBuffer(capture)
    for item in deals:
        buffer.append(item, datetime.now(UTC))
    if seal:
        buffer.seal()
    return buffer


def write_listener_state(capture: Path, **state) -> None:
    state.setdefault("heartbeat", datetime.now(UTC).isoformat())
    state.setdefault("connected", True)
    CaptureBuffer(capture).write_state(state)


@pytest.fixture
def browser() -> Iterator:
    """Headless Debian Chromium driven by Playwright; fails the test on any page error."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        yield chromium
        chromium.close()


# The real listener process, from the trade-capture fixtures.
from tests.trades.conftest import listener_process  # noqa: E402, F401


def desk_env(issuer: str, users: Path, **more: str) -> dict[str, str]:
    """The desk's login settings against the provider at `issuer`, users from `users`."""
    return {
        "ENERGY_DESK_OIDC_ISSUER": issuer,
        "ENERGY_DESK_OIDC_CLIENT_ID": "energy-desk",
        "ENERGY_DESK_OIDC_CLIENT_SECRET": "client-secret-for-tests",
        "ENERGY_DESK_SESSION_SECRET": "s" * 40,
        "ENERGY_DESK_USERS": str(users),
        **more,
    }


class OidcProvider:
    """A real OpenID Connect provider on loopback (`oidc-provider-mock` as a process): any
    client id and secret are accepted; its login form takes the email a user logs in as."""

    def __init__(self, log: Path):
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "oidc_provider_mock", "--port", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "NO_COLOR": "1"},
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(
                    self.issuer + "/.well-known/openid-configuration", timeout=5
                ):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"the OIDC provider did not start:\n{log.read_text()}")

    def desk_env(self, users: Path, **more: str) -> dict[str, str]:
        return desk_env(self.issuer, users, **more)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(15)


@pytest.fixture(scope="module")
def oidc_provider(tmp_path_factory) -> Iterator[OidcProvider]:
    provider = OidcProvider(tmp_path_factory.mktemp("oidc") / "provider.log")
    yield provider
    provider.stop()


def hour_prices(rows: list[tuple]) -> pl.DataFrame:
    """`prices.parquet` of default-market hours: `(day, label, value, last_update, fetched_at)`
    each, the label Berlin's local hour, as the desk's deals name them."""
    periods = [hour_period("DE", day, label) for day, label, *_ in rows]
    return pl.DataFrame(
        {
            "market": [p.market for p in periods],
            "delivery_start": [p.delivery_start for p in periods],
            "delivery_end": [p.delivery_end for p in periods],
            "value": [r[2] for r in rows],
            "currency": ["EUR"] * len(rows),
            "last_update": [r[3] for r in rows],
            "fetched_at": [r[4] for r in rows],
        },
        schema=PRICE_ROW,
    )
