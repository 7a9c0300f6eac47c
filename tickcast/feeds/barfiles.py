"""Bar files in the layouts Yahoo Finance exports, parsed into a tidy DataFrame.

Accepted: the CSV download (``Date,Open,High,Low,Close,Adj Close,Volume``), the
table copied from the web page (tab separated, ``Jan 2, 2024``, ``1,234.56``,
``Close*``, dividend and split lines), yfinance's ``to_csv`` output (``Datetime``
with a UTC offset, optionally its three-line header), in any column order and any
header case. Rows that are not price bars are skipped, counted and reported.
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

PRICE_COLUMNS = ("open", "high", "low", "close")
VALUE_COLUMNS = (*PRICE_COLUMNS, "volume")
DATE_COLUMNS = ("datetime", "date", "timestamp")  # first match wins
BAR_COLUMNS = ["ts", "open", "high", "low", "close", "volume"]
DAILY_UNITS = ("d", "wk", "mo")

# Wall-clock formats tried on the date column; the one that parses most rows wins,
# ties go to the earlier entry (so 01/02/2024 is January 2nd, as Yahoo writes it).
DATE_FORMATS = (
    "ISO8601",
    "%m/%d/%Y",
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %I:%M %p",
    "%m/%d/%Y %I:%M:%S %p",
    "%m/%d/%y",
    "%b %d, %Y",
    "%B %d, %Y",
    "%b %d, %Y %I:%M %p",
    "%d/%m/%Y",
    "%d/%m/%Y %H:%M",
    "%d/%m/%Y %H:%M:%S",
    "%d %b %Y",
    "%d-%b-%Y",
    "%d-%b-%y",
    "%Y/%m/%d",
    "%Y/%m/%d %H:%M:%S",
    "%Y%m%d",
)

_TZ_SUFFIX = re.compile(
    r"^(?P<wall>.*?\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)\s*(?P<tz>Z|UTC|GMT|[+-]\d{2}:?\d{2})?$"
)
_INTERVAL = re.compile(r"^(?P<n>\d+)(?P<unit>s|m|h|d|wk|mo)$")


class BarFileError(ValueError):
    """A bar file cannot be used (missing columns, nothing usable, unreadable)."""


@dataclass
class BarFile:
    path: Path
    bars: pd.DataFrame
    interval: str
    skipped: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def daily(self) -> bool:
        """True for daily, weekly and monthly bars (stamped by calendar date)."""
        return interval_is_daily(self.interval)

    @property
    def interval_delta(self) -> pd.Timedelta | None:
        return interval_timedelta(self.interval)


def interval_is_daily(interval: str) -> bool:
    match = _INTERVAL.match(interval)
    return bool(match) and match.group("unit") in DAILY_UNITS


def interval_timedelta(interval: str) -> pd.Timedelta | None:
    """Fixed length of an interval; None for months (not a fixed length)."""
    match = _INTERVAL.match(interval)
    if not match:
        raise BarFileError(f"not an interval: {interval!r} (use e.g. 1m, 5m, 1h, 1d)")
    n, unit = int(match.group("n")), match.group("unit")
    if unit == "mo":
        return None
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400, "wk": 7 * 86400}[unit]
    return pd.Timedelta(seconds=n * seconds)


def parse_bar_file(path: str | Path, *, interval: str | None = None) -> BarFile:
    """Parse a bar file; ``interval`` overrides the detected bar interval."""
    path = Path(path)
    if not path.exists():
        raise BarFileError(f"{path}: no such file")
    if not path.is_file():
        raise BarFileError(f"{path}: not a file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BarFileError(f"{path}: not a text file ({exc.reason})") from exc
    return parse_bar_text(text, name=path, interval=interval)


def parse_bar_text(text: str, *, name: str | Path = "<text>", interval: str | None = None) -> BarFile:
    path = Path(name)
    if interval is not None:
        interval_timedelta(interval)  # validates
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise BarFileError(f"{path}: the file is empty")
    lines = _collapse_yfinance_header(lines)
    sep = _delimiter(lines[0])

    bad_lines: list[list[str]] = []
    try:
        raw = pd.read_csv(
            io.StringIO("\n".join(lines)),
            sep=sep,
            dtype=str,
            keep_default_na=False,
            skipinitialspace=True,
            engine="python",
            on_bad_lines=lambda fields: bad_lines.append(fields) and None,
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise BarFileError(f"{path}: cannot read as a table of bars ({exc})") from exc

    columns = _map_columns(raw.columns, path)
    frame = pd.DataFrame({key: raw[col].fillna("").astype(str).str.strip() for key, col in columns.items()})
    date_key = next(k for k in DATE_COLUMNS if k in columns)

    values = {
        col: pd.to_numeric(frame[col].str.replace(",", "", regex=False), errors="coerce")
        for col in VALUE_COLUMNS
    }
    wall, utc = _parse_dates(frame[date_key])
    notes: list[str] = []
    usable = wall.notna()
    for col in VALUE_COLUMNS:
        usable &= values[col].notna() & np.isfinite(values[col])
    not_bars = int((~usable).sum()) + len(bad_lines)
    if not_bars:
        examples = [" ".join(f"{v}" for v in frame.loc[i].tolist() if v)[:60]
                    for i in frame.index[~usable][:2]]
        examples += [sep.join(f)[:60] for f in bad_lines[: max(0, 2 - len(examples))]]
        notes.append(
            f"skipped {not_bars} row(s) that are not price bars (dividends, splits, "
            f"null or '-' values), e.g. {'; '.join(repr(e) for e in examples)}"
        )

    bars = pd.DataFrame({col: values[col] for col in VALUE_COLUMNS})
    bars["wall"], bars["utc"] = wall, utc
    bars = bars[usable]
    if bars.empty:
        raise BarFileError(
            f"{path}: no usable price bars"
            + (f" ({not_bars} row(s) skipped as not price bars)" if not_bars else "")
        )

    inconsistent = (
        (bars[list(PRICE_COLUMNS)] <= 0).any(axis=1)
        | (bars["volume"] < 0)
        | (bars["high"] < bars[["open", "close", "low"]].max(axis=1))
        | (bars["low"] > bars[["open", "close", "high"]].min(axis=1))
    )
    if inconsistent.any():
        first = bars[inconsistent].iloc[0]
        notes.append(
            f"skipped {int(inconsistent.sum())} bar(s) with impossible values (non-positive price, "
            f"negative volume or high/low not enclosing open/close), first at {first['wall']}"
        )
        bars = bars[~inconsistent]
        if bars.empty:
            raise BarFileError(f"{path}: no usable price bars (all rows have impossible values)")

    interval = interval or _detect_interval(bars["wall"], bars["utc"], path)
    if interval_is_daily(interval):
        # Daily bars belong to the calendar date printed in the file, whatever its offset.
        bars["ts"] = bars["wall"].dt.normalize().dt.tz_localize("UTC")
    else:
        bars["ts"] = bars["utc"].dt.tz_localize("UTC")

    dupes = bars["ts"].duplicated(keep="last")
    if dupes.any():
        notes.append(f"skipped {int(dupes.sum())} duplicate bar(s) for the same time (kept the last)")
        bars = bars[~dupes]

    bars = bars.sort_values("ts", kind="stable")[BAR_COLUMNS].reset_index(drop=True)
    bars["ts"] = bars["ts"].astype("datetime64[ns, UTC]")
    for col in VALUE_COLUMNS:
        bars[col] = bars[col].astype("float64")
    skipped = not_bars + int(inconsistent.sum()) + int(dupes.sum())
    for note in notes:
        log.warning("%s: %s", path.name, note)
    return BarFile(path=path, bars=bars, interval=interval, skipped=skipped, notes=notes)


def _collapse_yfinance_header(lines: list[str]) -> list[str]:
    """yfinance >= 0.2.48 writes ``Price,...`` / ``Ticker,...`` / ``Date,,,`` header lines."""
    if len(lines) >= 3:
        first = lines[0].split(",")[0].strip().lower()
        second = lines[1].split(",")[0].strip().lower()
        third = lines[2].split(",")
        if first == "price" and second == "ticker" and third[0].strip().lower() in DATE_COLUMNS:
            if all(not cell.strip() for cell in third[1:]):
                header = lines[0].split(",")
                header[0] = third[0].strip()
                return [",".join(header), *lines[3:]]
    return lines


def _delimiter(header: str) -> str:
    if "\t" in header:
        return "\t"
    if header.count(";") > header.count(","):
        return ";"
    return ","


def _normalise_header(name: object) -> str:
    text = str(name).strip().strip("*").strip().lower()
    text = re.sub(r"[\s_.]+", " ", text)
    return text


def _map_columns(columns: pd.Index, path: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for col in columns:
        key = _normalise_header(col)
        if key in (*DATE_COLUMNS, *VALUE_COLUMNS):
            if key in found:
                raise BarFileError(f"{path}: column {key!r} appears more than once")
            found[key] = col
    date_keys = [k for k in DATE_COLUMNS if k in found]
    # Keep exactly one date column: Datetime beats Date beats Timestamp.
    for extra in date_keys[1:]:
        del found[extra]
    missing = [c.capitalize() for c in VALUE_COLUMNS if c not in found]
    if not date_keys:
        missing.insert(0, "Date (or Datetime)")
    if missing:
        present = ", ".join(str(c) for c in columns)
        raise BarFileError(
            f"{path}: missing required column(s): {', '.join(missing)} (found: {present})"
        )
    return found


def _parse_dates(raw: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Return (wall-clock time as written, UTC instant), both naive datetime64."""
    parts = raw.str.extract(_TZ_SUFFIX)
    wall_text = parts["wall"].fillna(raw)
    tz = parts["tz"]

    best: pd.Series | None = None
    best_count = -1
    candidates = wall_text[wall_text != ""]
    for fmt in DATE_FORMATS:
        parsed = pd.to_datetime(wall_text, format=fmt, errors="coerce")
        if parsed.dt.tz is not None:
            parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
        count = int(parsed.notna().sum())
        if count > best_count:
            best, best_count = parsed, count
        if count == len(candidates):
            break
    assert best is not None
    wall = best.astype("datetime64[ns]")

    sign = tz.str[0].map({"+": 1, "-": -1}).astype("float64")
    digits = tz.str.replace(":", "", regex=False).str[1:]
    hours = pd.to_numeric(digits.str[:2], errors="coerce")
    minutes = pd.to_numeric(digits.str[2:4], errors="coerce")
    offset_min = (sign * (hours * 60 + minutes)).fillna(0.0)  # Z, UTC, GMT, none: UTC
    utc = wall - pd.to_timedelta(offset_min, unit="m")
    return wall, utc


