"""API keys: hashed, scoped and rate-limited, shared by the API and the CLI."""
