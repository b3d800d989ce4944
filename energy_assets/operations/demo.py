"""`energy-assets demo` (what `make demo` runs): the whole platform on one machine, on supervisord.

supervisord starts the programs, restarts one that exits (with backoff while it keeps failing
at start), keeps their logs and, on Ctrl-C, stops them in reverse priority order, each with
its signal sent to its whole process group. This module does what supervisord cannot: refuse
taken ports before anything starts, prepare the Dagster instance (and a private PostgreSQL
cluster), write the configuration, hold a program until the one it needs listens
(`python -m energy_assets.operations.demo after HOST:PORT -- COMMAND`), and kill what
`dagster dev` leaves in its group when it exits (`... reap -- COMMAND`).

The programs, their order and signals: docs/operations.md, "Start and stop".
"""

from __future__ import annotations

import hashlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from energy_assets.logs import event_logger
from energy_assets.operations.instance import (
    REPO,
    instance_kind,
    missing_postgres_env,
    prepare_dagster_home,
)
from energy_assets.settings import (
    DEFAULT_DASHBOARD_HOST,
    DEFAULT_DASHBOARD_PORT,
    DEFAULT_EXCHANGE_PORT,
    DEFAULT_MARKET_DATA_PORT,
    DEFAULT_PRICES_BACKFILL_DAYS,
    DEFAULT_UI_PORT,
    Settings,
)

log = event_logger("demo")

#: The playground behaves like the real vendor: revisions on the 10-minute grid, published
#: 0-30 s late, and 429s past 50 requests a minute or 1,000 an hour.
DEFAULT_PLAYGROUND_ARGS = "--vendor-grid --rate-limit-per-minute 50 --rate-limit-per-hour 1000"
#: supervisord's restart policy: a program that exits within `startsecs` of its start is
#: started again after 1, 2, 3 ... s, `startretries` times, then left stopped (FATAL); one
#: that ran longer is restarted at once, however often.
RESTART = {"autorestart": "true", "startsecs": "5", "startretries": "10"}


@dataclass
class DemoOptions:
    host: str = DEFAULT_DASHBOARD_HOST
    ui_port: int = DEFAULT_UI_PORT
    exchange_port: int = DEFAULT_EXCHANGE_PORT
    market_data_port: int = DEFAULT_MARKET_DATA_PORT
    dashboard_port: int | None = DEFAULT_DASHBOARD_PORT
    playground: bool = True
    playground_args: str = DEFAULT_PLAYGROUND_ARGS
    backfill_days: int = DEFAULT_PRICES_BACKFILL_DAYS
    dagster_home: str | Path = "data/dagster_home"
    instance: str | None = None
    postgres_port: int = 5433
    log_dir: str | Path | None = None
    dagster_output: str = "file"  # "file": data/logs/dagster.log; "terminal": mixed in
    stop_timeout_s: float = 30.0


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _cli(*args: str) -> str:
    return shlex.join([sys.executable, "-m", "energy_assets.cli", *args])


def _after(host: str, port: int, command: str) -> str:
    return (
        f"{shlex.join([sys.executable, '-m', __name__, 'after', f'{host}:{port}', '--'])} {command}"
    )


