"""The technical features: one implementation for the stream, the backfills and the scorer."""
