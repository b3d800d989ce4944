"""A throwaway PostgreSQL server from Debian's packages, for the tests and the demo.

The production-shaped Dagster instance (`dagster.postgres.yaml`) keeps runs, event logs and
schedule/sensor ticks in PostgreSQL. On a developer's machine and in CI nothing runs one, so
this module starts a private server from `/usr/lib/postgresql/*/bin` (package `postgresql`,
installed by `.ci/system-deps.sh`): `initdb` into a directory, `pg_ctl start` on a loopback
port, `createdb`, and `pg_ctl stop` at the end.

PostgreSQL refuses to run as root, and the tests and CI run as root: the server then runs as
the `postgres` system user (created by the Debian package) through `runuser`, and owns its
data directory.
"""

from __future__ import annotations

import glob
import hashlib
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from energy_assets.logs import event_logger

log = event_logger("postgres")

#: The system user the server runs as when we are root (Debian's package creates it).
SERVER_USER = "postgres"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries: install Debian's `postgresql` (`make setup` does)."""


def find_bin_dir() -> Path:
    """The newest `/usr/lib/postgresql/<major>/bin` holding `initdb` and `pg_ctl`."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: (
            int(Path(path).parent.parent.name) if Path(path).parent.parent.name.isdigit() else 0
        ),
    )
    if candidates:
        return Path(candidates[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise PostgresUnavailable(
        "PostgreSQL server binaries not found (no /usr/lib/postgresql/*/bin/initdb): "
        "run `make setup` or `bash .ci/system-deps.sh`"
    )


def _as_server_user() -> list[str]:
    """Prefix that runs a command as the server's user when we are root, else nothing."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", SERVER_USER, "--"]


def server_can_enter(path: Path) -> bool:
    """Whether the server's user can reach `path` (every parent directory searchable)."""
    if os.geteuid() != 0:
        return True
    probe = Path(path)
    while not probe.exists():
        probe = probe.parent
    result = subprocess.run([*_as_server_user(), "test", "-x", str(probe)], capture_output=True)
    return result.returncode == 0


def default_root(preferred: Path) -> Path:
    """`preferred` if the server's user can reach it, else a spot under /var/tmp.

    A repository cloned under /root (mode 0700) is out of reach of the `postgres` user.
    """
    if server_can_enter(preferred.parent):
        return preferred
    digest = hashlib.sha1(str(preferred.resolve()).encode()).hexdigest()[:10]
    fallback = Path("/var/tmp/energy-assets-postgres") / digest
    fallback.parent.mkdir(parents=True, exist_ok=True)
    fallback.parent.chmod(0o755)
    return fallback


def _chown_to_server_user(path: Path) -> None:
    if os.geteuid() != 0:
        return
    entry = pwd.getpwnam(SERVER_USER)
    os.chown(path, entry.pw_uid, entry.pw_gid)


@dataclass
class LocalPostgres:
    """One private PostgreSQL server: `with LocalPostgres(port=...) as pg: pg.create_database("x")`.

    `root` holds the cluster (`data/`), its socket and its log (`server.log`). A temporary
    root is made (and removed at `stop`) when none is given; a given root is kept, so the
    demo's instance survives restarts.
    """

    port: int
    root: Path | None = None
    host: str = "127.0.0.1"
    user: str = SERVER_USER
    bin_dir: Path = field(default_factory=find_bin_dir)
    _temporary: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if self.root is None:
            # Not under pytest's tmp_path: that lives in a 0700 directory of root's, which the
            # server's user cannot enter.
            self.root = Path(tempfile.mkdtemp(prefix="energy-pg-"))
            self._temporary = True
        self.root = Path(self.root)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    def _run(
        self, *argv: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess:
        command = [*_as_server_user(), *argv]
        result = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} failed ({result.returncode}): "
                f"{result.stderr.strip() or result.stdout.strip()}"
            )
        return result

    def start(self) -> LocalPostgres:
        self.root.mkdir(parents=True, exist_ok=True)
        _chown_to_server_user(self.root)
        if not server_can_enter(self.root):
            raise RuntimeError(
                f"user {SERVER_USER} cannot reach {self.root}: a parent directory is not "
                "searchable (chmod o+x it, or choose another root)"
            )
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                self.user,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            )
            log.info("initdb", data_dir=self.data_dir)
        # Sockets go in our own directory: /var/run/postgresql may not exist or be writable.
        options = f"-p {self.port} -h {self.host} -k {self.root} -c fsync=off"
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )
        log.info("started", host=self.host, port=self.port, data_dir=self.data_dir)
        return self

    def create_database(self, name: str) -> str:
        """Creates database `name` (if missing) and returns its URL."""
        exists = self._run(
            str(self.bin_dir / "psql"),
            *self._connect_args(),
            "-d",
            "postgres",
            "-tA",
            "-v",
            f"name={name}",
            # psql quotes :'name' as a literal when it reads the query from stdin (-c does not
            # interpolate variables).
            stdin="SELECT 1 FROM pg_database WHERE datname = :'name'",
        )
        if exists.stdout.strip() != "1":
            self._run(str(self.bin_dir / "createdb"), *self._connect_args(), name)
        return self.url(name)

    def _connect_args(self) -> list[str]:
        return ["-h", self.host, "-p", str(self.port), "-U", self.user]

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def env(self, database: str) -> dict[str, str]:
        """The `DAGSTER_PG_*` variables `dagster.postgres.yaml` reads, for `database`."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USERNAME": self.user,
            "DAGSTER_PG_PASSWORD": "",
            "DAGSTER_PG_DB": database,
        }

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._run(
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-m",
                "fast",
                "-w",
                "stop",
                check=False,
            )
            log.info("stopped", port=self.port)
        if self._temporary:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
