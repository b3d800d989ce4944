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
