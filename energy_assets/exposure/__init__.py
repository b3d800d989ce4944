"""Trader exposure: positions, PnL against the reference price, and the desk dashboard."""
