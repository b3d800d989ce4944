"""`energy-assets demo` (what `make demo` runs): the whole platform on one machine, on supervisord.

supervisord starts, restarts (with backoff), logs and stops the programs, Dagster's webserver,
daemon and code server among them (docs/operations.md, "Start and stop"). This module does what
it cannot: refuse taken ports before anything starts, prepare the Dagster instance and a private
PostgreSQL cluster, write the configuration, hold a program until the port it needs listens.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, CliSettingsSource, SettingsConfigDict

import energy_assets.settings as defaults
from energy_assets.logs import event_logger

log = event_logger("demo")
REPO = Path(__file__).resolve().parents[2]
#: The Dagster instance files at the repository root, by `DAGSTER_INSTANCE`.
INSTANCE_FILES = {"sqlite": "dagster.yaml", "postgres": "dagster.postgres.yaml"}
#: What `dagster.postgres.yaml` reads, `DAGSTER_PG_<name>`.
POSTGRES_ENV = ("HOST", "PORT", "USERNAME", "PASSWORD", "DB")
#: supervisord's own lines (spawned, exited, stopped) go to its file; the terminal keeps the
#: programs' key=value lines. Those started with the UI are one group, stopped together after
#: the listener (once it has sealed its segment) and before the code server (else the daemon
#: would still launch runs on a code server shutting down).
SUPERVISORD = """\
[supervisord]
nodaemon=true
silent=true
logfile={logs}/supervisord.log
pidfile={run}/supervisord.pid
childlogdir={logs}
[unix_http_server]
file={socket}
[rpcinterface:supervisor]
supervisor.rpcinterface_factory=supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl=unix://{socket}
[group:platform]
programs={platform}
priority=30
"""
#: Each signal goes to the program's whole process group, SIGKILL after `stopwaitsecs`. One
#: that exits is started again at once if it ran `startsecs`, else after 1, 2, 3 ... s,
#: `startretries` times, then left stopped (FATAL).
PROGRAM = """\
[program:{name}]
command={command}
priority={priority}
stopsignal={stopsignal}
stdout_logfile={out}
stdout_logfile_maxbytes={max_bytes}
directory={repo}
redirect_stderr=true
stopasgroup=true
killasgroup=true
stopwaitsecs=30
autorestart=true
startsecs=5
startretries=10
"""


#: Each program's port: the demo's URLs name it, so not 0.
Port = Annotated[int, Field(ge=1, le=65535)]


class DemoOptions(BaseSettings):
    """Write supervisord's configuration for the playground, the listener, Dagster (code
    server, UI and daemon: the sensors and schedules run by themselves, the recent prices
    included) and the dashboard, then run supervisord in the foreground. Ctrl-C or SIGTERM stops every
    program cleanly (the listener first, sealing its segment)."""

    model_config = SettingsConfigDict(
        env_prefix="ENERGY_DEMO_",
        env_ignore_empty=True,
        use_attribute_docstrings=True,
        cli_kebab_case=True,
        cli_implicit_flags=True,
    )

    host: str = defaults.DEFAULT_DASHBOARD_HOST
    """the interface every program binds"""
    ui_port: Port = defaults.DEFAULT_UI_PORT
    exchange_port: Port = defaults.DEFAULT_EXCHANGE_PORT
    market_data_port: Port = defaults.DEFAULT_MARKET_DATA_PORT
    dashboard_port: Port = defaults.DEFAULT_DASHBOARD_PORT
    postgres_port: Port = 5433
    """the private PostgreSQL server's"""
    playground: bool = True
    """--no-playground: use the services at ENERGY_EXCHANGE_URL / ENERGY_MARKET_DATA_URL"""
    playground_args: str = "--vendor-grid --rate-limit-per-minute 50 --rate-limit-per-hour 1000"
    """`energy-assets playground`'s besides its address: the vendor's grid and limits"""
    dashboard: bool = True
    dagster_home: Path = Field(Path("data/dagster_home"), validation_alias="dagster_home")
    """the Dagster instance's directory ($DAGSTER_HOME)"""
    dagster_instance: Literal["sqlite", "postgres"] = Field(
        "sqlite", validation_alias="dagster_instance"
    )
    """$DAGSTER_INSTANCE; postgres without DAGSTER_PG_HOST runs a private PostgreSQL server"""
    log_dir: Path | None = None
    """each program's output to DIR/<program>.log instead of the terminal"""


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("demo", help="Run the whole demo", description=DemoOptions.__doc__)
    options = CliSettingsSource(DemoOptions, root_parser=parser)  # its fields are the options
    parser.set_defaults(
        run=lambda args: run(DemoOptions(_cli_settings_source=options(parsed_args=args)))
    )


