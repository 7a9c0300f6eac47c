"""Import Feast without its process-wide side effect on Prometheus.

``feast.metrics``, imported by Feast itself, sets ``PROMETHEUS_MULTIPROC_DIR`` (and
``PROMETHEUS_MULTIPROCESS_DIR``) to a fresh temp directory when they are unset. Every
Prometheus exporter in the process, and every child process, then serves metrics from
that empty directory instead of its own registry: the API's ``/metrics`` loses its
request counters. Importing Feast through here leaves the environment as it was.
"""

from __future__ import annotations

import os
import sys

PROMETHEUS_ENV = ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR")


def import_feast_quietly() -> None:
    if "feast.metrics" in sys.modules:
        return
    # prometheus_client picks its value store when first imported: do that first, while
    # the environment still says "one process".
    import prometheus_client  # noqa: F401

    saved = {name: os.environ.get(name) for name in PROMETHEUS_ENV}
    try:
        import feast.metrics  # noqa: F401
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
