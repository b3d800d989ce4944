"""Playground: stand-ins for the exchange websocket and the Market Data API."""
