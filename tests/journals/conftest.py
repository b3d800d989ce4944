"""The journals' tests use the trade capture's listener and the prices' scripted vendor."""

from tests.prices.conftest import scripted_market_data  # noqa: F401
from tests.trades.conftest import thread_listener  # noqa: F401
