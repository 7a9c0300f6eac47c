"""Module-level repo objects for the ``feast`` CLI (``feast apply``/``plan``/``materialize``).

Feast collects objects by scanning module attributes, so each one is named here. They are
built over the ``features`` table of the configured TICKCAST_HOME; the platform does not
import this module, it calls ``definitions.build`` with the path from its own Settings.
"""

from __future__ import annotations

from feature_repo.definitions import build
from tickcast.catalog import tables
from tickcast.core.settings import load_settings

# The same settings as the platform's (the project's .env, a relative home taken from the
# project root), so `feast` run in this directory sees the platform's table.
_settings = load_settings()
_repo = build(tables.table_path(_settings, tables.FEATURES), tables.table_path(_settings, tables.ALT_FEATURES))

symbol = _repo.symbol
interval = _repo.interval
features_delta = _repo.batch_source
features_push = _repo.push_source
technical = _repo.technical
technical_1d = _repo.services["1d"]
technical_1m = _repo.services["1m"]
alt_features_delta = _repo.alt_source
alternative = _repo.alternative
technical_1d_v2 = _repo.alt_service
