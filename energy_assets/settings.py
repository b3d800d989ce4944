"""The environment, read once into typed settings with every default in one place.

Each setting has one `ENERGY_...` variable and one default here (README, "Settings"). Processes
outside Dagster (the listener, the desk, the CLI) read `settings()`. Dagster resources are
configured with `from_env`, so a run resolves each variable where it executes and the UI shows
which variable a value comes from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

#: The playground's ports, which the default URLs point at, and the Dagster UI's.
DEFAULT_EXCHANGE_PORT = 5050
DEFAULT_MARKET_DATA_PORT = 5060
DEFAULT_UI_PORT = 3000
DEFAULT_EXCHANGE_URL = f"ws://localhost:{DEFAULT_EXCHANGE_PORT}"
DEFAULT_MARKET_DATA_URL = f"http://localhost:{DEFAULT_MARKET_DATA_PORT}"
DEFAULT_CAPTURE_DIR = "data/capture"
DEFAULT_DUCKDB_PATH = "data/warehouse.duckdb"
DEFAULT_DASHBOARD_DIR = "data/dashboard"
#: The archive keeps its files 7 years: MiFID II (art. 16(6), 25(1)) and REMIT (art. 8)
#: require transaction records for 5 years, which a regulator may extend to 7.
DEFAULT_ARCHIVE_RETENTION_DAYS = 2557
DEFAULT_DASHBOARD_HOST = "127.0.0.1"
DEFAULT_DASHBOARD_PORT = 8050
DEFAULT_DRAIN_INTERVAL_SECONDS = 30.0
#: ~4,000 deal frames (~260 B each): 30 s of deals at 135 deals/s, above the desk's 100/s peak.
DEFAULT_DRAIN_EARLY_BYTES = 1024 * 1024
DEFAULT_RUN_RETENTION_DAYS = 7.0
#: `recent_prices_sensor` asks for the reference prices never stored from this many days
#: before today to the hour under way; -1: never.
DEFAULT_PRICES_BACKFILL_DAYS = 2
#: Drained segments (and quarantine files) are deleted this long after they were written.
DEFAULT_CAPTURE_RETENTION_HOURS = 72.0
#: The listener seals its open segment once it is this old (seconds) ...
DEFAULT_CAPTURE_SEAL_SECONDS = 1.0
#: ... or holds this many frames.
DEFAULT_CAPTURE_SEAL_FRAMES = 10_000
#: Fetches in flight at once in one reference-price run.
DEFAULT_MARKET_DATA_CONCURRENCY = 16
#: `ENERGY_MARKET_DATA_BUDGET`: empty means a SQLite file beside the warehouse; `off` lifts
#: the budget (benchmarks and the end-to-end test only).
BUDGET_OFF = "off"
BUDGET_FILE = "market_data_budget.sqlite"
#: A desk login lasts this long; then the browser logs in again.
DEFAULT_DESK_SESSION_HOURS = 12.0


@dataclass(frozen=True)
class Settings:
    """Where the platform finds its two external services and keeps its data."""

    exchange_url: str = DEFAULT_EXCHANGE_URL
    market_data_url: str = DEFAULT_MARKET_DATA_URL
    capture_dir: Path = Path(DEFAULT_CAPTURE_DIR)
    duckdb_path: Path = Path(DEFAULT_DUCKDB_PATH)
    dashboard_dir: Path = Path(DEFAULT_DASHBOARD_DIR)
    #: The journals' archive: a local path or any fsspec URL (`s3://bucket/prefix`); empty
    #: means `<capture_dir>/archive`.
    archive_url: str = ""
    archive_retention_days: int = DEFAULT_ARCHIVE_RETENTION_DAYS

    #: The trade sensor drains at most this often ...
    drain_interval_seconds: float = DEFAULT_DRAIN_INTERVAL_SECONDS
    #: ... or at once when the sealed segments waiting hold this many bytes.
    drain_early_bytes: int = DEFAULT_DRAIN_EARLY_BYTES
    #: Dagster runs (and their event logs) older than this are deleted daily.
    run_retention_days: float = DEFAULT_RUN_RETENTION_DAYS
    prices_backfill_days: int = DEFAULT_PRICES_BACKFILL_DAYS

    @property
    def archive(self) -> str:
        """Where the journals' archive lives."""
        return self.archive_url or str(self.capture_dir / "archive")

    dashboard_host: str = DEFAULT_DASHBOARD_HOST
    dashboard_port: int = DEFAULT_DASHBOARD_PORT
    #: The desk's login (energy_assets/desk/auth.py): all five set, or none (loopback only).
    desk_oidc_issuer: str = ""
    desk_oidc_client_id: str = ""
    desk_oidc_client_secret: str = field(default="", repr=False)
    desk_session_secret: str = field(default="", repr=False)
    desk_users: str = ""
    desk_session_hours: float = DEFAULT_DESK_SESSION_HOURS

    capture_retention_hours: float = DEFAULT_CAPTURE_RETENTION_HOURS
    capture_seal_seconds: float = DEFAULT_CAPTURE_SEAL_SECONDS
    capture_seal_frames: int = DEFAULT_CAPTURE_SEAL_FRAMES
    market_data_concurrency: int = DEFAULT_MARKET_DATA_CONCURRENCY
    market_data_budget: str = ""

    @property
    def capture_retention(self) -> timedelta:
        return timedelta(hours=self.capture_retention_hours)

    @property
    def market_data_budget_enabled(self) -> bool:
        return self.market_data_budget.strip().lower() != BUDGET_OFF

    @property
    def market_data_budget_path(self) -> str:
        """The vendor budget's SQLite file, shared by every run and process."""
        chosen = self.market_data_budget.strip()
        if chosen and chosen.lower() != BUDGET_OFF:
            return chosen
        return str(Path(self.duckdb_path).parent / BUDGET_FILE)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return cls(
            exchange_url=env.get("ENERGY_EXCHANGE_URL") or DEFAULT_EXCHANGE_URL,
            market_data_url=env.get("ENERGY_MARKET_DATA_URL") or DEFAULT_MARKET_DATA_URL,
            capture_dir=Path(env.get("ENERGY_CAPTURE_DIR") or DEFAULT_CAPTURE_DIR),
            duckdb_path=Path(env.get("ENERGY_DUCKDB_PATH") or DEFAULT_DUCKDB_PATH),
            dashboard_dir=Path(env.get("ENERGY_DASHBOARD_DIR") or DEFAULT_DASHBOARD_DIR),
            archive_url=env.get("ENERGY_ARCHIVE_URL") or "",
            archive_retention_days=int(
                env.get("ENERGY_ARCHIVE_RETENTION_DAYS") or DEFAULT_ARCHIVE_RETENTION_DAYS
            ),
            dashboard_host=env.get("ENERGY_DASHBOARD_HOST") or DEFAULT_DASHBOARD_HOST,
            dashboard_port=int(env.get("ENERGY_DASHBOARD_PORT") or DEFAULT_DASHBOARD_PORT),
            desk_oidc_issuer=env.get("ENERGY_DESK_OIDC_ISSUER") or "",
            desk_oidc_client_id=env.get("ENERGY_DESK_OIDC_CLIENT_ID") or "",
            desk_oidc_client_secret=env.get("ENERGY_DESK_OIDC_CLIENT_SECRET") or "",
            desk_session_secret=env.get("ENERGY_DESK_SESSION_SECRET") or "",
            desk_users=env.get("ENERGY_DESK_USERS") or "",
            desk_session_hours=float(
                env.get("ENERGY_DESK_SESSION_HOURS") or DEFAULT_DESK_SESSION_HOURS
            ),
            drain_interval_seconds=float(
                env.get("ENERGY_DRAIN_INTERVAL_SECONDS") or DEFAULT_DRAIN_INTERVAL_SECONDS
            ),
            drain_early_bytes=int(env.get("ENERGY_DRAIN_EARLY_BYTES") or DEFAULT_DRAIN_EARLY_BYTES),
            run_retention_days=float(
                env.get("ENERGY_RUN_RETENTION_DAYS") or DEFAULT_RUN_RETENTION_DAYS
            ),
            prices_backfill_days=int(
                env.get("ENERGY_PRICES_BACKFILL_DAYS") or DEFAULT_PRICES_BACKFILL_DAYS
            ),
            capture_retention_hours=float(
                env.get("ENERGY_CAPTURE_RETENTION_HOURS") or DEFAULT_CAPTURE_RETENTION_HOURS
            ),
            capture_seal_seconds=float(
                env.get("ENERGY_CAPTURE_SEAL_SECONDS") or DEFAULT_CAPTURE_SEAL_SECONDS
            ),
            capture_seal_frames=int(
                env.get("ENERGY_CAPTURE_SEAL_FRAMES") or DEFAULT_CAPTURE_SEAL_FRAMES
            ),
            market_data_concurrency=int(
                env.get("ENERGY_MARKET_DATA_CONCURRENCY") or DEFAULT_MARKET_DATA_CONCURRENCY
            ),
            market_data_budget=env.get("ENERGY_MARKET_DATA_BUDGET") or "",
        )


def settings() -> Settings:
    """The settings of this process, from its environment now."""
    return Settings.from_env()


def from_env(name: str, default: str | int, environ: dict[str, str] | None = None):
    """A resource field's value: `dg.EnvVar(name)` (`dg.EnvVar.int` for an int default) when
    the environment sets `name`, resolved by Dagster where the run executes; else `default`."""
    import dagster as dg

    env = os.environ if environ is None else environ
    if not env.get(name):
        return default
    return dg.EnvVar.int(name) if isinstance(default, int) else dg.EnvVar(name)
