"""Module-level repo objects for the ``feast`` CLI (``feast apply``/``plan``/``materialize``).

Feast collects objects by scanning module attributes, so each one is named here. They are
built over the ``features`` table of the configured TICKCAST_HOME; the platform does not
import this module, it calls ``definitions.build`` with the path from its own Settings.
"""

from __future__ import annotations

from feature_repo.definitions import build, default_table_path

_repo = build(default_table_path())

symbol = _repo.symbol
interval = _repo.interval
features_delta = _repo.batch_source
features_push = _repo.push_source
technical = _repo.technical
technical_1d = _repo.services["1d"]
technical_1m = _repo.services["1m"]
