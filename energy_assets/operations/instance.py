"""Which Dagster instance the demo and the tests run on, chosen by `DAGSTER_INSTANCE`.

- `sqlite` (default): `dagster.yaml`, everything under `DAGSTER_HOME` in SQLite files.
- `postgres`: `dagster.postgres.yaml`, runs, event logs and schedule/sensor state in the
  PostgreSQL database named by the `DAGSTER_PG_*` variables.

Both files live at the repository root; `prepare_dagster_home` copies the chosen one to
`$DAGSTER_HOME/dagster.yaml`, refreshing it on every start so an edit reaches the demo.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
INSTANCE_FILES = {"sqlite": "dagster.yaml", "postgres": "dagster.postgres.yaml"}
#: Variables `dagster.postgres.yaml` reads.
POSTGRES_ENV = (
    "DAGSTER_PG_HOST",
    "DAGSTER_PG_PORT",
    "DAGSTER_PG_USERNAME",
    "DAGSTER_PG_PASSWORD",
    "DAGSTER_PG_DB",
)


def instance_kind(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    kind = (env.get("DAGSTER_INSTANCE") or "sqlite").strip().lower()
    if kind not in INSTANCE_FILES:
        raise ValueError(
            f"DAGSTER_INSTANCE must be one of {', '.join(INSTANCE_FILES)}, got {kind!r}"
        )
    return kind


def instance_template(kind: str) -> Path:
    return REPO / INSTANCE_FILES[kind]


def prepare_dagster_home(home: Path, kind: str) -> Path:
    """Creates `home` and writes the `kind` instance's dagster.yaml into it."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    shutil.copyfile(instance_template(kind), target)
    return target


def missing_postgres_env(environ: Mapping[str, str] | None = None) -> list[str]:
    env = os.environ if environ is None else environ
    return [name for name in POSTGRES_ENV if name not in env]


#: How the project's Dagster processes record a run's plan. By default Dagster writes one
#: `ASSET_MATERIALIZATION_PLANNED` event per partition when it creates a run (~8 ms each on
#: SQLite: a year's single-run backfill spends ~70 s on them, half of its bookkeeping, and
#: every 10-minute price schedule run ~0.4 s). With this setting it writes one event for the
#: run's whole range. Dagster then cannot tell which partitions of a failed run failed, so the
#: price report step records the failed hours itself (`prices.assets.mark_attempted`).
#: Read by whichever process creates runs: the webserver, the daemon, the CLI.
INSTANCE_ENVIRONMENT = {"DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "1"}


def apply_instance_environment(environ: dict[str, str] | None = None) -> None:
    """Sets `INSTANCE_ENVIRONMENT` in `environ` (default: this process), keeping any value
    already there, so a deployment can still choose otherwise."""
    env = os.environ if environ is None else environ
    for name, value in INSTANCE_ENVIRONMENT.items():
        env.setdefault(name, value)
