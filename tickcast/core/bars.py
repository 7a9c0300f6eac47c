"""How ticks fold into a bar, declared once for the stream (Spark) and the live scorer (numpy).

A bar is built in two steps that both engines share:

* a **partial**: what one batch of ticks of a (symbol, window) makes (``partial`` of each field);
* a **merge**: how a partial ``s`` folds into the bar ``t`` already held (``merge``), so partials
  of different batches combine exactly whatever order they arrive in: ``open`` and ``close``
  carry the event times that decide them (``open_ts``, ``close_ts``).

Within a batch, ties on the event time go to the smaller ``msg_id`` for the open and the larger
for the close; across batches, an equal ``open_ts`` keeps the bar held and an equal
``close_ts`` takes the newer partial (a tick folded alone is a partial of one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# How a field is made from a batch of ticks.
Partial = Literal["first", "last", "max", "min", "sum", "count"]
# How a partial's field folds into the held bar's.
Merge = Literal["earlier", "later", "max", "min", "sum"]


@dataclass(frozen=True)
class BarField:
    name: str
    partial: Partial
    # The tick column a partial reads (None for count).
    of: str | None
    merge: Merge
    # For "earlier"/"later": the field whose time decides.
    decided_by: str | None = None


BAR_FOLD: tuple[BarField, ...] = (
    BarField("open", "first", "price", "earlier", decided_by="open_ts"),
    BarField("high", "max", "price", "max"),
    BarField("low", "min", "price", "min"),
    BarField("close", "last", "price", "later", decided_by="close_ts"),
    BarField("volume", "sum", "volume", "sum"),
    BarField("trades", "count", None, "sum"),
    BarField("open_ts", "min", "ts", "min"),
    BarField("close_ts", "max", "ts", "max"),
)
BAR_FIELDS: tuple[str, ...] = tuple(f.name for f in BAR_FOLD)
# The tick columns a fold reads, and what breaks a tie on the event time within a batch.
TIME_COLUMN = "ts"
TIE_BREAK_COLUMN = "msg_id"


def merge_bar(held: dict, new: dict) -> dict:
    """Partials folded into held bars: dicts of ``BAR_FIELDS`` to numpy arrays (or numbers), each
    field decided from the bar as it was, as a MERGE's SET clauses are. The held bars have their
    event times (the live scorer fills them when it loads bars without them)."""
    import numpy as np

    merged = {}
    for field in BAR_FOLD:
        old, value = held[field.name], new[field.name]
        if field.merge == "earlier":
            merged[field.name] = np.where(new[field.decided_by] < held[field.decided_by], value, old)
        elif field.merge == "later":
            merged[field.name] = np.where(new[field.decided_by] >= held[field.decided_by], value, old)
        elif field.merge == "max":
            merged[field.name] = np.maximum(old, value)
        elif field.merge == "min":
            merged[field.name] = np.minimum(old, value)
        else:
            merged[field.name] = old + value
    return merged
