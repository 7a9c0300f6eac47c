"""The prediction contract (SPEC.md): the API model, and its JSON as stored and published."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    import pandas as pd

Signal = Literal["BUY", "SELL", "HOLD"]


class Probabilities(BaseModel):
    up: float = Field(ge=0, le=1)
    neutral: float = Field(ge=0, le=1)
    down: float = Field(ge=0, le=1)


class Prediction(BaseModel):
    symbol: str
    horizon: str
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
    data_timestamp: datetime
    predicted_at: datetime


_SCALAR_FIELDS = (
    "symbol", "horizon", "predicted_return", "predicted_price", "p10", "p50", "p90", "signal",
    "confidence", "model_name", "model_version",
)




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

    ``frame`` has the contract's columns with probabilities flattened into
    ``prob_up``/``prob_neutral``/``prob_down``; timestamps UTC (ISO 8601 in the JSON).
    """
    import orjson

    data_ts, predicted_at = iso_utc(frame["data_timestamp"]), iso_utc(frame["predicted_at"])
    columns = [frame[k].tolist() for k in _SCALAR_FIELDS]
    ups, neutrals, downs = (frame[f"prob_{k}"].tolist() for k in ("up", "neutral", "down"))
    rows = []
    for i, values in enumerate(zip(*columns, strict=True)):
        payload = dict(zip(_SCALAR_FIELDS, values, strict=True))
        payload["probabilities"] = {"up": ups[i], "neutral": neutrals[i], "down": downs[i]}
        payload["data_timestamp"], payload["predicted_at"] = data_ts[i], predicted_at[i]
        rows.append((values[0], data_ts[i], predicted_at[i], orjson.dumps(payload).decode()))
    return rows
