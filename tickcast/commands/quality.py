"""`tickcast quality`: data-quality results (Great Expectations) per table."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add `tickcast quality` to the CLI."""
