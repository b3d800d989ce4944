"""The supervisor with real child processes: order and signals of a stop, the kill after the
grace period, restarts, giving up, grandchildren, one-shot jobs, and a supervisor that dies."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from energy_assets.logs import EventLogger
from energy_assets.operations.supervisor import ChildSpec, Supervisor, live_group_members

# Seconds or more: supervised child processes.
pytestmark = pytest.mark.slow

#: A child that records the signal it gets (and when) in its file, then exits 0.
RECORDER = textwrap.dedent(
    """
    import signal, sys, time
    path = sys.argv[1]
    def handler(signum, frame):
        time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 0)
        with open(path, "a") as out:
            out.write(f"{signal.Signals(signum).name} {time.monotonic()}\\n")
        sys.exit(0)
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    # "started" only once the handlers are in place, so a test never signals too early.
    open(path, "w").write("started\\n")
    while True:
        time.sleep(0.05)
    """
)


def recorder(name: str, path: Path, **spec) -> ChildSpec:
    return ChildSpec(name=name, argv=[sys.executable, "-c", RECORDER, str(path)], **spec)


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("timed out waiting")


def started(*paths: Path) -> bool:
    return all(path.exists() and path.read_text().startswith("started") for path in paths)


def run_in_thread(supervisor: Supervisor) -> threading.Thread:
    thread = threading.Thread(target=supervisor.run, kwargs={"poll_interval_s": 0.05})
    thread.start()
    return thread


def lines(log: io.StringIO) -> list[str]:
    return log.getvalue().splitlines()


def test_stop_signals_each_child_in_order_and_waits(tmp_path: Path):
    first, second, third = (tmp_path / name for name in ("first", "second", "third"))
    out = io.StringIO()
    supervisor = Supervisor(
        [
            recorder("third", third, stop_order=2),
            recorder("first", first, stop_order=0),
            recorder("second", second, stop_signal=signal.SIGINT, stop_order=1),
        ],
        log=EventLogger("test", out),
        stop_timeout_s=10,
    )
    thread = run_in_thread(supervisor)
    wait_for(lambda: started(first, second, third))
    pids = supervisor.pids()

    supervisor.request_stop("test")
    thread.join(30)

    assert not thread.is_alive()
    got = {}
    for name, path in (("first", first), ("second", second), ("third", third)):
        signal_name, at = path.read_text().splitlines()[1].split()
        got[name] = (signal_name, float(at))
    assert got["first"][0] == "SIGTERM" and got["second"][0] == "SIGINT"
    assert got["first"][1] < got["second"][1] < got["third"][1]
    for pid in pids.values():
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    stopped = [line for line in lines(out) if "event=child_stopped" in line]
    assert len(stopped) == 3 and all("returncode=0" in line for line in stopped)
    assert supervisor.exit_code == 0


def test_a_child_that_ignores_its_signal_is_killed_after_the_timeout(tmp_path: Path):
    stubborn = [
        sys.executable,
        "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        f"open({str(tmp_path / 'up')!r}, 'w').close(); time.sleep(60)",
    ]
    out = io.StringIO()
    supervisor = Supervisor(
        [ChildSpec(name="stubborn", argv=stubborn)],
        log=EventLogger("test", out),
        stop_timeout_s=1.0,
    )
    thread = run_in_thread(supervisor)
    wait_for(lambda: (tmp_path / "up").exists())
    began = time.monotonic()
    supervisor.request_stop("test")
    thread.join(20)

    assert not thread.is_alive()
    assert 0.9 < time.monotonic() - began < 10
    assert any("event=child_killed child=stubborn" in line for line in lines(out))


def test_grandchildren_in_the_group_are_stopped_with_their_parent(tmp_path: Path):
    pid_file = tmp_path / "grandchild.pid"
    # The parent exits on SIGTERM at once; its child ignores SIGTERM, so it outlives it. The
    # grandchild writes its pid only once it ignores SIGTERM.
    grandchild_code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        f"open({str(pid_file)!r} + '.tmp', 'w').write(str(__import__('os').getpid())); "
        f"__import__('os').rename({str(pid_file)!r} + '.tmp', {str(pid_file)!r}); time.sleep(60)"
    )
    parent = textwrap.dedent(
        f"""
        import subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", {grandchild_code!r}])
        time.sleep(60)
        """
    )
    out = io.StringIO()
    supervisor = Supervisor(
        [ChildSpec(name="parent", argv=[sys.executable, "-c", parent])],
        log=EventLogger("test", out),
        stop_timeout_s=5,
    )
    thread = run_in_thread(supervisor)
    grandchild = int(wait_for(lambda: pid_file.exists() and pid_file.read_text()))
    group = supervisor.pids()["parent"]
    assert grandchild in live_group_members(group)

    supervisor.request_stop("test")
    thread.join(30)

    assert live_group_members(group) == []
    assert any("event=stragglers_killed child=parent" in line for line in lines(out))


def test_children_stop_on_sigterm_even_when_the_supervisor_ignores_it(tmp_path: Path):
    # As in a supervisor started in the background (SIGINT ignored) after a Dagster run in the
    # same process has given SIGTERM that disposition: ignored signals survive exec.
    sleeper = [
        sys.executable,
        "-c",
        f"open({str(tmp_path / 'up')!r}, 'w'); import time; time.sleep(60)",
    ]
    out = io.StringIO()
    supervisor = Supervisor(
        [ChildSpec(name="sleeper", argv=sleeper)], log=EventLogger("test", out), stop_timeout_s=5
    )
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        thread = run_in_thread(supervisor)
        wait_for(lambda: (tmp_path / "up").exists())
    finally:
        signal.signal(signal.SIGTERM, previous)
    supervisor.request_stop("test")
    thread.join(20)

    stopped = [line for line in lines(out) if "event=child_stopped child=sleeper" in line]
    assert stopped and f"returncode={-signal.SIGTERM}" in stopped[0], out.getvalue()


def test_a_dead_child_is_restarted_and_a_hopeless_one_stops_everything(tmp_path: Path):
    runs = tmp_path / "runs"
    crashing = [
        sys.executable,
        "-c",
        f"open({str(runs)!r}, 'a').write('x'); raise SystemExit(3)",
    ]
    steady = tmp_path / "steady"
    out = io.StringIO()
    supervisor = Supervisor(
        [ChildSpec(name="crashing", argv=crashing), recorder("steady", steady)],
        log=EventLogger("test", out),
        max_quick_failures=3,
        max_backoff_s=0.2,
    )
    thread = run_in_thread(supervisor)
    thread.join(30)

    assert not thread.is_alive()
    assert runs.read_text() == "xxx"
    assert supervisor.exit_code == 1
    log = "\n".join(lines(out))
    assert log.count("event=child_exited child=crashing") == 2
    assert "event=child_failing child=crashing" in log
    # The healthy child was stopped cleanly, not abandoned.
    assert steady.read_text().splitlines()[1].startswith("SIGTERM")


def test_oneshot_runs_once_after_readiness(tmp_path: Path):
    ready_flag = tmp_path / "ready"
    job_out = tmp_path / "job"
    out = io.StringIO()
    service = tmp_path / "service"
    supervisor = Supervisor(
        [recorder("service", service, ready=ready_flag.exists)],
        log=EventLogger("test", out),
    )
    supervisor.when_ready(
        "service",
        lambda: supervisor.launch(
            ChildSpec(
                name="job",
                argv=[sys.executable, "-c", f"open({str(job_out)!r}, 'a').write('done')"],
                oneshot=True,
            )
        ),
    )
    thread = run_in_thread(supervisor)
    wait_for(lambda: started(service))
    time.sleep(0.3)
    assert not job_out.exists()
    ready_flag.touch()
    wait_for(lambda: "event=oneshot_finished child=job" in out.getvalue())
    time.sleep(0.3)
    supervisor.request_stop("test")
    thread.join(30)

    assert job_out.read_text() == "done"
    assert "returncode=0" in next(line for line in lines(out) if "event=oneshot_finished" in line)


def test_children_die_with_a_killed_supervisor(tmp_path: Path):
    child_file = tmp_path / "child"
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from energy_assets.operations.supervisor import ChildSpec, Supervisor
        from tests.operations.test_supervisor import RECORDER
        Supervisor([ChildSpec(name="c", argv=[sys.executable, "-c", RECORDER,
                    {str(child_file)!r}])]).run()
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: started(child_file))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        wait_for(lambda: len(child_file.read_text().splitlines()) > 1)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert child_file.read_text().splitlines()[1].startswith("SIGTERM")


def test_a_hopeless_optional_child_is_given_up_while_the_rest_runs(tmp_path: Path):
    steady = tmp_path / "steady"
    out = io.StringIO()
    supervisor = Supervisor(
        [
            ChildSpec(
                name="optional", argv=[sys.executable, "-c", "raise SystemExit(4)"], essential=False
            ),
            recorder("steady", steady),
        ],
        log=EventLogger("test", out),
        max_quick_failures=2,
        max_backoff_s=0.1,
    )
    thread = run_in_thread(supervisor)
    wait_for(lambda: "event=child_given_up child=optional" in out.getvalue())
    time.sleep(0.5)
    assert thread.is_alive() and "steady" in supervisor.pids()
    supervisor.request_stop("test")
    thread.join(30)
    assert supervisor.exit_code == 0
    assert steady.read_text().splitlines()[1].startswith("SIGTERM")


def test_a_second_interrupt_kills_at_once(tmp_path: Path):
    up = tmp_path / "up"
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from energy_assets.operations.supervisor import ChildSpec, Supervisor
        stubborn = [sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
            "open({str(up)!r}, 'w').close(); time.sleep(120)"]
        supervisor = Supervisor([ChildSpec(name="stubborn", argv=stubborn)], stop_timeout_s=60)
        supervisor.install_signal_handlers()
        raise SystemExit(supervisor.run(poll_interval_s=0.05))
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        wait_for(up.exists)
        proc.send_signal(signal.SIGINT)
        time.sleep(1.0)
        assert proc.poll() is None  # still waiting out the stubborn child's grace period
        began = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(15)
        assert time.monotonic() - began < 10
    finally:
        if proc.poll() is None:
            proc.kill()
    log = proc.stderr.read()
    assert "event=child_killed child=stubborn" in log and 'reason="second interrupt"' in log
