"""TickCast's tests (a package, so it is found before a `tests` package some wheels install)."""
