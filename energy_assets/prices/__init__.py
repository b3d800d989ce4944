"""Reference prices: the vendor Market Data API, each market's local-hour partitions in DuckDB."""
