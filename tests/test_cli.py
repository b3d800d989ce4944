"""The commands refuse what they cannot work with, at start: exit status 2 and the reason in
one line, never a traceback, and nothing changed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["dashboard", "--port", "99999"], "argument --port: must be >= 0 and <= 65535"),
        (["dashboard", "--streams-per-client", "0"], "argument --streams-per-client: must be >= 1"),
        (["rebuild", "--archive", "foo://x"], "cannot open the archive foo://x: Unsupported"),
        (["rebuild", "--archive", "s3://bucket/energy"], "Install s3fs to access S3"),
        (["replay", "--at", "2026-12-01T10:00Z", "--archive", "foo://x"], "replay refused"),
    ],
)
def test_a_command_given_what_it_cannot_use_says_why_and_exits_2(tmp_path, args, said):
    warehouse = tmp_path / "warehouse.duckdb"
    done = subprocess.run(
        [sys.executable, "-m", "energy_assets.cli", *args],
        cwd=REPO,
        env={
            **os.environ,
            "ENERGY_CAPTURE_DIR": str(tmp_path / "capture"),
            "ENERGY_DUCKDB_PATH": str(warehouse),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert said in done.stderr and "Traceback" not in done.stderr
    assert not warehouse.exists()
