"""Trade capture: the exchange's deal confirmations, from websocket to DuckDB."""
