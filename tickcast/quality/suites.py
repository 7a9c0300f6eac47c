"""The expectation suites in ``expectations/``, read without importing Great Expectations.

The files are GX's own suite JSON (``name``, ``expectations`` of ``type`` + ``kwargs``), so
``gx`` users can read, diff and load them as they are. This module only reads them and
derives what the gate needs before GX is involved: the name each expectation is reported
under, the columns a suite reads, and the ``$PARAMETER`` names it expects.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from tickcast.core.settings import REPO_ROOT

SUITES_DIR = REPO_ROOT / "expectations"
REASON_PREFIX = "expectation:"


def expectation_name(expectation_type: str, kwargs: dict[str, Any]) -> str:
    """How an expectation is named in results and quarantine reasons, e.g.
    ``expect_column_values_to_be_between(price)`` or
    ``expect_compound_columns_to_be_unique(symbol,window_start)``.

    Expectations that judge the table as a whole (no column) are named by their type alone.
    """
    if "column" in kwargs:
        columns = [kwargs["column"]]
    elif "column_A" in kwargs and "column_B" in kwargs:
        columns = [kwargs["column_A"], kwargs["column_B"]]
    elif "column_list" in kwargs:
        columns = list(kwargs["column_list"])
    else:
        return expectation_type
    return f"{expectation_type}({','.join(columns)})"


def reason(name: str) -> str:
    """The quarantine reason for rows failing the expectation called ``name``."""
    return f"{REASON_PREFIX}{name}"


def _parameters_in(value: Any) -> set[str]:
    if isinstance(value, dict):
        if set(value) == {"$PARAMETER"}:
            return {value["$PARAMETER"]}
        return set().union(*(_parameters_in(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_parameters_in(v) for v in value)) if value else set()
    return set()


@dataclass(frozen=True)
class SuiteExpectation:
    type: str
    kwargs: dict[str, Any]

    @property
    def name(self) -> str:
        return expectation_name(self.type, self.kwargs)

    @property
    def columns(self) -> tuple[str, ...]:
        kw = self.kwargs
        if "column" in kw:
            return (kw["column"],)
        if "column_A" in kw:
            return (kw["column_A"], kw["column_B"])
        return tuple(kw.get("column_list") or kw.get("column_set") or ())


@dataclass(frozen=True)
class SuiteFile:
    name: str
    path: Path
    document: dict[str, Any]

    @property
    def expectations(self) -> tuple[SuiteExpectation, ...]:
        return tuple(SuiteExpectation(e["type"], e.get("kwargs", {})) for e in self.document["expectations"])

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column the suite reads, in first-mention order."""
        seen: dict[str, None] = {}
        for expectation in self.expectations:
            seen.update(dict.fromkeys(expectation.columns))
        return tuple(seen)

    @property
    def parameters(self) -> frozenset[str]:
        return frozenset(_parameters_in([e.get("kwargs", {}) for e in self.document["expectations"]]))


class SuiteError(ValueError):
    """A suite file is missing or malformed."""


def _load(path: Path) -> SuiteFile:
    try:
        document = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SuiteError(f"{path}: {exc}") from exc
    if document.get("name") != path.stem:
        raise SuiteError(f"{path}: suite name {document.get('name')!r} differs from the file name")
    suite = SuiteFile(path.stem, path, document)
    names = [e.name for e in suite.expectations]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        # Reasons and result rows are keyed by name; two expectations sharing one would merge.
        raise SuiteError(f"{path}: expectations share a name: {', '.join(duplicates)}")
    return suite


@lru_cache(maxsize=4)
def load_suites(directory: Path = SUITES_DIR) -> dict[str, SuiteFile]:
    """Every ``*.json`` suite in ``directory``, by name."""
    return {path.stem: _load(path) for path in sorted(directory.glob("*.json"))}


def suite_file(name: str, directory: Path = SUITES_DIR) -> SuiteFile:
    suites = load_suites(directory)
    try:
        return suites[name]
    except KeyError:
        raise SuiteError(
            f"no expectation suite {name!r} in {directory} (have: {', '.join(suites) or 'none'})"
        ) from None


def quiet_gx_logging() -> None:
    """GX logs its own import and every context at INFO; keep that out of the job logs
    unless someone configured the ``great_expectations`` logger on purpose."""
    gx_logger = logging.getLogger("great_expectations")
    if gx_logger.level == logging.NOTSET:
        gx_logger.setLevel(logging.WARNING)
