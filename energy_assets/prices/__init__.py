"""Reference prices: the vendor Market Data API, hourly partitions in DuckDB."""
