"""The prediction contract (SPEC.md), declared once as the pydantic model ``Prediction``.

Everything else is generated from it: the API's response models (they extend it), the
column order of the scorers' frames (``FRAME_COLUMNS``: the probabilities flattened into
``prob_<class>`` so a frame stays flat), the Arrow schema that the Delta ``predictions`` table
is created with and appended in (``arrow_schema``, ``frame_to_arrow``), and the JSON that the
online store keeps and the Kafka ``predictions`` topic carries (``frame_payloads``).

It also says when a prediction is stale (``is_stale``): the rule the API's ``stale`` flag and
the dashboard follow.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any, Literal, get_args

from pydantic import BaseModel, Field

from tickcast.core.intervals import horizon_interval

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

Signal = Literal["BUY", "SELL", "HOLD"]
# Which model served a prediction: the normal-day models, or (with earnings-day routing) the
# earnings-day model for a bar in its symbol's earnings window.
Route = Literal["normal", "earnings"]
DEFAULT_ROUTE: Route = "normal"
EARNINGS_ROUTE: Route = "earnings"


class Probabilities(BaseModel):
    up: float = Field(ge=0, le=1)
    neutral: float = Field(ge=0, le=1)
    down: float = Field(ge=0, le=1)


class Prediction(BaseModel):
    symbol: str
    horizon: str = Field(description="How far ahead it looks, in bars of the interval it was made from: "
                         "days (5d) for daily bars, minutes or hours (30m, 1h) for minute bars")
    predicted_return: float
    predicted_price: float
    p10: float
    p50: float
    p90: float
    probabilities: Probabilities
    signal: Signal
    confidence: float = Field(ge=0, le=1)
    model_name: str
    model_version: str
    route: Route = DEFAULT_ROUTE
    data_timestamp: datetime
    predicted_at: datetime

    def is_stale(self, now: datetime | None = None) -> bool:
        """Whether the data behind it is stale at ``now`` (default: now); see ``is_stale``."""
        return is_stale(self.data_timestamp, self.horizon, now if now is not None else datetime.now(UTC))


def stale_after(horizon: str) -> timedelta:
    """How old the data behind a prediction of ``horizon`` may be before it is stale: the
    ``stale_after`` of the interval of its bars (4 days for daily bars, 15 minutes for minute
    bars). ValueError for a horizon that names no interval."""
    return horizon_interval(horizon).stale_after


def is_stale(data_timestamp: datetime, horizon: str, now: datetime) -> bool:
    """Whether a prediction made from data of ``data_timestamp`` is stale at ``now``.

    The rule, once for the platform: a prediction is stale when its data is older than its
    interval allows, ``now - data_timestamp > stale_after(horizon)`` (strictly: exactly
    ``stale_after`` old is not stale yet). The interval is the one of the bars the prediction
    was made from, which its ``horizon`` names (``5d``: daily bars; ``30m``, ``1h``: minute
    bars), not the horizon's length: a 5-day prediction from daily bars is as fresh as a 1-day
    one. ``stale_after`` is the longest gap the market makes in that interval's data without
    anything being wrong (``tickcast.core.intervals``): daily data survives a weekend and a
    holiday, minute data a quarter of an hour. Older means the feed, the bars or the scorer
    stopped for the symbol, and the prediction describes a market that has since moved on.

    ``data_timestamp`` and ``now`` must both carry a zone (or both be naive UTC). ValueError
    for a horizon that names no interval.
    """
    return now - data_timestamp > stale_after(horizon)


FIELDS: tuple[str, ...] = tuple(Prediction.model_fields)
CLASSES: tuple[str, ...] = tuple(Probabilities.model_fields)
# What identifies a prediction: never null in the table.
KEY_FIELDS: tuple[str, ...] = ("symbol", "horizon")
_NESTED = "probabilities"
_TIMES: tuple[str, ...] = tuple(name for name, f in Prediction.model_fields.items() if f.annotation is datetime)
# The fields that are plain values in a frame, in contract order (everything but the nested
# probabilities and the two instants, which get their own encoding).
_SCALARS: tuple[str, ...] = tuple(name for name in FIELDS if name != _NESTED and name not in _TIMES)


def probability_column(cls: str) -> str:
    return f"prob_{cls}"


# A scorer frame: one row per prediction, the contract's fields in order, the probabilities flat.
FRAME_COLUMNS: tuple[str, ...] = tuple(
    column for name in FIELDS
    for column in ([probability_column(c) for c in CLASSES] if name == _NESTED else [name])
)


def empty_frame() -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(columns=list(FRAME_COLUMNS))


def _arrow_type(annotation: Any) -> pa.DataType:
    import pyarrow as pa

    if annotation is float:
        return pa.float64()
    if annotation is str or get_args(annotation) and all(isinstance(a, str) for a in get_args(annotation)):
        return pa.string()
    if annotation is datetime:
        return pa.timestamp("us", tz="UTC")
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return pa.struct([pa.field(n, _arrow_type(f.annotation)) for n, f in annotation.model_fields.items()])
    raise TypeError(f"no Arrow type for {annotation!r}")


@cache
def arrow_schema() -> pa.Schema:
    """The ``predictions`` table's schema: one column per contract field."""
    import pyarrow as pa

    return pa.schema([pa.field(name, _arrow_type(f.annotation), nullable=name not in KEY_FIELDS)
                      for name, f in Prediction.model_fields.items()])


