"""Corporate actions: splits and cash dividends, their file and their factors (pure).

``spark_jobs.corporate_actions`` applies them to the stored bars (``tickcast corporate-actions
apply FILE``); everything here is plain Python.

The file
--------
A CSV with the header ``symbol,ex_date,action,value`` (any column order, case and blanks
around names ignored; blank lines and lines starting with ``#`` are skipped)::

    symbol,ex_date,action,value
    # a 4-for-1 split, a 1-for-10 reverse split (same as 0.1), a cash dividend per share
    AAPL,2020-08-31,split,4
    XYZ,2024-05-02,split,1:10
    MSFT,2024-02-14,dividend,0.75

* ``symbol``: as stored in the bars (case matters), matching ``tickcast.core.symbols.SYMBOL_PATTERN``.
* ``ex_date``: ``YYYY-MM-DD``, the first trading day without the split/dividend; bars are
  UTC, so "before the ex-date" means ``window_start`` before ``ex_date`` 00:00 UTC.
* ``action``: ``split`` or ``dividend``.
* ``value``: for a split the ratio new:old shares, as a number (``2``, ``0.1``) or as text
  (``2:1``, ``1:10``); for a dividend the cash amount per share, in the currency of the
  prices as traded the day before the ex-date. Must be positive.

Every row is checked before anything is touched; a bad file is refused as a whole with
one message per bad line (``CorporateActionsError``).

The adjustment
--------------
Standard back-adjustment (as in Yahoo's adjusted prices and CRSP's factors): history is
rewritten so that a return computed across an ex-date is the holder's economic return,
and the newest prices stay the prices as traded. For every bar before the ex-date:

* split with ratio ``r``: open, high, low, close x ``1/r``; volume x ``r``;
* dividend ``D``: open, high, low, close x ``1 - D / C``, where ``C`` is the close of the last
  bar before the ex-date as it traded (stored close with the factors of already applied
  later actions taken out); volume unchanged.

A bar's factor is the product over all actions of its symbol with an ex-date after it, so
a file with several actions of one symbol composes them. (A dividend sharing its ex-date
with a split is compared with the pre-split close, i.e. read as per pre-split share.)
``corporate_actions`` keeps each action with the price factor used (``adjustment_factor``;
a split's volume factor is its inverse).
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Literal

from tickcast.core.symbols import SYMBOL_PATTERN

HEADER = ("symbol", "ex_date", "action", "value")
ACTIONS = ("split", "dividend")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_RATIO = re.compile(r"^\s*([0-9.eE+-]+)\s*:\s*([0-9.eE+-]+)\s*$")


class CorporateActionsError(ValueError):
    """The file (or what it asks for) cannot be applied; nothing was changed."""

    def __init__(self, source: str, problems: Sequence[str]):
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s), nothing was applied:\n{lines}")


@dataclass(frozen=True)
class CorporateAction:
    """One row of a corporate-actions file; ``line`` is its line number in the file."""

    symbol: str
    ex_date: date
    action: Literal["split", "dividend"]
    value: float
    line: int = field(default=0, compare=False)

    @property
    def action_id(self) -> str:
        # repr() of the float is exact and stable, so "2:1", "2" and "2.0" share one id.
        key = f"{self.symbol}|{self.ex_date.isoformat()}|{self.action}|{float(self.value)!r}"
        return hashlib.sha256(key.encode()).hexdigest()[:32]

    @property
    def ex_start(self) -> datetime:
        """00:00 UTC of the ex-date: bars starting before it are adjusted."""
        return datetime(self.ex_date.year, self.ex_date.month, self.ex_date.day, tzinfo=UTC)

    def describe(self) -> str:
        if self.action == "split":
            return f"{self.symbol} {_ratio_text(self.value)} split, ex-date {self.ex_date}"
        return f"{self.symbol} dividend {self.value:g} per share, ex-date {self.ex_date}"


@dataclass(frozen=True)
class AppliedAction:
    """An action with the factors it applies to the bars before its ex-date."""

    action: CorporateAction
    price_factor: float
    volume_factor: float
    # The as-traded close a dividend's factor was computed from (None for splits).
    reference_close: float | None = None

    def describe(self) -> str:
        text = f"{self.action.describe()}: prices x {self.price_factor:.10g}"
        if self.volume_factor != 1.0:
            text += f", volumes x {self.volume_factor:.10g}"
        if self.reference_close is not None:
            text += f" (close before the ex-date {self.reference_close:g})"
        return text


# -- the file ---------------------------------------------------------------------------


def _ratio_text(ratio: float) -> str:
    if ratio < 1 and math.isclose(1 / ratio, round(1 / ratio), rel_tol=1e-9):
        return f"1:{round(1 / ratio)}"
    return f"{ratio:g}:1"


def _positive(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) and number > 0 else None


def _parse_value(action: str, text: str) -> float | str:
    """The row's value as a float, or the problem with it."""
    if action == "split":
        ratio = _RATIO.match(text)
        if ratio:
            new, old = _positive(ratio.group(1)), _positive(ratio.group(2))
            if new is None or old is None:
                return f"split ratio {text!r} needs two positive numbers (e.g. 2:1 or 1:10)"
            return new / old
        number = _positive(text)
        if number is None:
            return f"split ratio {text!r} is not a positive number or a ratio like 2:1 or 1:10"
        return number
    number = _positive(text)
    if number is None:
        return f"dividend {text!r} is not a positive cash amount per share"
    return number


