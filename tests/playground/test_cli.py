"""`energy-assets playground` as an operator runs it: a process, its output, its signals."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from energy_assets.playground.server import Playground
from energy_assets.trades.deal import Deal, parse_frame
from tests.conftest import free_port

from .conftest import read_frames

COMMAND = str(Path(sys.executable).parent / "energy-assets")


def start(*options: str) -> tuple[subprocess.Popen, list[str]]:
    process = subprocess.Popen(
        [COMMAND, "playground", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = [process.stdout.readline() for _ in range(2)]
    return process, lines


def stop(process: subprocess.Popen, signum: int) -> int:
    process.send_signal(signum)
    try:
        return process.wait(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()


def test_listens_where_told_serves_both_and_stops_on_ctrl_c():
    exchange_port, market_data_port = free_port(), free_port()
    process, lines = start(
        "--exchange-port", str(exchange_port),
        "--market-data-port", str(market_data_port),
        "--rate", "50",
        "--seed", "7",
    )  # fmt: skip
    try:
        assert f"ws://127.0.0.1:{exchange_port}" in lines[0]
        assert f"http://127.0.0.1:{market_data_port}" in lines[1]
        frames = read_frames(f"ws://127.0.0.1:{exchange_port}", count=5).frames
        assert len(frames) == 5 and all(isinstance(parse_frame(text), Deal) for text in frames)
        answer = requests.get(
            f"http://127.0.0.1:{market_data_port}/v1/reference-price",
            params={"delivery_day": "2026-03-14", "delivery_hour": "23-24"},
            timeout=5,
        )
        assert answer.status_code == 200 and answer.json()["delivery_hour"] == "23-24"
    finally:
        returncode = stop(process, signal.SIGINT)
    assert returncode == 0
    assert "Traceback" not in process.stderr.read()


def test_switches_reach_the_services_and_sigterm_stops_cleanly():
    exchange_port, market_data_port = free_port(), free_port()
    process, lines = start(
        "--exchange-port", str(exchange_port),
        "--market-data-port", str(market_data_port),
        "--rate", "0",
        "--envelope", "trade_confirmation",
        "--close-every", "4",
        "--rate-limit-per-minute", "2",
        "--latency", "0.1",
    )  # fmt: skip
    try:
        assert "listening" in lines[0] and "listening" in lines[1]
        reading = read_frames(f"ws://127.0.0.1:{exchange_port}")
        assert len(reading.frames) == 4 and reading.closed.rcvd.code == 1000
        assert all("trade_confirmation" in json.loads(text) for text in reading.frames)
        url = f"http://127.0.0.1:{market_data_port}/reference-price"
        params = {"delivery_day": "2026-03-14", "delivery_hour": "00-01"}
        started = time.monotonic()
        statuses = [requests.get(url, params=params, timeout=5).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        assert time.monotonic() - started >= 0.3
    finally:
        returncode = stop(process, signal.SIGTERM)
    assert returncode == 0


def test_help_explains_every_switch():
    output = subprocess.run(
        [COMMAND, "playground", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for option in (
        "--host", "--exchange-port", "--market-data-port", "--rate", "--traders", "--seed",
        "--revise-every", "--vendor-grid", "--duplicate-rate", "--malformed-rate",
        "--close-every", "--drop-every", "--envelope", "--error-rate", "--latency",
        "--rate-limit-per-minute", "--rate-limit-per-hour",
    ):  # fmt: skip
        assert option in output


def test_a_taken_port_is_reported_not_a_traceback():
    exchange_port = free_port()
    with Playground(exchange_port=exchange_port, market_data_port=free_port()):
        result = subprocess.run(
            [COMMAND, "playground", "--exchange-port", str(exchange_port),
             "--market-data-port", str(free_port())],
            capture_output=True, text=True, timeout=15,
        )  # fmt: skip
    assert result.returncode != 0
    assert "cannot listen" in result.stderr and "Traceback" not in result.stderr