def frame_to_arrow(frame: pd.DataFrame) -> pa.Table:
    """A scorer frame as rows of the ``predictions`` table."""
    import pandas as pd
    import pyarrow as pa

    schema = arrow_schema()
    columns = []
    for field in schema:
        if field.name == _NESTED:
            columns.append(pa.StructArray.from_arrays(
                [pa.array(frame[probability_column(c)], pa.float64()) for c in CLASSES], names=list(CLASSES)))
        elif field.name in _TIMES:
            columns.append(pa.array(pd.to_datetime(frame[field.name], utc=True), field.type))
        else:
            columns.append(pa.array(frame[field.name], field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def iso_utc(values) -> list[str]:
    """``Timestamp.isoformat()`` of each instant in UTC (fraction only when there is one), without
    a Timestamp per value: the scorer formats two per prediction, 5,000 predictions a cycle."""
    import numpy as np
    import pandas as pd

    ns = pd.DatetimeIndex(pd.to_datetime(values, utc=True)).tz_localize(None).as_unit("ns").asi8
    fraction = ns % 1_000_000_000
    seconds = np.datetime_as_string((ns - fraction).astype("datetime64[ns]"), unit="s")
    return [f"{s}+00:00" if f == 0 else f"{s}.{f // 1000:06d}+00:00" if f % 1000 == 0 else f"{s}.{f:09d}+00:00"
            for s, f in zip(seconds.tolist(), fraction.tolist(), strict=True)]


def frame_payloads(frame: pd.DataFrame) -> list[tuple[str, str, str, str]]:
    """(symbol, data_timestamp, predicted_at, contract JSON) for each row of a scorer frame.

    The JSON has the contract's fields in order; instants are ISO 8601 in UTC.
    """
    import orjson

    columns = {name: frame[name].tolist() for name in _SCALARS}
    columns.update({name: iso_utc(frame[name]) for name in _TIMES})
    classes = [(c, frame[probability_column(c)].tolist()) for c in CLASSES]
    ordered = [(name, columns.get(name)) for name in FIELDS]
    rows = []
    for i in range(len(frame)):
        payload: dict[str, Any] = {name: column[i] if column is not None else {c: values[i] for c, values in classes}
                   for name, column in ordered}
        rows.append((payload["symbol"], payload["data_timestamp"], payload["predicted_at"],
                     orjson.dumps(payload).decode()))
    return rows


def frame_to_predictions(frame: pd.DataFrame) -> list[Prediction]:
    """Rows of a scorer frame as contract objects."""
    import orjson

    return [Prediction.model_validate(orjson.loads(payload)) for *_, payload in frame_payloads(frame)]