def prepare_dagster_home(home: Path, kind: str) -> None:
    """Writes the `kind` instance's file as `home`/dagster.yaml, at every start so an edit
    reaches the demo. For SQLite it adds the one setting that needs a path (the root's file
    names none, so `dg` reads it from any shell): every run's events in one file instead of
    Dagster's default of a file per run, each a whole empty schema."""
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    text = (REPO / INSTANCE_FILES[kind]).read_text()
    if kind == "sqlite":
        text += "\nevent_log_storage:\n  module: dagster.core.storage.event_log\n"
        text += "  class: ConsolidatedSqliteEventLogStorage\n"
        text += f"  config:\n    base_dir: {json.dumps(str(home))}\n"
    (home / "dagster.yaml").write_text(text)


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def data_dir() -> Path:
    return defaults.settings().duckdb_path.resolve().parent


def data_digest() -> str:
    return hashlib.sha1(str(data_dir()).encode()).hexdigest()[:10]


def postgres_root() -> Path:
    if os.geteuid() == 0:  # the server runs as `postgres`, which may not reach data/
        return Path("/var/tmp/energy-assets-postgres") / data_digest()
    return data_dir() / "postgres"


def supervisor_socket() -> Path:
    """supervisord's control socket, one per data directory, in /tmp: a Unix socket's path
    may not exceed 107 bytes, and a data directory's (or $TMPDIR's) path may."""
    return Path("/tmp") / f"energy-assets-{data_digest()}.sock"


