"""Fixtures of the operations tests: a private PostgreSQL server and a Dagster home of
either instance kind."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from energy_assets.operations.demo import prepare_dagster_home
from tests.conftest import free_port
from tests.postgres import LocalPostgres


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[LocalPostgres]:
    """One PostgreSQL server from Debian's packages for the whole session (initdb ≈ 2 s)."""
    with LocalPostgres(port=free_port()) as server:
        yield server


@pytest.fixture
def postgres_env(postgres_server: LocalPostgres) -> dict[str, str]:
    """A fresh database on the session's server, as the `DAGSTER_PG_*` variables."""
    database = f"dagster_{uuid.uuid4().hex[:12]}"
    postgres_server.create_database(database)
    return postgres_server.env(database)


@pytest.fixture(params=["sqlite", "postgres"])
def instance_home(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, Path, dict[str, str]]:
    """`(kind, DAGSTER_HOME, extra env)` for each instance kind, set in this process's env."""
    kind = request.param
    home = tmp_path / f"dagster_home_{kind}"
    prepare_dagster_home(home, kind)
    env = {"DAGSTER_HOME": str(home), "DAGSTER_INSTANCE": kind}
    if kind == "postgres":
        env.update(request.getfixturevalue("postgres_env"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # Creates the storage now: processes started together would race to create its tables.
    from dagster import DagsterInstance

    with DagsterInstance.get():
        pass
    return kind, home, env
