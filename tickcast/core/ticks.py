"""Tick messages as they travel on topic ``ticks``: their JSON schema (``kafka/ticks.schema.json``,
published for producers) and how the project's feeds encode them. What makes one storable is
``tickcast.core.tickrules``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any

import numpy as np
import orjson

from tickcast.core.settings import REPO_ROOT

SCHEMA_FILE = REPO_ROOT / "kafka" / "ticks.schema.json"
MAX_SYMBOL_LENGTH = 32


@cache
def tick_schema() -> dict[str, Any]:
    """The message's JSON schema."""
    return json.loads(SCHEMA_FILE.read_text())


SCHEMA_VERSION: int = tick_schema()["properties"]["schema_version"]["const"]


def format_ts(value: datetime) -> str:
    """ISO-8601 UTC with microseconds and a trailing Z; naive datetimes are taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now_iso() -> str:
    return format_ts(datetime.now(UTC))


def format_ts_array(values: np.ndarray) -> list[str]:
    """Vectorised ``format_ts`` for datetime64 values that are already UTC."""
    text = np.datetime_as_string(values.astype("datetime64[us]"), unit="us")
    return [t + "Z" for t in text.tolist()]


def make_tick(
    *,
    msg_id: str,
    symbol: str,
    ts: str,
    price: float,
    volume: float,
    source: str,
    produced_at: str,
    bid: float | None = None,
    ask: float | None = None,
) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "msg_id": msg_id,
        "symbol": symbol,
        "ts": ts,
        "price": price,
        "volume": volume,
        "bid": bid,
        "ask": ask,
        "source": source,
        "produced_at": produced_at,
    }


def encode_tick(tick: dict[str, Any]) -> bytes:
    return orjson.dumps(tick)


def encode_ticks(
    *,
    msg_ids: Sequence[str],
    symbols: Sequence[str],
    ts: Sequence[str],
    prices: Sequence[float],
    volumes: Sequence[float],
    source: str,
    produced_at: str,
    bids: Sequence[float | None] | None = None,
    asks: Sequence[float | None] | None = None,
) -> list[bytes]:
    """Encode many ticks at once; inputs are plain Python lists (``ndarray.tolist()``)."""
    n = len(msg_ids)
    bids = bids if bids is not None else [None] * n
    asks = asks if asks is not None else [None] * n
    dumps = orjson.dumps
    return [
        dumps(
            {
                "schema_version": SCHEMA_VERSION,
                "msg_id": msg_ids[i],
                "symbol": symbols[i],
                "ts": ts[i],
                "price": prices[i],
                "volume": volumes[i],
                "bid": bids[i],
                "ask": asks[i],
                "source": source,
                "produced_at": produced_at,
            }
        )
        for i in range(n)
    ]


def decode_tick(payload: bytes | str) -> dict[str, Any]:
    return orjson.loads(payload)


def validate_symbol(symbol: str) -> str:
    """Normalise a ticker given on the command line (upper case, no blanks)."""
    cleaned = (symbol or "").strip().upper()
    if not cleaned:
        raise ValueError("symbol must not be empty")
    if len(cleaned) > MAX_SYMBOL_LENGTH:
        raise ValueError(f"symbol {cleaned!r} is longer than {MAX_SYMBOL_LENGTH} characters")
    if any(ch.isspace() for ch in cleaned):
        raise ValueError(f"symbol {symbol!r} must not contain whitespace")
    return cleaned

