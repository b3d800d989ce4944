"""The benchmark scripts run, each at a small size: two of them had failed unnoticed for days
(a frame with columns the code had dropped), and benchmarks/README.md gives their commands.
The figures themselves are measured by hand, at the sizes the README names."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

SMALL = [
    "capture.py --only drain --drain-rows 5000 --handoff-repeats 1",
    "capture.py --only listener --listener-deals 2000 --baseline-deals 200",
    "live.py --only rebuild --hours 0.05 --renew-after 2",
    "live.py --only traders --traders 50 --trader-deals 200",
    "rebuild.py --deals 2000 --price-days 1",
    "pricing.py --near-share 0.8 --replay --minutes 2",
    "playground.py --deals 500 --hours 10",
    "prices.py --hours 4 --concurrency 4",
]


@pytest.mark.slow
@pytest.mark.parametrize("command", SMALL)
def test_a_benchmark_runs_and_prints_its_figures(command, tmp_path):
    script, *args = command.split()
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert any(char.isdigit() for char in done.stdout), done.stdout
