"""Which Dagster instance the demo and the tests run on, chosen by `DAGSTER_INSTANCE`.

- `sqlite` (default): `dagster.yaml`, everything under `DAGSTER_HOME` in SQLite files.
- `postgres`: `dagster.postgres.yaml`, runs, event logs and schedule/sensor state in the
  PostgreSQL database named by the `DAGSTER_PG_*` variables.

Both files live at the repository root; `prepare_dagster_home` writes the chosen one to
`$DAGSTER_HOME/dagster.yaml`, refreshing it on every start so an edit reaches the demo. For
SQLite it adds the one setting that needs a path, so the file at the root names none and `dg`
commands read it from any shell, DAGSTER_HOME set or not.
"""

from __future__ import annotations

import json
import os
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
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    text = instance_template(kind).read_text()
    if kind == "sqlite":
        # Every run's events in one file, $DAGSTER_HOME/event_log.db, instead of Dagster's
        # default of a file per run (each a whole empty schema, most of the instance's
        # growth at the batch cadence). PostgreSQL has no such overhead.
        text += (
            "\nevent_log_storage:\n"
            "  module: dagster.core.storage.event_log\n"
            "  class: ConsolidatedSqliteEventLogStorage\n"
            f"  config:\n    base_dir: {json.dumps(str(home))}\n"
        )
    target = home / "dagster.yaml"
    target.write_text(text)
    return target


def missing_postgres_env(environ: Mapping[str, str] | None = None) -> list[str]:
    env = os.environ if environ is None else environ
    return [name for name in POSTGRES_ENV if name not in env]
