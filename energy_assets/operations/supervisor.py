"""A small process supervisor: starts child processes, restarts the ones that die, and stops
them all cleanly on Ctrl-C or SIGTERM.

Each child runs in its own session (its own process group), so

- Ctrl-C in the terminal reaches only the supervisor, which then stops the children in a
  chosen order (the listener first, so it seals its open segment while the exchange is still
  up) with the signal each expects, waits, and kills what is left;
- a child's own children (Dagster's webserver, daemon, code server and run workers) are
  signalled with it, through the group;
- a supervisor killed with `kill -9` still takes its children down: they are started with
  Linux's parent-death signal (SIGTERM).

Every event is one structured line (`energy_assets.logs`), e.g.
`event=child_exited child=listener pid=123 returncode=1 uptime_s=4.2 restart_in_s=2.0`.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from energy_assets.logs import EventLogger, event_logger

_PR_SET_PDEATHSIG = 1


#: The signals a child is stopped with, at their defaults in every child whatever the
#: supervisor inherited: a shell starts a background job with SIGINT ignored, and Dagster,
#: on its first in-process run, gives SIGTERM SIGINT's handler (dagster-io/dagster#25749),
#: so both would be ignored by every child too (an ignored signal survives exec).
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _prepare_child() -> None:
    """In the child, before exec: the stop signals at their defaults, and SIGTERM when the
    supervisor dies, however it dies."""
    for sig in _STOP_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not glibc Linux: the supervisor's own handlers remain
        pass


@dataclass
class ChildSpec:
    """How to run one child process.

    `stop_order`: lower stops first; equal values stop together. `oneshot`: runs once and is
    expected to exit (exit 0 is success, nothing is restarted). `essential`: when it keeps
    failing, everything stops; a non-essential child is just given up on. `ready`: a callable polled
    after start until it returns True (e.g. an HTTP probe), logged as `event=ready`.
    """

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    stop_signal: int = signal.SIGTERM
    stop_order: int = 0
    oneshot: bool = False
    essential: bool = True
    #: Where its output goes; default: the supervisor's log_dir, else the terminal.
    log_file: Path | None = None
    ready: Callable[[], bool] | None = None
    ready_timeout_s: float = 120.0
    describe: Mapping[str, object] = field(default_factory=dict)


@dataclass
class _Child:
    spec: ChildSpec
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    quick_failures: int = 0
    restart_at: float | None = None
    finished: bool = False
    ready: bool = False
    output: IO | None = None


def live_group_members(pgid: int) -> list[int]:
    """Pids of the processes in group `pgid` that are not zombies (Linux `/proc`).

    `kill(-pgid, 0)` also counts zombies, which an init that does not reap (as in some
    containers) leaves behind forever.
    """
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                stat = handle.read().decode(errors="replace")
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) >= 3 and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


class Supervisor:
    """Runs `ChildSpec`s until `request_stop()` (signal handlers call it) or a fatal failure.

    A child that exits is restarted after a capped exponential backoff (1 s, 2 s, … 30 s); one
    that keeps dying within `quick_failure_s` of its start `max_quick_failures` times in a row
    (a taken port, a bad setting) stops the whole supervisor with exit code 1 if it is
    essential, since restarting it cannot help, and is left stopped otherwise.
    """

    def __init__(
        self,
        children: Sequence[ChildSpec],
        log: EventLogger | None = None,
        log_dir: Path | None = None,
        stop_timeout_s: float = 30.0,
        quick_failure_s: float = 10.0,
        max_quick_failures: int = 5,
        max_backoff_s: float = 30.0,
    ):
        self.children = [_Child(spec) for spec in children]
        self.log = log or event_logger("supervisor")
        self.log_dir = Path(log_dir) if log_dir else None
        self.stop_timeout_s = stop_timeout_s
        self.quick_failure_s = quick_failure_s
        self.max_quick_failures = max_quick_failures
        self.max_backoff_s = max_backoff_s
        self._stop = threading.Event()
        self._force = threading.Event()
        self._stop_reason = ""
        self.exit_code = 0
        self._on_ready: list[tuple[str, Callable[[], None]]] = []

    # -- control ----------------------------------------------------------------------------

    def request_stop(self, reason: str = "requested") -> None:
        if not self._stop.is_set():
            self._stop_reason = reason
            self._stop.set()

    def install_signal_handlers(self) -> None:
        def handler(signum, _frame):
            if self._stop.is_set():
                # A second Ctrl-C: the operator does not want to wait for the grace period.
                self._force.set()
            self.request_stop(signal.Signals(signum).name)

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)

    def when_ready(self, name: str, callback: Callable[[], None]) -> None:
        """Calls `callback` once, on the supervisor's thread, when child `name` is ready."""
        self._on_ready.append((name, callback))

    def launch(self, spec: ChildSpec) -> None:
        """Starts one more child while supervising (e.g. a one-shot job once Dagster is up)."""
        if self._stop.is_set():
            return
        child = _Child(spec)
        self.children.append(child)
        self._spawn(child)

    def pids(self) -> dict[str, int]:
        return {
            child.spec.name: child.process.pid
            for child in self.children
            if child.process is not None and child.process.poll() is None
        }

    # -- lifecycle --------------------------------------------------------------------------

    def _spawn(self, child: _Child) -> None:
        spec = child.spec
        target = spec.log_file or (self.log_dir / f"{spec.name}.log" if self.log_dir else None)
        if target is not None and child.output is None:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            child.output = open(target, "ab", buffering=0)  # noqa: SIM115
        env = dict(os.environ if spec.env is None else spec.env)
        child.process = subprocess.Popen(
            list(spec.argv),
            env=env,
            cwd=spec.cwd,
            stdin=subprocess.DEVNULL,
            stdout=child.output,
            stderr=subprocess.STDOUT if child.output else None,
            start_new_session=True,
            preexec_fn=_prepare_child,
        )
        child.started_at = time.monotonic()
        child.restart_at = None
        child.ready = False
        self.log.info(
            "child_started",
            child=spec.name,
            pid=child.process.pid,
            command=" ".join(str(part) for part in spec.argv),
            **spec.describe,
        )

    def start(self) -> None:
        for child in self.children:
            if self._stop.is_set():
                return
            self._spawn(child)

    def _check_ready(self, child: _Child) -> None:
        if child.ready or child.process is None or child.process.poll() is not None:
            return
        try:
            ok = child.spec.ready is None or child.spec.ready()
        except Exception:  # a probe that raises just means "not yet"
            ok = False
        elapsed = time.monotonic() - child.started_at
        if ok:
            child.ready = True
            self.log.info("ready", child=child.spec.name, after_s=round(elapsed, 1))
            for name, callback in list(self._on_ready):
                if name == child.spec.name:
                    self._on_ready.remove((name, callback))
                    try:
                        callback()
                    except Exception as err:  # a failed hook must not take the demo down
                        self.log.error("ready_hook_failed", child=name, error=repr(err))
        elif elapsed > child.spec.ready_timeout_s and not getattr(child, "_slow_logged", False):
            child._slow_logged = True  # type: ignore[attr-defined]
            self.log.warning("not_ready_yet", child=child.spec.name, after_s=round(elapsed, 1))

    def _handle_exit(self, child: _Child, returncode: int) -> None:
        spec = child.spec
        uptime = time.monotonic() - child.started_at
        if spec.oneshot:
            child.finished = True
            level = self.log.info if returncode == 0 else self.log.error
            level(
                "oneshot_finished",
                child=spec.name,
                pid=child.process.pid,
                returncode=returncode,
                duration_s=round(uptime, 1),
            )
            return
        child.quick_failures = child.quick_failures + 1 if uptime < self.quick_failure_s else 0
        if child.quick_failures >= self.max_quick_failures and not spec.essential:
            child.finished = True
            self.log.error(
                "child_given_up",
                child=spec.name,
                returncode=returncode,
                consecutive_quick_exits=child.quick_failures,
                action="left stopped; the others keep running",
            )
            return
        if child.quick_failures >= self.max_quick_failures:
            self.log.error(
                "child_failing",
                child=spec.name,
                returncode=returncode,
                consecutive_quick_exits=child.quick_failures,
                action="stopping everything",
            )
            self.exit_code = 1
            self.request_stop(f"{spec.name} keeps failing")
            return
        delay = min(self.max_backoff_s, 2.0 ** max(0, child.quick_failures - 1))
        child.restart_at = time.monotonic() + delay
        self.log.warning(
            "child_exited",
            child=spec.name,
            pid=child.process.pid,
            returncode=returncode,
            uptime_s=round(uptime, 1),
            restart_in_s=delay,
        )

    def poll_once(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.finished or self._stop.is_set():
                continue
            if child.restart_at is not None:
                if now >= child.restart_at:
                    self._spawn(child)
                continue
            returncode = child.process.poll() if child.process else None
            if returncode is not None:
                self._handle_exit(child, returncode)
            else:
                self._check_ready(child)

    def run(self, poll_interval_s: float = 0.5) -> int:
        """Starts the children and supervises them until asked to stop; returns the exit code."""
        self.start()
        try:
            while not self._stop.wait(poll_interval_s):
                self.poll_once()
        finally:
            self.stop()
        return self.exit_code

    # -- shutdown ---------------------------------------------------------------------------

    def _signal_group(self, child: _Child, sig: int) -> bool:
        try:
            os.killpg(child.process.pid, sig)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return False

    def _group_alive(self, child: _Child) -> bool:
        return bool(live_group_members(child.process.pid))

    def stop(self) -> None:
        """Stops every child in `stop_order`: its signal to its group, a wait, then SIGKILL."""
        self._stop.set()
        running = [c for c in self.children if c.process is not None]
        self.log.info("stopping", reason=self._stop_reason or "exit", children=len(self.pids()))
        for order in sorted({c.spec.stop_order for c in running}):
            batch = [c for c in running if c.spec.stop_order == order]
            started = time.monotonic()
            for child in batch:
                if self._group_alive(child):
                    self._signal_group(child, child.spec.stop_signal)
            deadline = started + self.stop_timeout_s
            for child in batch:
                while (
                    child.process.poll() is None
                    and time.monotonic() < deadline
                    and not self._force.is_set()
                ):
                    time.sleep(0.05)
                returncode = child.process.poll()
                if returncode is None:
                    self._signal_group(child, signal.SIGKILL)
                    returncode = child.process.wait()
                    self.log.error(
                        "child_killed",
                        child=child.spec.name,
                        pid=child.process.pid,
                        after_s=round(time.monotonic() - started, 1),
                        reason="second interrupt" if self._force.is_set() else "stop timeout",
                    )
                else:
                    if not child.finished:
                        self.log.info(
                            "child_stopped",
                            child=child.spec.name,
                            pid=child.process.pid,
                            returncode=returncode,
                            after_s=round(time.monotonic() - started, 1),
                        )
                # Grandchildren (run workers, code servers) got the signal with the group;
                # whatever outlives its leader by a few seconds is killed, never orphaned.
                straggler_deadline = time.monotonic() + (0.0 if self._force.is_set() else 5.0)
                while self._group_alive(child) and time.monotonic() < straggler_deadline:
                    time.sleep(0.1)
                stragglers = live_group_members(child.process.pid)
                if stragglers:
                    self._signal_group(child, signal.SIGKILL)
                    gone_by = time.monotonic() + 5.0
                    while live_group_members(child.process.pid) and time.monotonic() < gone_by:
                        time.sleep(0.05)
                    self.log.warning(
                        "stragglers_killed",
                        child=child.spec.name,
                        pids=",".join(map(str, stragglers)),
                    )
                if child.output is not None:
                    child.output.close()
                    child.output = None
        self.log.info("stopped", exit_code=self.exit_code)
