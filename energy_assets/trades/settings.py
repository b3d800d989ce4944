"""Settings of the capture path that the shared `Settings` does not carry."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

from energy_assets.trades.buffer import DEFAULT_SEAL_FRAMES, DEFAULT_SEAL_SECONDS

#: Drained segments (and quarantine files) are deleted this long after they were written.
DEFAULT_RETENTION_HOURS = 72.0


@dataclass(frozen=True)
class CaptureSettings:
    retention: timedelta = timedelta(hours=DEFAULT_RETENTION_HOURS)
    seal_seconds: float = DEFAULT_SEAL_SECONDS
    seal_frames: int = DEFAULT_SEAL_FRAMES


def capture_settings(environ: dict[str, str] | None = None) -> CaptureSettings:
    """`ENERGY_CAPTURE_RETENTION_HOURS`, `ENERGY_CAPTURE_SEAL_SECONDS`,
    `ENERGY_CAPTURE_SEAL_FRAMES`, each with its default."""
    env = os.environ if environ is None else environ
    return CaptureSettings(
        retention=timedelta(
            hours=float(env.get("ENERGY_CAPTURE_RETENTION_HOURS") or DEFAULT_RETENTION_HOURS)
        ),
        seal_seconds=float(env.get("ENERGY_CAPTURE_SEAL_SECONDS") or DEFAULT_SEAL_SECONDS),
        seal_frames=int(env.get("ENERGY_CAPTURE_SEAL_FRAMES") or DEFAULT_SEAL_FRAMES),
    )