class Demo:
    def __init__(self, options: DemoOptions):
        self.options = options
        self.private_postgres = False
        data = Path(Settings.from_env().duckdb_path).resolve().parent
        self.logs, self.run_dir = data / "logs", data / "supervisor"
        self.postgres_root = data / "postgres"
        if os.geteuid() == 0:  # the server runs as `postgres`, which may not reach data/
            digest = hashlib.sha1(str(data).encode()).hexdigest()[:10]
            self.postgres_root = Path("/var/tmp/energy-assets-postgres") / digest

    def environment(self) -> dict[str, str]:
        """The programs' environment: ours, with absolute data paths and the service URLs."""
        o = self.options
        env = dict(os.environ)
        current = Settings.from_env(env)
        if o.playground:
            env["ENERGY_EXCHANGE_URL"] = f"ws://{o.host}:{o.exchange_port}"
            env["ENERGY_MARKET_DATA_URL"] = f"http://{o.host}:{o.market_data_port}"
        # Absolute, so the run workers Dagster starts elsewhere see the same files.
        env["ENERGY_CAPTURE_DIR"] = str(Path(current.capture_dir).resolve())
        env["ENERGY_DUCKDB_PATH"] = str(Path(current.duckdb_path).resolve())
        env["ENERGY_DASHBOARD_DIR"] = str(Path(current.dashboard_dir).resolve())
        env["ENERGY_PRICES_BACKFILL_DAYS"] = str(o.backfill_days)
        env["DAGSTER_HOME"] = str(Path(o.dagster_home).resolve())
        env["DAGSTER_INSTANCE"] = o.instance or instance_kind(env)
        env["PYTHONUNBUFFERED"] = "1"
        self.private_postgres = env["DAGSTER_INSTANCE"] == "postgres" and not env.get(
            "DAGSTER_PG_HOST"
        )
        if self.private_postgres:
            env.update(
                DAGSTER_PG_HOST="127.0.0.1",
                DAGSTER_PG_PORT=str(o.postgres_port),
                DAGSTER_PG_USERNAME="postgres",
                DAGSTER_PG_PASSWORD="",
                DAGSTER_PG_DB="dagster",
            )
        return env

    def dagster_log(self, env: dict[str, str]) -> Path | None:
        """`dagster dev` logs every daemon tick: into a file by default, so the terminal
        keeps one line per event."""
        if self.options.log_dir or self.options.dagster_output == "terminal":
            return None
        return Path(env["ENERGY_DUCKDB_PATH"]).parent / "logs" / "dagster.log"

    def postgres_program(self) -> str:
        """Creates the private cluster once (database `dagster`); its server's command."""
        import glob

        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[4]))
        if not bins:
            raise SystemExit("no PostgreSQL server (Debian's postgresql): run `make setup`")
        bin_dir, data = Path(bins[-1]), self.postgres_root / "data"
        as_server = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if not (data / "PG_VERSION").exists():
            self.postgres_root.mkdir(parents=True, exist_ok=True)
            if as_server:
                subprocess.run(["chown", "postgres:", str(self.postgres_root)], check=True)
            init = [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]
            subprocess.run([*as_server, *init, "--no-sync"], check=True, capture_output=True)
            subprocess.run(
                [*as_server, str(bin_dir / "postgres"), "--single", "-D", str(data), "postgres"],
                input=b"CREATE DATABASE dagster",
                check=True,
                capture_output=True,
            )
            log.info("postgres_created", root=self.postgres_root)
        port = self.options.postgres_port
        server = [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1"]
        return shlex.join([*as_server, *server, "-k", str(self.postgres_root)])

    def programs(self, env: dict[str, str]) -> dict[str, dict[str, str]]:
        """supervisord's `[program:NAME]` sections."""
        o = self.options
        programs: dict[str, dict[str, str]] = {}
        dagster = shlex.join(
            [sys.executable, "-m", __name__, "reap", "--", sys.executable, "-m", "dagster", "dev"]
            + ["-w", str(REPO / "workspace.yaml"), "-h", o.host, "-p", str(o.ui_port)]
        )
        if self.private_postgres:
            # SIGINT: PostgreSQL's fast shutdown (SIGTERM would wait for every client).
            programs["postgres"] = {"command": self.postgres_program(), "priority": "5"}
            programs["postgres"]["stopsignal"] = "INT"
            dagster = _after("127.0.0.1", o.postgres_port, dagster)
        listener = _cli("listen")
        if o.playground:
            playground = ["--host", o.host, "--exchange-port", str(o.exchange_port)]
            playground += ["--market-data-port", str(o.market_data_port)]
            args = [*playground, *shlex.split(o.playground_args)]
            programs["playground"] = {"command": _cli("playground", *args), "priority": "10"}
            # Connecting before the exchange listens would record a feed gap at every start.
            listener = _after(o.host, o.exchange_port, listener)
        # Ctrl-C in a terminal sends SIGINT to `dagster dev`'s group: its tested path.
        programs["dagster"] = {"command": dagster, "priority": "30", "stopsignal": "INT"}
        if o.dashboard_port is not None:
            dashboard = _cli("dashboard", "--host", o.host, "--port", str(o.dashboard_port))
            programs["dashboard"] = {"command": dashboard, "priority": "30"}
        watcher = _after(o.host, o.ui_port, _cli("watch-runs"))
        programs["runs"] = {"command": watcher, "priority": "30"}
        programs["listener"] = {"command": listener, "priority": "40"}
        for name, program in programs.items():
            program.update(RESTART, directory=str(REPO), redirect_stderr="true")
            program.update(stopasgroup="true", killasgroup="true")
            program["stopwaitsecs"] = str(int(o.stop_timeout_s))
            out = self.dagster_log(env) if name in ("dagster", "postgres") else None
            if o.log_dir:
                out = Path(o.log_dir).resolve() / f"{name}.log"
            program["stdout_logfile"] = str(out or "/dev/stdout")
            program["stdout_logfile_maxbytes"] = "50MB" if out else "0"
        return programs

    def config(self, env: dict[str, str]) -> str:
        sock = self.run_dir / "supervisor.sock"
        sections = {
            "supervisord": {
                "nodaemon": "true",
                # Its own lines (spawned, exited, stopped) go to the file; the terminal keeps
                # the programs' key=value lines.
                "silent": "true",
                "logfile": str(self.logs / "supervisord.log"),
                "pidfile": str(self.run_dir / "supervisord.pid"),
                "childlogdir": str(self.logs),
            },
            "unix_http_server": {"file": str(sock)},
            "rpcinterface:supervisor": {
                "supervisor.rpcinterface_factory": "supervisor.rpcinterface:make_main_rpcinterface"
            },
            "supervisorctl": {"serverurl": f"unix://{sock}"},
            **{f"program:{name}": p for name, p in self.programs(env).items()},
        }
        return "".join(
            f"[{name}]\n" + "".join(f"{k}={v.replace('%', '%%')}\n" for k, v in items.items())
            for name, items in sections.items()
        )

    def run(self) -> int:
        """Checks the ports, prepares the instance, then becomes supervisord."""
        o = self.options
        ports = {"ui": o.ui_port, "dashboard": o.dashboard_port}
        if o.playground:
            ports.update(exchange=o.exchange_port, market_data=o.market_data_port)
        taken = {k: p for k, p in ports.items() if p is not None and port_in_use(o.host, p)}
        for name, port in taken.items():
            log.error("port_in_use", what=name, host=o.host, port=port)
        if taken:
            return 2
        env = self.environment()
        missing = missing_postgres_env(env) if env["DAGSTER_INSTANCE"] == "postgres" else []
        if missing:
            raise SystemExit(f"DAGSTER_INSTANCE=postgres needs {', '.join(missing)}")
        prepare_dagster_home(Path(env["DAGSTER_HOME"]), env["DAGSTER_INSTANCE"])
        for directory in (self.logs, self.run_dir, *([Path(o.log_dir)] if o.log_dir else [])):
            directory.mkdir(parents=True, exist_ok=True)
        conf = self.run_dir / "supervisord.conf"
        conf.write_text(self.config(env))
        where = {
            "ui": f"http://{o.host}:{o.ui_port}",
            "dashboard": f"http://{o.host}:{o.dashboard_port}" if o.dashboard_port else "off",
            "exchange": env["ENERGY_EXCHANGE_URL"],
            "market_data": env["ENERGY_MARKET_DATA_URL"],
            "duckdb": env["ENERGY_DUCKDB_PATH"],
            "dagster_home": env["DAGSTER_HOME"],
            "instance": env["DAGSTER_INSTANCE"],
            "logs": str(self.logs),
            "supervisor": f"{Path(sys.executable).parent / 'supervisorctl'} -c {conf} status",
        }
        log.info("demo_starting", pid=os.getpid(), **where)
        width = max(map(len, where))
        lines = ["", "energy_assets demo (the UI answers in ~20 s; Ctrl-C stops everything):"]
        lines += [f"  {name.replace('_', ' '):<{width}}  {value}" for name, value in where.items()]
        print("\n".join(lines) + "\n", flush=True)
        supervisord = str(Path(sys.executable).parent / "supervisord")
        os.execve(supervisord, [supervisord, "-c", str(conf)], env)


def group_members() -> list[int]:
    """The other live processes of this process group."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if (
            int(fields[2]) == os.getpgrp()
            and fields[0] != "Z"
            and int(stat.parent.name) != os.getpid()
        ):
            members.append(int(stat.parent.name))
    return members


def reap(command: list[str]) -> int:
    """`reap -- COMMAND...`: runs COMMAND; once it exits, kills what it left in the group
    (`dagster dev`'s code servers outlive it by up to a minute), after 5 s of grace."""
    for signum in (signal.SIGINT, signal.SIGTERM):  # the group's signal reaches COMMAND
        signal.signal(signum, lambda *_: None)
    code = subprocess.call(command)
    deadline = time.monotonic() + 5
    while group_members() and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in group_members():
        os.kill(pid, signal.SIGKILL)
    return code if code >= 0 else 128 - code


def after(argv: list[str]) -> None:
    """`after HOST:PORT -- COMMAND...`: waits until HOST:PORT accepts, then runs COMMAND."""
    address, _, command = argv[0], argv[1], argv[2:]
    host, port = address.rsplit(":", 1)
    while not port_in_use(host, int(port)):
        time.sleep(0.2)
    os.execvp(command[0], command)


if __name__ == "__main__" and sys.argv[1:2] == ["after"]:
    after(sys.argv[2:])
if __name__ == "__main__" and sys.argv[1:3] == ["reap", "--"]:
    sys.exit(reap(sys.argv[3:]))
