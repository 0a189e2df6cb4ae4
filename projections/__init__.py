"""Read models rebuilt from the streams: Postgres and DuckDB."""
