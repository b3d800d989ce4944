"""The journals' archive as a Dagster resource (key `archive`)."""

from __future__ import annotations

import dagster as dg
from upath import UPath

from energy_assets.settings import Settings


class ArchiveResource(dg.ConfigurableResource):
    """Where the deals' and prices' journals are archived (`ENERGY_ARCHIVE_URL`, default
    `<ENERGY_CAPTURE_DIR>/archive`; any fsspec URL) and how many days their files are kept
    (`ENERGY_ARCHIVE_RETENTION_DAYS`)."""

    url: str
    retention_days: int

    @property
    def root(self) -> UPath:
        return UPath(self.url)


def archive_resource(settings: Settings) -> ArchiveResource:
    return ArchiveResource(url=settings.archive, retention_days=settings.archive_retention_days)