def _parse_row(cells: dict[str, str]) -> CorporateAction | str:
    symbol = cells["symbol"].strip()
    ex_text = cells["ex_date"].strip()
    action = cells["action"].strip().lower()
    value_text = cells["value"].strip()
    problems = []
    if not re.match(SYMBOL_PATTERN, symbol):
        problems.append(f"symbol {symbol!r} does not match {SYMBOL_PATTERN}")
    ex_date = None
    if not _DATE.match(ex_text):
        problems.append(f"ex_date {ex_text!r} is not a date like 2024-03-01")
    else:
        try:
            ex_date = date.fromisoformat(ex_text)
        except ValueError:
            problems.append(f"ex_date {ex_text!r} is not a valid date")
    value: float | str | None = None
    if action not in ACTIONS:
        problems.append(f"action {cells['action'].strip()!r} is unknown (expected split or dividend)")
    else:
        value = _parse_value(action, value_text)
        if isinstance(value, str):
            problems.append(value)
    if problems:
        return "; ".join(problems)
    assert ex_date is not None and isinstance(value, float)
    return CorporateAction(symbol=symbol, ex_date=ex_date, action=action, value=value)  # type: ignore[arg-type]


def parse_corporate_actions(path: str | Path) -> list[CorporateAction]:
    """The actions of a corporate-actions CSV, in file order; raises ``CorporateActionsError``
    listing every bad line (a missing file or header counts as one)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise CorporateActionsError(str(path), ["no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CorporateActionsError(str(path), [f"cannot be read: {exc}"]) from None

    reader = csv.reader(text.splitlines())
    header: list[str] | None = None
    problems: list[str] = []
    actions: list[CorporateAction] = []
    first_line: dict[str, int] = {}
    for cells in reader:
        line = reader.line_num
        if not cells or all(not c.strip() for c in cells) or cells[0].lstrip().startswith("#"):
            continue
        if header is None:
            header = [c.strip().lower() for c in cells]
            if sorted(header) != sorted(HEADER):
                raise CorporateActionsError(str(path), [
                    f"line {line}: the header must name the columns {','.join(HEADER)} "
                    f"(found: {','.join(c.strip() for c in cells)})"
                ])
            continue
        if len(cells) != len(header):
            problems.append(f"line {line}: {len(cells)} field(s), expected {len(header)} ({','.join(header)})")
            continue
        parsed = _parse_row(dict(zip(header, cells, strict=True)))
        if isinstance(parsed, str):
            problems.append(f"line {line}: {parsed}")
            continue
        action = CorporateAction(parsed.symbol, parsed.ex_date, parsed.action, parsed.value, line)
        # The same action twice would be applied once (ids are per action); a repeated row is
        # more likely a mistake than an intention, so it is refused.
        if action.action_id in first_line:
            problems.append(f"line {line}: repeats line {first_line[action.action_id]} ({action.describe()})")
            continue
        first_line[action.action_id] = line
        actions.append(action)
    if header is None:
        raise CorporateActionsError(str(path), [f"line 1: empty file; expected the header {','.join(HEADER)}"])
    if problems:
        raise CorporateActionsError(str(path), problems)
    if not actions:
        raise CorporateActionsError(str(path), ["no actions below the header"])
    return actions


# -- the adjustment ------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """Bars of ``symbol`` with ``valid_from <= window_start < valid_to`` take these factors."""

    symbol: str
    valid_from: datetime | None
    valid_to: datetime
    price_factor: float
    volume_factor: float


def adjustment_segments(adjustments: Sequence[AppliedAction]) -> list[Segment]:
    """Cut each symbol's history at its ex-dates; each piece gets the product of the factors
    of the actions with an ex-date after it, so one MERGE applies a whole file."""
    by_symbol: dict[str, list[AppliedAction]] = {}
    for adj in adjustments:
        by_symbol.setdefault(adj.action.symbol, []).append(adj)
    segments = []
    for symbol, adjs in sorted(by_symbol.items()):
        previous = None
        for ex_start in sorted({a.action.ex_start for a in adjs}):
            later = [a for a in adjs if a.action.ex_start >= ex_start]
            segments.append(Segment(
                symbol, previous, ex_start,
                math.prod(a.price_factor for a in later), math.prod(a.volume_factor for a in later),
            ))
            previous = ex_start
    return segments


def split_factors(action: CorporateAction) -> tuple[float, float]:
    """(price factor, volume factor) of a split."""
    return 1.0 / action.value, action.value


def dividend_factor(action: CorporateAction, close_as_traded: float) -> float | str:
    """Price factor of a dividend, or why it cannot be applied."""
    if not (math.isfinite(close_as_traded) and close_as_traded > 0):
        return f"the close before the ex-date is {close_as_traded!r}; cannot scale by it"
    factor = 1.0 - action.value / close_as_traded
    if factor <= 0:
        return (f"dividend {action.value:g} is not below the close {close_as_traded:g} of the last bar "
                "before the ex-date")
    return factor
