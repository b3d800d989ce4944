"""The one settings object: each `ENERGY_*` variable typed, an empty one is the default, a bad
one refused with its name before anything starts."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from energy_assets.settings import DEFAULT_DASHBOARD_PORT, Settings, settings


def test_variables_are_read_typed_and_empty_ones_are_the_defaults():
    current = Settings.from_env(
        {
            "ENERGY_DASHBOARD_PORT": "9050",
            "ENERGY_DRAIN_INTERVAL_SECONDS": "0",
            "ENERGY_CAPTURE_DIR": "/srv/capture",
            "ENERGY_ARCHIVE_URL": "",
            "ENERGY_MARKET_DATA_BUDGET": "off",
            "UNRELATED": "x",
        }
    )
    assert current.dashboard_port == 9050 and current.drain_interval_seconds == 0.0
    assert current.capture_dir == Path("/srv/capture")
    assert current.archive == "/srv/capture/archive"
    assert not current.market_data_budget_enabled
    assert Settings.from_env({}).dashboard_port == DEFAULT_DASHBOARD_PORT


def test_the_process_environment_is_read_now(monkeypatch):
    monkeypatch.setenv("ENERGY_PRICES_BACKFILL_DAYS", "-1")
    assert settings().prices_backfill_days == -1
    monkeypatch.setenv("ENERGY_PRICES_BACKFILL_DAYS", "")
    assert settings().prices_backfill_days == 2


def test_a_bad_value_is_refused_naming_it():
    with pytest.raises(ValidationError, match="dashboard_port"):
        Settings.from_env({"ENERGY_DASHBOARD_PORT": "eighty"})
    secret = Settings.from_env({"ENERGY_DESK_SESSION_SECRET": "s3cret"})
    assert "s3cret" not in repr(secret)
