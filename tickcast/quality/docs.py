"""GX data docs: static HTML under ``$TICKCAST_HOME/gx/data_docs``.

Layout under ``settings.gx_dir``::

    validations/<suite>/<run>/<time>/<layer>-<table>.json   GX validation results store
    data_docs/index.html                                    the site (suites + latest results)
    data_docs/static/vendor/                                its scripts, styles and fonts (docs_assets.py)

Bounded by construction: after each publish the results store keeps only the newest
result per (suite, layer-table), and GX's site builder removes the pages of results that
are no longer stored, so the tree holds one result per table whatever the uptime. Results
are stored trimmed (a sample of failing rows, not all of them), and only when docs are
published -- at most once per ``quality_docs_interval_seconds`` from the stream -- not on
every micro-batch.

The stream, batch jobs and ``tickcast quality --docs`` may publish at the same time from
different processes; an exclusive file lock serialises them. A GX context is built per
publish, in memory apart from the two filesystem stores above, so a process that never
validated (the CLI) rebuilds the site from the stored results without Spark.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from tickcast.core.settings import Settings
from tickcast.quality.docs_assets import install_vendor
from tickcast.quality.suites import SuiteFile

SITE_NAME = "tickcast"
RESULTS_KEPT_PER_TABLE = 1


@dataclass(frozen=True)
class DocsEntry:
    suite: str
    table: str
    layer: str
    run_id: str
    validated_at: datetime
    result: Any  # a GX ExpectationSuiteValidationResult


def results_dir(settings: Settings) -> Path:
    return settings.gx_dir / "validations"


def site_dir(settings: Settings) -> Path:
    return settings.gx_dir / "data_docs"


def index_path(settings: Settings) -> Path:
    return site_dir(settings) / "index.html"


def _path_safe(text: str) -> str:
    # Run names become directory names and URL segments.
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


@contextmanager
def _exclusive(lock_file: Path) -> Iterator[None]:
    with open(lock_file, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _context(settings: Settings, suites: Mapping[str, SuiteFile]) -> Any:
    from tickcast.quality.suites import quiet_gx_logging

    quiet_gx_logging()
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        progress_bars=ProgressBarsConfig(globally=False),
    )
    config.stores[config.validation_results_store_name] = {
        "class_name": "ValidationResultsStore",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(results_dir(settings))},
    }
    config.data_docs_sites = {
        SITE_NAME: {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            # GX's filesystem store, writing the pages with their CDN URLs pointed at the site's
            # own copies (docs_assets.py): the docs work without internet.
            "store_backend": {"module_name": "tickcast.quality.docs_assets", "class_name": "OfflineSiteStoreBackend",
                              "base_directory": str(site_dir(settings))},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
    }
    context = gx.get_context(project_config=config, mode="ephemeral")
    for spec in suites.values():
        context.suites.add(gx.ExpectationSuite(**spec.document))
    return context


def _store(context: Any, entry: DocsEntry) -> None:
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    key = ValidationResultIdentifier(
        expectation_suite_identifier=ExpectationSuiteIdentifier(name=entry.suite),
        run_id=RunIdentifier(run_name=_path_safe(f"{entry.layer}-{entry.run_id}"), run_time=entry.validated_at),
        batch_identifier=_path_safe(f"{entry.layer}-{entry.table}"),
    )
    context.validation_results_store.set(key, entry.result)


def _prune(context: Any, kept: int) -> None:
    store = context.validation_results_store
    by_table: dict[tuple[str, str], list[Any]] = {}
    for key in store.list_keys():
        by_table.setdefault((key.expectation_suite_identifier.name, key.batch_identifier), []).append(key)
    for keys in by_table.values():
        keys.sort(key=lambda k: k.run_id.run_time, reverse=True)
        for stale in keys[kept:]:
            store.remove_key(stale)


def _remove_empty_dirs(root: Path) -> None:
    """Removing a stored result leaves its run directories behind; drop the empty ones."""
    if not root.is_dir():
        return
    for directory, _, _ in sorted(os.walk(root), key=lambda walked: walked[0].count(os.sep), reverse=True):
        if Path(directory) != root:
            try:
                os.rmdir(directory)
            except OSError:
                pass  # not empty


def publish(settings: Settings, suites: Mapping[str, SuiteFile], entries: Sequence[DocsEntry]) -> Path:
    """Store ``entries``, prune older results and rebuild the site; returns its index.html."""
    settings.gx_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(settings.gx_dir / ".publish.lock"):
        context = _context(settings, suites)
        for entry in entries:
            _store(context, entry)
        _prune(context, RESULTS_KEPT_PER_TABLE)
        context.build_data_docs(site_names=[SITE_NAME])
        install_vendor(site_dir(settings))
        _remove_empty_dirs(results_dir(settings))
        _remove_empty_dirs(site_dir(settings) / "validations")
    return index_path(settings)
