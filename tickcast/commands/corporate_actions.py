"""`tickcast corporate-actions ...`: splits and dividends applied to the stored history."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the `corporate-actions` group to the CLI."""
