"""The environment, read once into typed settings with every default in one place.

Each setting has one `ENERGY_...` variable and one default here (README, "Settings"), read by
one typed pydantic-settings object, `Settings`. Processes outside Dagster (the listener, the
desk, the CLI, the demo) read `settings()`. Dagster resources are configured with `from_env`,
so a run resolves each variable where it executes and the UI shows which variable a value
comes from.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

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
DEFAULT_DRAIN_INTERVAL_SECONDS = 60.0
#: ~4,000 deal frames (~260 B each): 30 s of deals at 135 deals/s, above the desk's 100/s peak.
DEFAULT_DRAIN_EARLY_BYTES = 1024 * 1024
#: `exposure_automation_sensor` evaluates its conditions at most this often: each tick that
#: sees a change stores its evaluations, which Dagster keeps 30 days, and each refresh is a
#: run. The drains refresh the exposure with the prices of the moment every minute deals
#: flow; this covers the quiet times, and the live desk shows every price at once anyway.
DEFAULT_EXPOSURE_AUTOMATION_SECONDS = 300
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
#: The most memory one `/replay` may use (MB); what a replay needs: docs/journals.md, "Replay".
DEFAULT_DESK_REPLAY_MEMORY_MB = 4096
DEFAULT_DESK_RENEW_HOURS = 24.0


#: A TCP port (0: any free one).
Port = Annotated[int, Field(ge=0, le=65535)]
#: A count that cannot be negative.
Count = Annotated[int, Field(ge=0)]
#: Durations, each bounded so that every instant computed from it exists: a retention of 10**6
#: days accepted once made every drain fail (`date - timedelta` before year 1).
DAY_S = 86_400
YEAR_H = 366 * 24
Seconds = Annotated[float, Field(ge=0, le=DAY_S)]
Hours = Annotated[float, Field(gt=0, le=YEAR_H)]
RetentionHours = Annotated[float, Field(ge=0, le=YEAR_H)]
RetentionDays = Annotated[float, Field(gt=0, le=3660)]


class Settings(BaseSettings):
    """Where the platform finds its two external services and keeps its data: each field read
    from `ENERGY_<FIELD>` (an empty variable counts as unset), typed and checked once."""

    model_config = SettingsConfigDict(
        env_prefix="ENERGY_",
        env_ignore_empty=True,
        frozen=True,
        extra="ignore",
        # `nan` and `inf` are no interval, retention or limit.
        allow_inf_nan=False,
    )

    exchange_url: str = DEFAULT_EXCHANGE_URL
    market_data_url: str = DEFAULT_MARKET_DATA_URL
    capture_dir: Path = Path(DEFAULT_CAPTURE_DIR)
    duckdb_path: Path = Path(DEFAULT_DUCKDB_PATH)
    dashboard_dir: Path = Path(DEFAULT_DASHBOARD_DIR)
    #: The journals' archive: a local path or any fsspec URL (`s3://bucket/prefix`); empty
    #: means `<capture_dir>/archive`.
    archive_url: str = ""
    #: At most a century.
    archive_retention_days: Annotated[int, Field(ge=1, le=36_600)] = DEFAULT_ARCHIVE_RETENTION_DAYS

    #: The trade sensor drains at most this often ...
    drain_interval_seconds: Seconds = DEFAULT_DRAIN_INTERVAL_SECONDS
    #: ... or at once when the sealed segments waiting hold this many bytes.
    drain_early_bytes: Count = DEFAULT_DRAIN_EARLY_BYTES
    #: The exposure's automation looks at most this often (read when the definitions load).
    exposure_automation_seconds: int = Field(
        default=DEFAULT_EXPOSURE_AUTOMATION_SECONDS, ge=1, le=DAY_S
    )
    #: Dagster runs (and their event logs) older than this are deleted daily.
    run_retention_days: RetentionDays = DEFAULT_RUN_RETENTION_DAYS
    #: -1: never; at most a year.
    prices_backfill_days: Annotated[int, Field(ge=-1, le=366)] = DEFAULT_PRICES_BACKFILL_DAYS

    dashboard_host: str = DEFAULT_DASHBOARD_HOST
    dashboard_port: Port = DEFAULT_DASHBOARD_PORT
    #: The desk's login (energy_assets/desk/auth.py): all five set, or none (loopback only).
    desk_oidc_issuer: str = ""
    desk_oidc_client_id: str = ""
    desk_oidc_client_secret: str = Field(default="", repr=False)
    desk_session_secret: str = Field(default="", repr=False)
    desk_users: str = ""
    desk_session_hours: Hours = DEFAULT_DESK_SESSION_HOURS
    desk_replay_memory_mb: Annotated[int, Field(ge=256, le=1 << 20)] = DEFAULT_DESK_REPLAY_MEMORY_MB
    desk_renew_hours: Hours = DEFAULT_DESK_RENEW_HOURS

    capture_retention_hours: RetentionHours = DEFAULT_CAPTURE_RETENTION_HOURS
    capture_seal_seconds: Seconds = DEFAULT_CAPTURE_SEAL_SECONDS
    capture_seal_frames: Annotated[int, Field(ge=1)] = DEFAULT_CAPTURE_SEAL_FRAMES
    market_data_concurrency: Annotated[int, Field(ge=1)] = DEFAULT_MARKET_DATA_CONCURRENCY
    market_data_budget: str = ""

    @property
    def archive(self) -> str:
        """Where the journals' archive lives."""
        return self.archive_url or str(self.capture_dir / "archive")

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
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings of `environ` (default: this process's environment now)."""
        if environ is None:
            return cls()
        prefix = cls.model_config["env_prefix"]
        given = {name: environ.get(prefix + name.upper()) for name in cls.model_fields}
        return cls.model_validate({name: value for name, value in given.items() if value})


def refusal(error: ValidationError, prefix: str = "ENERGY_", flags: bool = False) -> str:
    """What a `ValidationError` of settings says, one line a bad value, each naming its
    variable (and with `flags`, its option) and the value given, cut short."""
    lines = []
    for problem in error.errors(include_url=False):
        field = ".".join(str(part) for part in problem["loc"]) or "?"
        name = prefix + field.upper()
        if flags:
            name = f"--{field.replace('_', '-')} / {name}"
        given = repr(problem.get("input"))
        lines.append(
            f"{name}: {problem['msg']} (given {given[:60]}{'…' if len(given) > 60 else ''})"
        )
    return "bad setting:\n  " + "\n  ".join(lines)


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
