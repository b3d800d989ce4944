"""Markets are configuration: one YAML file each; a third market is a third file."""

from datetime import UTC, datetime
from pathlib import Path

import pytest

from energy_assets.markets import DEFAULT_MARKET, MARKETS, Market, MarketConfigError
from energy_assets.markets.config import load_markets, parse_market

PACKAGE = Path(__file__).parents[2] / "energy_assets" / "markets"


def test_the_contracts_two_markets_with_de_the_default():
    assert DEFAULT_MARKET == "DE"
    de, gb = MARKETS["DE"], MARKETS["GB"]
    assert (de.time_zone, de.currency, de.unit, de.products_minutes) == (
        "Europe/Berlin",
        "EUR",
        "euro/mwh",
        (60, 15),
    )
    assert (de.grid_minutes, de.gate_closure_minutes) == (15, 5)
    assert (gb.time_zone, gb.currency, gb.unit, gb.products_minutes) == (
        "Europe/London",
        "GBP",
        "gbp/mwh",
        (30,),
    )
    assert (gb.grid_minutes, gb.gate_closure_minutes) == (30, 60)
    start = datetime(2026, 6, 1, 10, tzinfo=UTC)
    assert gb.gate_closure(start) == datetime(2026, 6, 1, 9, tzinfo=UTC)


def test_a_third_market_is_one_more_file(tmp_path):
    for name in ("DE.yaml", "GB.yaml"):
        (tmp_path / name).write_text((PACKAGE / name).read_text())
    (tmp_path / "FR.yaml").write_text(
        "code: FR\ntime_zone: Europe/Paris\ncurrency: EUR\nunit: euro/mwh\n"
        "products_minutes: [60, 30, 15]\ngrid_minutes: 15\ngate_closure_minutes: 30\n"
        "market_data_url: https://vendor.example/v1\n"
    )
    markets = load_markets(tmp_path)
    assert sorted(markets) == ["DE", "FR", "GB"]
    assert markets["FR"] == Market(
        "FR", "Europe/Paris", "EUR", "euro/mwh", (60, 30, 15), 15, 30, "https://vendor.example/v1"
    )


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"time_zone": "Europe/Atlantis"}, "IANA zone"),
        ({"products_minutes": [60, 20]}, "multiples of the grid"),
        ({"grid_minutes": 0}, "whole minutes"),
        ({"code": "de"}, "capital ASCII"),
        ({"gate_closure_minutes": True}, "gate_closure_minutes"),
        ({"colour": "red"}, "unknown key"),
    ],
)
def test_a_market_file_that_describes_no_market_stops_the_start(change, problem):
    document = {
        "code": "FR",
        "time_zone": "Europe/Paris",
        "currency": "EUR",
        "unit": "euro/mwh",
        "products_minutes": [60, 15],
        "grid_minutes": 15,
        "gate_closure_minutes": 5,
        **change,
    }
    with pytest.raises(MarketConfigError, match=problem):
        parse_market(document, "FR.yaml")
