"""`energy-assets demo` (what `make demo` runs): the whole platform on one machine.

Children, each in its own process group (see `supervisor`):

| child | command | stops |
| --- | --- | --- |
| `playground` | `energy-assets playground` (exchange + Market Data API) | last |
| `listener` | `energy-assets listen`, once the playground listens | first: seals its open segment |
| `dagster` | `dagster dev -w workspace.yaml` (UI + daemon) | second, with SIGINT as Ctrl-C would |
| `dashboard` | `energy-assets dashboard` | second |
| `runs` | `energy-assets watch-runs`, once Dagster answers: a line per run event | second |
| `backfill` | `energy-assets backfill-recent-prices`, once Dagster answers | one-shot |

The trade sensor, the price schedule and the exposure automation are on by default in code,
so the daemon inside `dagster dev` runs them with no click.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import requests

from energy_assets.logs import event_logger
from energy_assets.operations.instance import (
    REPO,
    instance_kind,
    missing_postgres_env,
    prepare_dagster_home,
)
from energy_assets.operations.supervisor import ChildSpec, Supervisor
from energy_assets.settings import (
    DEFAULT_DASHBOARD_HOST,
    DEFAULT_DASHBOARD_PORT,
    DEFAULT_EXCHANGE_PORT,
    DEFAULT_MARKET_DATA_PORT,
    DEFAULT_UI_PORT,
    Settings,
)

log = event_logger("demo")

#: Stop order: the listener first (its segment sealed while nothing else moves), then Dagster
#: and the dashboard, the playground last so the listener never logs a spurious feed gap.
STOP_LISTENER, STOP_SERVICES, STOP_PLAYGROUND = 0, 1, 2
#: The playground behaves like the real vendor: revisions on the 10-minute grid, published
#: 0-30 s late, and 429s past 50 requests a minute or 1,000 an hour, so the demo shows the
#: price schedule and the request budget doing their job.
DEFAULT_PLAYGROUND_ARGS = "--vendor-grid --rate-limit-per-minute 50 --rate-limit-per-hour 1000"


@dataclass
class DemoOptions:
    host: str = DEFAULT_DASHBOARD_HOST
    ui_port: int = DEFAULT_UI_PORT
    exchange_port: int = DEFAULT_EXCHANGE_PORT
    market_data_port: int = DEFAULT_MARKET_DATA_PORT
    dashboard_port: int | None = DEFAULT_DASHBOARD_PORT
    playground: bool = True
    playground_args: str = DEFAULT_PLAYGROUND_ARGS
    backfill_days: int = 2
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


def _tcp_open(host: str, port: int) -> bool:
    return port_in_use(host, port)


def _http_ok(url: str) -> bool:
    return requests.get(url, timeout=2).status_code == 200


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "energy_assets.cli", *args]


class Demo:
    def __init__(self, options: DemoOptions):
        self.options = options
        self.postgres = None

    # -- environment ------------------------------------------------------------------------

    def environment(self) -> dict[str, str]:
        """The children's environment: ours, with absolute data paths and the service URLs."""
        o = self.options
        env = dict(os.environ)
        current = Settings.from_env(env)
        if o.playground:
            env["ENERGY_EXCHANGE_URL"] = f"ws://{o.host}:{o.exchange_port}"
            env["ENERGY_MARKET_DATA_URL"] = f"http://{o.host}:{o.market_data_port}"
        else:
            env["ENERGY_EXCHANGE_URL"] = current.exchange_url
            env["ENERGY_MARKET_DATA_URL"] = current.market_data_url
        # Absolute, so the run workers Dagster starts elsewhere see the same files.
        env["ENERGY_CAPTURE_DIR"] = str(Path(current.capture_dir).resolve())
        env["ENERGY_DUCKDB_PATH"] = str(Path(current.duckdb_path).resolve())
        env["ENERGY_DASHBOARD_DIR"] = str(Path(current.dashboard_dir).resolve())
        env["DAGSTER_HOME"] = str(Path(o.dagster_home).resolve())
        env["DAGSTER_INSTANCE"] = o.instance or instance_kind(env)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _prepare_instance(self, env: dict[str, str]) -> None:
        kind = env["DAGSTER_INSTANCE"]
        prepare_dagster_home(Path(env["DAGSTER_HOME"]), kind)
        if kind != "postgres":
            return
        if "DAGSTER_PG_HOST" not in env:
            from energy_assets.operations.postgres import LocalPostgres, default_root

            root = default_root(Path(env["ENERGY_DUCKDB_PATH"]).parent / "postgres")
            self.postgres = LocalPostgres(port=self.options.postgres_port, root=root).start()
            self.postgres.create_database("dagster")
            env.update(self.postgres.env("dagster"))
        missing = missing_postgres_env(env)
        if missing:
            raise SystemExit(f"DAGSTER_INSTANCE=postgres needs {', '.join(missing)}")

    # -- children ---------------------------------------------------------------------------

    def children(self, env: dict[str, str]) -> list[ChildSpec]:
        o = self.options
        specs = []
        if o.playground:
            specs.append(
                ChildSpec(
                    name="playground",
                    argv=_cli(
                        "playground",
                        "--host",
                        o.host,
                        "--exchange-port",
                        str(o.exchange_port),
                        "--market-data-port",
                        str(o.market_data_port),
                        *shlex.split(o.playground_args),
                    ),
                    env=env,
                    stop_order=STOP_PLAYGROUND,
                    ready=lambda: (
                        _tcp_open(o.host, o.exchange_port) and _tcp_open(o.host, o.market_data_port)
                    ),
                )
            )
        if not o.playground:
            specs.append(self.listener_child(env))
        specs.append(
            ChildSpec(
                name="dagster",
                argv=[
                    sys.executable,
                    "-m",
                    "dagster",
                    "dev",
                    "-w",
                    str(REPO / "workspace.yaml"),
                    "-h",
                    o.host,
                    "-p",
                    str(o.ui_port),
                ],
                env=env,
                cwd=REPO,
                log_file=self.dagster_log(env),
                # What a terminal's Ctrl-C sends to `dagster dev`'s group: its tested path.
                stop_signal=signal.SIGINT,
                stop_order=STOP_SERVICES,
                ready=lambda: _http_ok(f"http://{o.host}:{o.ui_port}/server_info"),
                ready_timeout_s=180,
            )
        )
        if o.dashboard_port is not None:
            specs.append(
                ChildSpec(
                    name="dashboard",
                    argv=_cli("dashboard", "--host", o.host, "--port", str(o.dashboard_port)),
                    env=env,
                    stop_order=STOP_SERVICES,
                    # The desk's pages are a view: the pipeline runs on without them.
                    essential=False,
                )
            )
        return specs

    def backfill_child(self, env: dict[str, str]) -> ChildSpec:
        return ChildSpec(
            name="backfill",
            argv=_cli(
                "backfill-recent-prices",
                "--days",
                str(self.options.backfill_days),
                "--url",
                f"http://{self.options.host}:{self.options.ui_port}",
            ),
            env=env,
            cwd=REPO,
            oneshot=True,
            stop_order=STOP_SERVICES,
        )

    def listener_child(self, env: dict[str, str]) -> ChildSpec:
        return ChildSpec(
            name="listener",
            argv=_cli("listen"),
            env=env,
            stop_order=STOP_LISTENER,
            describe={"url": env["ENERGY_EXCHANGE_URL"], "capture_dir": env["ENERGY_CAPTURE_DIR"]},
        )

    def dagster_log(self, env: dict[str, str]) -> Path | None:
        """`dagster dev` logs every daemon tick: into a file by default, so the terminal
        keeps one line per event (supervisor, listener, runs)."""
        if self.options.log_dir or self.options.dagster_output == "terminal":
            return None
        return Path(env["ENERGY_DUCKDB_PATH"]).parent / "logs" / "dagster.log"

    def watcher_child(self, env: dict[str, str]) -> ChildSpec:
        return ChildSpec(
            name="runs",
            argv=_cli("watch-runs"),
            env=env,
            stop_order=STOP_SERVICES,
            essential=False,
        )

    def _ports(self) -> dict[str, int]:
        o = self.options
        ports = {"ui": o.ui_port}
        if o.playground:
            ports.update(exchange=o.exchange_port, market_data=o.market_data_port)
        if o.dashboard_port is not None:
            ports["dashboard"] = o.dashboard_port
        return ports

    def announce(self, env: dict[str, str]) -> None:
        o = self.options
        where = {
            "ui": f"http://{o.host}:{o.ui_port}",
            "dashboard": f"http://{o.host}:{o.dashboard_port}" if o.dashboard_port else "off",
            "exchange": env["ENERGY_EXCHANGE_URL"],
            "market_data": env["ENERGY_MARKET_DATA_URL"],
            "capture_dir": env["ENERGY_CAPTURE_DIR"],
            "duckdb": env["ENERGY_DUCKDB_PATH"],
            "dagster_home": env["DAGSTER_HOME"],
            "instance": env["DAGSTER_INSTANCE"],
            "dagster_log": str(self.dagster_log(env) or "this terminal"),
        }
        log.info("demo_ready", **where)
        width = max(map(len, where))
        lines = ["", "energy_assets demo is up:"]
        lines += [f"  {name.replace('_', ' '):<{width}}  {value}" for name, value in where.items()]
        lines += ["  Ctrl-C stops everything.", ""]
        print("\n".join(lines), flush=True)

    # -- run --------------------------------------------------------------------------------

    def run(self) -> int:
        o = self.options
        taken = {name: port for name, port in self._ports().items() if port_in_use(o.host, port)}
        if taken:
            for name, port in taken.items():
                log.error("port_in_use", what=name, host=o.host, port=port)
            return 2
        env = self.environment()
        # The backfill child and any in-process look-up see the same instance as the children.
        self._prepare_instance(env)
        supervisor = Supervisor(
            self.children(env),
            log=log,
            log_dir=Path(o.log_dir) if o.log_dir else None,
            stop_timeout_s=o.stop_timeout_s,
        )

        def on_dagster_ready() -> None:
            self.announce(env)
            supervisor.launch(self.watcher_child(env))
            if o.backfill_days >= 0:
                supervisor.launch(self.backfill_child(env))

        supervisor.when_ready("dagster", on_dagster_ready)
        if o.playground:
            # Connecting before the playground listens would record a feed gap at every start.
            supervisor.when_ready("playground", lambda: supervisor.launch(self.listener_child(env)))
        supervisor.install_signal_handlers()
        log.info(
            "demo_starting",
            instance=env["DAGSTER_INSTANCE"],
            dagster_home=env["DAGSTER_HOME"],
            pid=os.getpid(),
        )
        try:
            return supervisor.run()
        finally:
            if self.postgres is not None:
                self.postgres.stop()
