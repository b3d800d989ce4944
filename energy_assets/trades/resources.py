"""The capture buffer as a Dagster resource (key `capture`)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dagster as dg

from energy_assets.settings import Settings
from energy_assets.trades.settings import CaptureSettings


class CaptureBufferResource(dg.ConfigurableResource):
    """Where the listener's sealed segments wait (`ENERGY_CAPTURE_DIR`) and how long drained
    ones are kept (`ENERGY_CAPTURE_RETENTION_HOURS`)."""

    directory: str
    retention_hours: float

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
    )
