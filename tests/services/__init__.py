"""Real servers the tests start for themselves (PostgreSQL, an S3-compatible store)."""
