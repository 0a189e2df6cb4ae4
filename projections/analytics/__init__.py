"""Analytics on DuckDB: rollups by minute, hour and day maintained next to
the ``traffic_event`` projection, and Parquet export by day.  The public
schema is documented in docs/analytics-schema.md."""
