"""The capture buffer as a Dagster resource (key `capture`)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dagster as dg

from energy_assets.settings import (
    DEFAULT_DRAIN_EARLY_BYTES,
    DEFAULT_DRAIN_INTERVAL_SECONDS,
    Settings,
)
from energy_assets.trades.settings import CaptureSettings


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


def capture_resource(settings: Settings, capture: CaptureSettings) -> CaptureBufferResource:
    return CaptureBufferResource(
        directory=str(settings.capture_dir),
        retention_hours=capture.retention.total_seconds() / 3600,
        drain_interval_seconds=settings.drain_interval_seconds,
        drain_early_bytes=settings.drain_early_bytes,
    )
