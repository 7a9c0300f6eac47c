"""Feed watermarks: the newest event time of each feed (source, symbol), saved after each batch."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FILES_KEPT = 5

Watermarks = dict[tuple[str, str], str]


class FeedWatermarks:
    """Newest event time per (source, symbol), saved after each batch.

    Batch b reads the state saved by the newest batch before b, so a replay of b
    sees exactly what its first run saw.
    """

    def __init__(self, directory: Path):
        self.directory = directory
        self._cached: tuple[int, Watermarks] | None = None

    def _files(self) -> list[tuple[int, Path]]:
        if not self.directory.exists():
            return []
        return sorted((int(p.stem), p) for p in self.directory.glob("*.json") if p.stem.isdigit())

    def before(self, batch_id: int) -> Watermarks:
        if self._cached is not None and self._cached[0] < batch_id:
            return self._cached[1]
        earlier = [(b, p) for b, p in self._files() if b < batch_id]
        if not earlier:
            return {}
        rows = json.loads(earlier[-1][1].read_text())
        return {(r["source"], r["symbol"]): r["max_ts"] for r in rows}

    def save(self, batch_id: int, state: Watermarks) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        rows = [{"source": s, "symbol": y, "max_ts": ts} for (s, y), ts in state.items()]
        tmp = self.directory / f".{batch_id}.json.tmp"
        tmp.write_text(json.dumps(rows))
        os.replace(tmp, self.directory / f"{batch_id}.json")
        self._cached = (batch_id, state)
        for _, old in self._files()[:-FILES_KEPT]:
            old.unlink(missing_ok=True)


def advance(state: Watermarks, maxima: Iterable[Any]) -> Watermarks:
    """``state`` moved forward by a batch's newest tick per feed (rows with ``source``,
    ``symbol`` and a naive UTC ``max_ts``); a feed's watermark never moves back."""
    advanced = dict(state)
    for row in maxima:
        key = (row["source"], row["symbol"])
        new = row["max_ts"].replace(tzinfo=UTC).isoformat()
        if key not in advanced or datetime.fromisoformat(advanced[key]) < datetime.fromisoformat(new):
            advanced[key] = new
    return advanced
