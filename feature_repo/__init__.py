"""TickCast's Feast feature repository (see definitions.py for the design).

A normal Feast repo: ``cd feature_repo && feast apply`` registers the objects against the
default TICKCAST_HOME (``./var`` at the project root). The platform itself imports
``definitions.build`` and configures Feast from ``Settings`` (``tickcast.catalog.featurestore``).
"""