def postgres_command(port: int) -> list[str]:
    """Creates the private cluster once (`initdb`); its server's command."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[4]))
    if not bins:
        raise SystemExit("no PostgreSQL server (Debian's postgresql): run `make setup`")
    root = postgres_root()
    as_server = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if not (root / "data" / "PG_VERSION").exists():
        root.mkdir(parents=True, exist_ok=True)
        if as_server:
            subprocess.run(["chown", "postgres:", str(root)], check=True)
        initdb = [f"{bins[-1]}/initdb", "-D", str(root / "data"), "-U", "postgres", "--auth=trust"]
        subprocess.run([*as_server, *initdb, "--no-sync"], check=True, capture_output=True)
        log.info("postgres_created", root=root)
    server = [f"{bins[-1]}/postgres", "-D", str(root / "data"), "-p", str(port), "-k", str(root)]
    return [*as_server, *server, "-h", "127.0.0.1"]


def plan(o: DemoOptions) -> tuple[dict[str, str], dict[str, str]]:
    """The programs' environment and each one's `[program:NAME]` section, in start order
    (creating the private PostgreSQL cluster if there is one, and the UI's workspace file)."""
    current = defaults.settings()
    env = dict(os.environ, PYTHONUNBUFFERED="1", DAGSTER_INSTANCE=o.dagster_instance)
    env["ENERGY_EXCHANGE_URL"] = f"ws://{o.host}:{o.exchange_port}"
    env["ENERGY_MARKET_DATA_URL"] = f"http://{o.host}:{o.market_data_port}"
    if not o.playground:
        env["ENERGY_EXCHANGE_URL"] = current.exchange_url
        env["ENERGY_MARKET_DATA_URL"] = current.market_data_url
    # Absolute, so the run workers Dagster starts elsewhere see the same files.
    for name in ("capture_dir", "duckdb_path", "dashboard_dir"):
        env[f"ENERGY_{name.upper()}"] = str(getattr(current, name).resolve())
    env["DAGSTER_HOME"] = str(o.dagster_home.resolve())
    if private_postgres := o.dagster_instance == "postgres" and not env.get("DAGSTER_PG_HOST"):
        pg = ("127.0.0.1", str(o.postgres_port), "postgres", "", "postgres")  # its own database
        env.update({f"DAGSTER_PG_{k}": v for k, v in zip(POSTGRES_ENV, pg, strict=True)})

    def cli(*args: str) -> list[str]:
        return [sys.executable, "-m", "energy_assets.cli", *args]

    def after(host: str, port: int, command: list[str]) -> list[str]:
        return [sys.executable, "-m", __name__, "after", f"{host}:{port}", "--", *command]

    with socket.socket() as sock:  # the code server's port: any free one
        sock.bind(("127.0.0.1", 0))
        code_port = sock.getsockname()[1]
    # The UI and the daemon load the definitions from the code server, named as in the
    # repository's workspace.yaml (which `dg dev` reads).
    workspace = data_dir() / "supervisor" / "workspace.yaml"
    workspace.parent.mkdir(parents=True, exist_ok=True)
    grpc = f"{{host: 127.0.0.1, port: {code_port}, location_name: energy_assets}}"
    workspace.write_text(f"load_from:\n  - grpc_server: {grpc}\n")
    bin_dir = Path(sys.executable).parent
    code = [f"{bin_dir}/dagster", "api", "grpc", "-m", "energy_assets.definitions", "-d", str(REPO)]
    code += ["--location-name", "energy_assets", "-h", "127.0.0.1", "-p", str(code_port)]
    ui = [f"{bin_dir}/dagster-webserver", "-w", str(workspace), "-h", o.host, "-p", str(o.ui_port)]
    daemon = [f"{bin_dir}/dagster-daemon", "run", "-w", str(workspace)]
    listener = cli("listen")
    programs = []  # name, priority (start order), command, stop signal (TERM by default)
    if private_postgres:
        # SIGINT: PostgreSQL's fast shutdown (SIGTERM would wait for every client). Dagster
        # retries its first connections, and supervisord restarts it, while the server starts.
        programs.append(("postgres", 5, postgres_command(o.postgres_port), "INT"))
    if o.playground:
        address = ["--host", o.host, "--exchange-port", str(o.exchange_port)]
        address += ["--market-data-port", str(o.market_data_port)]
        playground = cli("playground", *address, *shlex.split(o.playground_args))
        programs.append(("playground", 10, playground, "TERM"))
        # Connecting before the exchange listens would record a feed gap at every start.
        listener = after(o.host, o.exchange_port, listener)
    # SIGINT, as Ctrl-C in a terminal; the code server's group holds the run workers.
    programs.append(("code", 20, code, "INT"))
    programs.append(("webserver", 30, after("127.0.0.1", code_port, ui), "INT"))
    programs.append(("daemon", 30, after("127.0.0.1", code_port, daemon), "INT"))
    if o.dashboard:
        dashboard = cli("dashboard", "--host", o.host, "--port", str(o.dashboard_port))
        programs.append(("dashboard", 30, dashboard, "TERM"))
    programs.append(("listener", 40, listener, "TERM"))
    sections = {}
    for name, priority, command, stopsignal in programs:
        # Dagster logs every daemon tick and run step: to files, so the terminal keeps one
        # line per event (`supervisorctl tail -f platform:daemon` follows one).
        dagster = name in ("code", "webserver", "daemon", "postgres")
        out = data_dir() / "logs" / f"{name}.log" if dagster else None
        out = o.log_dir.resolve() / f"{name}.log" if o.log_dir else out
        sections[name] = PROGRAM.format(
            name=name,
            command=shlex.join(command),
            priority=priority,
            stopsignal=stopsignal,
            out=out or "/dev/stdout",
            max_bytes="50MB" if out else "0",
            repo=REPO,
        )
    return env, sections


def run(o: DemoOptions) -> int:
    """Checks the ports, prepares the instance and the configuration, becomes supervisord."""
    ports = {"ui": o.ui_port, "dashboard": o.dashboard_port if o.dashboard else None}
    if o.playground:
        ports.update(exchange=o.exchange_port, market_data=o.market_data_port)
    taken = {k: p for k, p in ports.items() if p is not None and port_in_use(o.host, p)}
    for name, port in taken.items():
        log.error("port_in_use", what=name, host=o.host, port=port)
    if taken:
        return 2
    env, programs = plan(o)
    missing = [f"DAGSTER_PG_{n}" for n in POSTGRES_ENV if f"DAGSTER_PG_{n}" not in env]
    if o.dagster_instance == "postgres" and missing:
        raise SystemExit(f"DAGSTER_INSTANCE=postgres needs {', '.join(missing)}")
    prepare_dagster_home(o.dagster_home, o.dagster_instance)
    if "postgres" not in programs:  # (a private server is not up yet: Dagster retries there)
        # Its storage made once, here: programs started together would race to create it.
        from dagster import DagsterInstance

        os.environ.update(env)
        with DagsterInstance.get():
            pass
    logs, run_dir = data_dir() / "logs", data_dir() / "supervisor"
    for directory in (logs, run_dir, *([o.log_dir] if o.log_dir else [])):
        directory.mkdir(parents=True, exist_ok=True)
    conf = run_dir / "supervisord.conf"
    platform = ",".join(
        n for n in programs if n not in ("postgres", "playground", "code", "listener")
    )
    text = SUPERVISORD.format(logs=logs, run=run_dir, socket=supervisor_socket(), platform=platform)
    text += "".join(programs.values())
    conf.write_text(text.replace("%", "%%"))  # supervisord expands %(name)s
    where = {
        "ui": f"http://{o.host}:{o.ui_port}",
        "dashboard": f"http://{o.host}:{o.dashboard_port}" if o.dashboard else "off",
        "exchange": env["ENERGY_EXCHANGE_URL"],
        "market_data": env["ENERGY_MARKET_DATA_URL"],
        "duckdb": env["ENERGY_DUCKDB_PATH"],
        "dagster_home": env["DAGSTER_HOME"],
        "instance": o.dagster_instance,
        "logs": str(logs),
        "supervisor": f"{Path(sys.executable).parent / 'supervisorctl'} -c {conf} status",
    }
    log.info("demo_starting", pid=os.getpid(), **where)
    print("\nenergy_assets demo (the UI answers in ~20 s; Ctrl-C stops everything):")
    print("".join(f"  {name.replace('_', ' '):<12}  {value}\n" for name, value in where.items()))
    supervisord = str(Path(sys.executable).parent / "supervisord")
    os.execve(supervisord, [supervisord, "-c", str(conf)], env)


if __name__ == "__main__" and sys.argv[1] == "after":  # after HOST:PORT -- COMMAND...
    host, port = sys.argv[2].rsplit(":", 1)
    while not port_in_use(host, int(port)):
        time.sleep(0.2)
    os.execvp(sys.argv[4], sys.argv[4:])
