"""Feast commands under `tickcast features` (apply, training-set, online reads)."""

from __future__ import annotations

import typer


def register(features_app: typer.Typer) -> None:
    """Add the Feast commands to the `tickcast features` group."""
