"""The GX data docs as static files, for the dashboard to mount (at ``/quality/docs``).

The site is what ``tickcast.quality.docs.publish`` builds under ``$TICKCAST_HOME/gx/data_docs``:
HTML pages whose every script, stylesheet, font and image is a file of the site itself, named
by a path relative to the page (``tickcast/quality/docs_assets.py``), so it renders without
internet under whatever prefix it is mounted at. Until the docs are built (by the stream, or by
``tickcast quality --docs``), every URL answers a 404 page saying so. The site is looked up on
each request: docs built after the dashboard started are served without a restart.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.responses import HTMLResponse, RedirectResponse
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from tickcast.quality.docs import index_path, site_dir

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from tickcast.core.settings import Settings

NOT_BUILT = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Data docs not built yet</title>
<style>body {{ font-family: system-ui, sans-serif; max-width: 42rem; margin: 4rem auto; line-height: 1.5; }}
code {{ background: #f2f2f2; padding: 0 .25rem; }}</style></head>
<body>
<h1>The data quality docs have not been built yet</h1>
<p>The Great Expectations data docs are written to <code>{site}</code> when the stream publishes
its validation results, at most once per <code>quality_docs_interval_seconds</code>.</p>
<p>To build them now from the stored results (the expectation suites alone if nothing was
validated yet), run:</p>
<pre><code>tickcast quality --docs</code></pre>
</body>
</html>
"""


class _Site:
    """The site's files (``index.html`` for a directory), or the not-built page."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.files = StaticFiles(directory=site_dir(settings), html=True, check_dir=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # no WebSocket here; lifespan is the Starlette app's
            return
        if not index_path(self.settings).is_file():
            page = NOT_BUILT.format(site=escape(str(site_dir(self.settings))))
            await HTMLResponse(page, status_code=404)(scope, receive, send)
            return
        root = scope.get("root_path", "")
        path = scope["path"]
        if path in ("", root):
            # The pages name their assets relative to index.html: it must be asked for as a
            # directory (/quality/docs/), or ./static/... resolves one level too high.
            query = scope.get("query_string", b"").decode("latin-1")
            await RedirectResponse(f"{root}/" + (f"?{query}" if query else ""))(scope, receive, send)
            return
        await self.files(scope, receive, send)


def data_docs_app(settings: Settings) -> Starlette:
    """An ASGI app serving the data docs site of ``settings`` (mount it at any prefix)."""
    return Starlette(routes=[Mount("/", app=_Site(settings))])
