"""The one settings object: each `ENERGY_*` variable typed, an empty one is the default, a bad
one refused with its name before anything starts."""

import math
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import settings as settings_profile
from hypothesis import strategies as st
from pydantic import ValidationError

from energy_assets.cli import main
from energy_assets.operations.demo import DemoOptions
from energy_assets.settings import DEFAULT_DASHBOARD_PORT, Settings, refusal, settings


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


# Values an operator's typo, a template left unrendered or a hostile environment may give.
_VALUES = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["nan", "inf", "-inf", "1e309", "-1", "0", "65536", "٣", "３", "8050\n"]),
    st.integers(min_value=-(10**400), max_value=10**400).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
)
_NAMES = sorted(Settings.model_fields)


@settings_profile(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(_NAMES), _VALUES, max_size=6))
def test_any_environment_gives_settings_or_names_each_bad_variable(values):
    environ = {f"ENERGY_{name.upper()}": value for name, value in values.items()}
    try:
        current = Settings.from_env(environ)
    except ValidationError as error:
        told = refusal(error)
        bad = {".".join(map(str, e["loc"])) for e in error.errors()}
        assert bad and all(f"ENERGY_{name.upper()}:" in told for name in bad)
        return
    # Accepted: every number usable as what it is.
    assert 0 <= current.dashboard_port <= 65535
    for name in ("drain_interval_seconds", "capture_seal_seconds", "capture_retention_hours"):
        value = getattr(current, name)
        assert math.isfinite(value) and value >= 0, name
    assert current.capture_seal_frames >= 1 and current.market_data_concurrency >= 1
    assert current.run_retention_days > 0 and current.desk_session_hours > 0
    # ... and every instant the platform computes from a duration exists (an archive
    # retention of 10**9 days was accepted once and made every drain fail).
    now = datetime.now(UTC)
    now - timedelta(hours=current.capture_retention_hours)
    now - timedelta(days=current.run_retention_days)
    now.date() - timedelta(days=current.archive_retention_days)
    now - timedelta(days=max(0, current.prices_backfill_days) + 1)
    now + timedelta(hours=current.desk_session_hours)
    now + timedelta(seconds=current.drain_interval_seconds + current.capture_seal_seconds)


_DEMO_NAMES = [n for n in DemoOptions.model_fields if n not in ("dagster_home", "dagster_instance")]
# These go through the process environment, which cannot hold a NUL (execve and os.environ
# refuse it): no operator can give one.
_ENVIRON_VALUES = _VALUES.filter(lambda value: "\x00" not in value)


@settings_profile(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(_DEMO_NAMES), _ENVIRON_VALUES, max_size=4))
def test_any_demo_environment_gives_options_or_names_each_bad_one(values):
    environ = {f"ENERGY_DEMO_{name.upper()}": value for name, value in values.items()}
    with mock.patch.dict(os.environ, environ):
        try:
            options = DemoOptions()
        except ValidationError as error:
            told = refusal(error, "ENERGY_DEMO_", flags=True)
            for e in error.errors():
                field = e["loc"][0]
                assert f"--{field.replace('_', '-')} / ENERGY_DEMO_{field.upper()}:" in told
            return
    for port in ("ui_port", "exchange_port", "market_data_port", "dashboard_port"):
        assert 1 <= getattr(options, port) <= 65535


def test_the_command_refuses_a_bad_variable_by_name_without_a_traceback(monkeypatch, capsys):
    monkeypatch.setenv("ENERGY_CAPTURE_SEAL_SECONDS", "inf")
    monkeypatch.setenv("ENERGY_DASHBOARD_PORT", "80800")
    assert main(["listen"]) == 2
    err = capsys.readouterr().err
    assert "ENERGY_CAPTURE_SEAL_SECONDS: Input should be a finite number" in err
    assert "ENERGY_DASHBOARD_PORT: Input should be less than or equal to 65535" in err
    assert "Traceback" not in err
    monkeypatch.delenv("ENERGY_CAPTURE_SEAL_SECONDS")
    monkeypatch.delenv("ENERGY_DASHBOARD_PORT")
    assert main(["demo", "--exchange-port", "0"]) == 2
    assert "--exchange-port / ENERGY_DEMO_EXCHANGE_PORT: " in capsys.readouterr().err
