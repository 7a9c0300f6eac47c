"""The dashboard's pages, in the order the navigation bar lists them.

Each module has ``NAME`` and ``TITLE``; ``PATH`` (a fixed path, listed in the navigation bar) or
``PATH_TEMPLATE`` (with a variable, e.g. ``/symbol/<symbol>``, reached by links);
``layout(data, **url_parameters)`` (the path variables and query parameters, so that a URL
restores the view) and ``register(app, data)``, which adds the page's callbacks.
"""

from dashboard.pages import alerts, models, pipeline, quality, symbol, watchlist

PAGES = (
    watchlist,
    symbol,
    models,
    quality,
    pipeline,
    alerts,
)
