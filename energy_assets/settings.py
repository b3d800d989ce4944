"""The environment, read once into typed settings with every default in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_EXCHANGE_URL = "ws://localhost:5050"
DEFAULT_MARKET_DATA_URL = "http://localhost:5060"
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

    @property
    def archive(self) -> str:
        """Where the journals' archive lives."""
        return self.archive_url or str(self.capture_dir / "archive")

    dashboard_host: str = DEFAULT_DASHBOARD_HOST
    dashboard_port: int = DEFAULT_DASHBOARD_PORT

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
            drain_interval_seconds=float(
                env.get("ENERGY_DRAIN_INTERVAL_SECONDS") or DEFAULT_DRAIN_INTERVAL_SECONDS
            ),
            drain_early_bytes=int(env.get("ENERGY_DRAIN_EARLY_BYTES") or DEFAULT_DRAIN_EARLY_BYTES),
            run_retention_days=float(
                env.get("ENERGY_RUN_RETENTION_DAYS") or DEFAULT_RUN_RETENTION_DAYS
            ),
        )


def settings() -> Settings:
    """The settings of this process, from its environment now."""
    return Settings.from_env()
