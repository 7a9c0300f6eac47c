"""The analyst dashboard: a multi-page Dash app behind a sign-in.

``create_app(settings)`` returns the Dash app. It runs on Dash's FastAPI backend so that the
same production ASGI server as the API (uvicorn) serves it: ``asgi_app`` is the factory
``tickcast serve dashboard`` hands to uvicorn, with the settings it loaded. Beside Dash's own
routes the server has the sign-in (``dashboard.security``), the watchlist's push stream
(``dashboard.stream``) and the GX data docs (``/quality/docs``). Every asset is served by the
app itself: nothing is loaded from a CDN. Callbacks are coroutines that push the blocking
reads to worker threads, so one slow read never stalls other browsers.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dashboard.data import DashboardData
from dashboard.pages import PAGES

if TYPE_CHECKING:
    import dash

    from tickcast.auth.users import UserStore
    from tickcast.catalog.market import MarketStore
    from tickcast.core.settings import Settings

log = logging.getLogger("tickcast.dashboard")

ASSETS = Path(__file__).parent / "assets"


def _asset_urls(suffix: str) -> list[str]:
    """Our assets, named in every page's HTML. Dash would add the assets folder's files itself, but
    its FastAPI backend lists them only after a request to one of Dash's own routes, so a first
    visit to a deep link (``/symbol/AAPL``) came without them. The content hash keeps browsers
    from running an old copy after an upgrade."""
    import hashlib

    return [f"/assets/{path.name}?v={hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"
            for path in sorted(ASSETS.glob(f"*.{suffix}"))]


def _navigation() -> Any:
    from dash import dcc, html

    links = [dcc.Link(page.NAME, href=page.PATH, id=f"nav-{page.__name__.rsplit('.', 1)[-1]}")
             for page in PAGES if hasattr(page, "PATH")]
    return html.Nav([
        html.Span("TickCast", className="brand"),
        *links,
        html.Span([html.Span(id="nav-user"), " · ", html.A("Sign out", href="/logout", id="sign-out")],
                  className="user"),
    ], className="topnav")


def create_app(settings: Settings, store: MarketStore | None = None, users: UserStore | None = None) -> dash.Dash:
    import dash
    import dash_ag_grid  # noqa: F401 - registers its components before the index is built
    from dash import Dash, Input, Output, html

    from dashboard import security, stream
    from dashboard.datadocs import data_docs_app
    from tickcast.auth.users import UserStore

    data = DashboardData(settings, store)
    app = Dash(
        __name__,
        backend="fastapi",
        use_pages=True,
        pages_folder="",
        assets_folder=str(ASSETS),
        include_assets_files=False,
        external_stylesheets=_asset_urls("css"),
        external_scripts=_asset_urls("js"),
        title="TickCast",
        update_title=None,  # no "Updating..." flicker in the tab on every refresh
        health_endpoint="healthz",
        suppress_callback_exceptions=True,  # each page's components exist only on that page
        serve_locally=True,
    )
    for page in PAGES:
        dash.register_page(
            page.__name__,
            path=getattr(page, "PATH", None),
            path_template=getattr(page, "PATH_TEMPLATE", None),
            name=page.NAME,
            title=page.TITLE,
            layout=functools.partial(page.layout, data),
        )
        page.register(app, data)
    app.layout = html.Div([_navigation(), html.Div(dash.page_container, className="page")])

    @app.callback(Output("nav-user", "children"), Input("nav-user", "id"))
    def signed_in_as(_id: str) -> str:
        return security.current_user.get() or ""

    server = app.server
    stream.install(server, data)
    server.mount("/quality/docs", data_docs_app(settings), name="datadocs")
    security.install(server, settings, users or UserStore(settings.dashboard_users_path))
    return app


def asgi_app(settings: Settings):
    """The dashboard as an ASGI app (Dash's FastAPI server), for uvicorn."""
    return create_app(settings).server