def _detect_interval(wall: pd.Series, utc: pd.Series, path: Path) -> str:
    has_time_of_day = bool((wall != wall.dt.normalize()).any())
    if has_time_of_day:
        step = _typical_step(utc)
        if step is None:
            raise BarFileError(
                f"{path}: one intraday bar is not enough to tell the bar interval; pass --interval"
            )
        if step < pd.Timedelta(days=1):
            seconds = int(step.total_seconds())
            if seconds < 60 or seconds % 60:
                return f"{seconds}s"
            if seconds % 3600 == 0:
                return f"{seconds // 3600}h"
            return f"{seconds // 60}m"
    dates = wall.dt.normalize()
    step = _typical_step(dates)
    if step is None:
        return "1d"
    days = max(1, round(step / pd.Timedelta(days=1)))
    shortest = dates.drop_duplicates().sort_values().diff().dropna().min()
    # Any two bars less than a week apart: daily bars with gaps (weekends, holidays, missing days).
    if shortest < pd.Timedelta(days=5) or days <= 4:
        return "1d"
    if 5 <= days <= 10:
        return "1wk"
    if 27 <= days <= 32:
        return "1mo"
    if 88 <= days <= 93:
        return "3mo"
    # Yahoo exports no other spacing: read as daily bars with gaps.
    return "1d"


def _typical_step(times: pd.Series) -> pd.Timedelta | None:
    """Most common positive spacing between consecutive bars (smallest on ties)."""
    diffs = times.drop_duplicates().sort_values().diff().dropna()
    diffs = diffs[diffs > pd.Timedelta(0)]
    if diffs.empty:
        return None
    counts = diffs.value_counts()
    top = counts[counts == counts.max()].index.min()
    return pd.Timedelta(top)
