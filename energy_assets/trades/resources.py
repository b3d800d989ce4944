"""The capture buffer as a Dagster resource (key `capture`)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dagster as dg

from energy_assets.settings import (
    DEFAULT_CAPTURE_DIR,
    DEFAULT_DRAIN_EARLY_BYTES,
    DEFAULT_DRAIN_INTERVAL_SECONDS,
    Settings,
    from_env,
)


class CaptureBufferResource(dg.ConfigurableResource):
    """Where the listener's sealed segments wait (`ENERGY_CAPTURE_DIR`), how long drained
    ones are kept (`ENERGY_CAPTURE_RETENTION_HOURS`), and how often they are drained
    (`ENERGY_DRAIN_INTERVAL_SECONDS`, earlier once `ENERGY_DRAIN_EARLY_BYTES` wait)."""

    directory: str
    retention_hours: float
    drain_interval_seconds: float = DEFAULT_DRAIN_INTERVAL_SECONDS
    drain_early_bytes: int = DEFAULT_DRAIN_EARLY_BYTES

    @property
    def path(self) -> Path:
        return Path(self.directory)

    @property
    def retention(self) -> timedelta:
        return timedelta(hours=self.retention_hours)


def capture_resource(settings: Settings) -> CaptureBufferResource:
    """The `capture` resource; its directory resolved from `ENERGY_CAPTURE_DIR` by each run."""
    return CaptureBufferResource(
        directory=from_env("ENERGY_CAPTURE_DIR", DEFAULT_CAPTURE_DIR),
        retention_hours=settings.capture_retention_hours,
        drain_interval_seconds=settings.drain_interval_seconds,
        drain_early_bytes=from_env("ENERGY_DRAIN_EARLY_BYTES", DEFAULT_DRAIN_EARLY_BYTES),
    )
