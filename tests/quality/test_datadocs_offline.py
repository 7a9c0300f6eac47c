"""The GX data docs work without internet (issue 17): no page or stylesheet of the built site
loads anything from another host, every asset it names is a file of the site, and the
dashboard's ``data_docs_app`` serves it under its prefix."""

from __future__ import annotations

import logging
import re
import threading
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from dashboard.datadocs import data_docs_app
from tests.quality.quality_rows import T0, frame, tick
from tickcast.core.settings import Settings
from tickcast.quality import QualityGate, docs_assets
from tickcast.quality.docs import index_path, site_dir

PREFIX = "/quality/docs"
CSS_URL = re.compile(r"""url\(\s*['"]?([^'")]+)['"]?\s*\)|@import\s+['"]([^'"]+)['"]""")


class _Loads(HTMLParser):
    """What a page loads by itself: scripts, stylesheets, icons, images, frames, and the url()s
    of its inline styles. (An <a href> is a link a reader may follow, not a load.)"""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []  # (kind, url)
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        if tag == "script" and attributes.get("src"):
            self.urls.append(("script", attributes["src"]))
        elif tag == "link" and attributes.get("href"):
            rel = attributes.get("rel", "")
            self.urls.append(("stylesheet" if "stylesheet" in rel else f"link {rel}", attributes["href"]))
        elif tag in ("img", "iframe", "source", "embed") and attributes.get("src"):
            self.urls.append((tag, attributes["src"]))
        elif tag == "style":
            self._in_style = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.urls.extend(("style url()", a or b) for a, b in CSS_URL.findall(data))


def page_loads(html: str) -> list[tuple[str, str]]:
    parser = _Loads()
    parser.feed(html)
    return parser.urls


def css_loads(css: str) -> list[tuple[str, str]]:
    return [("css url()", a or b) for a, b in CSS_URL.findall(css)]


def _external(url: str) -> bool:
    parts = urlsplit(url)
    return bool(parts.netloc) or parts.scheme in ("http", "https")


def _local_target(base: Path, url: str) -> Path | None:
    """The file a local URL names, seen from ``base`` (the page's or stylesheet's directory)."""
    parts = urlsplit(url)
    if parts.scheme or not parts.path or url.startswith("#"):
        return None  # data: URIs, fragments
    return (base / parts.path).resolve()


@pytest.fixture(scope="module")
def site(spark, base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Data docs as the stream leaves them: the three suites and one validation result."""
    settings = base_settings.model_copy(update={"home": tmp_path_factory.mktemp("datadocs") / "home"})
    gate = QualityGate(settings)
    ticks = frame(spark, "ticks", [tick(0), tick(1, price=-1.0)])
    gate.validate(ticks, "ticks", ["msg_id"], {"ts_max": T0 + timedelta(minutes=30)}, table="ticks",
                  layer="stream", run_id="app:1")
    assert gate.publish_docs(force=True) == index_path(settings)
    return settings


def test_gx_itself_would_load_from_cdns() -> None:
    """What this file guards against: GX's own templates name CDNs (if a GX upgrade stops
    doing so, docs_assets.py may go)."""
    import great_expectations

    templates = Path(great_expectations.__file__).parent / "render" / "view" / "templates"
    imports = (templates / "js_script_imports.j2").read_text()
    assert "https://cdn.jsdelivr.net/npm/vega@5" in imports
    assert "https://code.jquery.com/jquery-3.7.1.min.js" in imports
    assert set(docs_assets.CDN_FILES) >= set(re.findall(r'(?:src|href)="(https://[^"]+)"', imports))


def test_no_page_or_stylesheet_loads_from_another_host(site: Settings) -> None:
    root = site_dir(site)
    pages = sorted(root.rglob("*.html"))
    names = {p.relative_to(root).as_posix() for p in pages}
    # The three kinds of page, at three depths: index, suites, validation results.
    assert "index.html" in names
    assert {"expectations/ticks.html", "expectations/bars.html"} <= names
    assert any(n.startswith("validations/ticks/") for n in names), names

    external: list[str] = []
    unresolved: list[str] = []
    loaded: set[Path] = set()
    for path in [*pages, *sorted(root.rglob("*.css"))]:
        text = path.read_text(encoding="utf-8")
        loads = page_loads(text) if path.suffix == ".html" else css_loads(text)
        if path.suffix == ".html":
            assert any(kind == "script" for kind, _ in loads), path  # the parser saw the page's head
        for kind, url in loads:
            where = f"{path.relative_to(root)}: {kind} {url}"
            if _external(url):
                external.append(where)
                continue
            target = _local_target(path.parent, url)
            if target is None:
                continue
            if not target.is_file() or root.resolve() not in target.parents:
                unresolved.append(where)
            loaded.add(target)
    assert not external, "loaded from another host:\n" + "\n".join(external)
    assert not unresolved, "not a file of the site:\n" + "\n".join(unresolved)

    vendor = (root / "static" / "vendor").resolve()
    # Every library GX asks for is there, Font Awesome's fonts included (named by its stylesheet).
    for name in ("jquery/dist/jquery.min.js", "vega/build/vega.min.js", "bootstrap/dist/css/bootstrap.min.css",
                 "@fortawesome/fontawesome-free/css/all.min.css",
                 "@fortawesome/fontawesome-free/webfonts/fa-solid-900.woff2"):
        assert vendor / name in loaded, name
    assert (vendor / "jquery/dist/jquery.min.js").read_text().startswith("/*! jQuery v3.7.1")


def test_a_rebuild_copies_nothing_twice(site: Settings) -> None:
    assert docs_assets.install_vendor(site_dir(site)) == 0


def test_the_copies_are_private_like_the_rest_of_the_home(tmp_path: Path) -> None:
    """npm installs its files 0644; their copies under the home are created as new files."""
    import os

    old = os.umask(0o077)
    try:
        assert docs_assets.install_vendor(tmp_path / "site") > 0
    finally:
        os.umask(old)
    modes = {oct(p.stat().st_mode & 0o777) for p in (tmp_path / "site").rglob("*") if p.is_file()}
    assert modes == {"0o600"}


def test_without_the_npm_files_the_cdn_urls_stay_and_the_fix_is_named(tmp_path: Path, monkeypatch,
                                                                    caplog) -> None:
    """Not installed: a page that works online beats one that works nowhere."""
    monkeypatch.setattr(docs_assets, "NODE_MODULES", tmp_path / "node_modules")
    page = '<script src="https://code.jquery.com/jquery-3.7.1.min.js"></script>'
    assert docs_assets.localize(page, ".") == page
    with caplog.at_level(logging.WARNING, logger="tickcast.quality.docs_assets"):
        assert docs_assets.install_vendor(tmp_path / "site") == 0
    assert "make bootstrap" in caplog.text
    assert not (tmp_path / "site").exists()


def test_localize_points_each_cdn_url_at_the_local_copy_relative_to_the_page() -> None:
    page = ('<script src="https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js" '
            'integrity="sha384-JjSm" crossorigin="anonymous"></script>\n'
            '<a href="https://greatexpectations.io">GX</a>\n'
            '<img src="https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/logo-long.png?d=1&dataContextId=x">\n'
            '<link rel="shortcut icon" href="../static/images/favicon.ico">')
    assert docs_assets.localize(page, "../..").splitlines() == [
        '<script src="../../static/vendor/bootstrap/dist/js/bootstrap.min.js"></script>',
        '<a href="https://greatexpectations.io">GX</a>',  # a link, not a load: kept
        '<img src="../../static/images/logo-long.png">',
        '<link rel="shortcut icon" href="../../static/images/favicon.ico">',  # GX's count, redone
    ]


# --- data_docs_app ----------------------------------------------------------------------------


def _mounted(settings: Settings) -> TestClient:
    """As the dashboard mounts it."""
    return TestClient(Starlette(routes=[Mount(PREFIX, app=data_docs_app(settings))]))


def test_data_docs_app_serves_the_site_and_its_assets_under_its_prefix(site: Settings) -> None:
    with _mounted(site) as client:
        bare = client.get(PREFIX, follow_redirects=False)
        assert bare.status_code in (301, 302, 307, 308)
        assert bare.headers["location"].endswith(f"{PREFIX}/")

        index = client.get(f"{PREFIX}/")
        assert index.status_code == 200
        assert index.headers["content-type"].startswith("text/html")
        assert "expectations/ticks.html" in index.text

        # A validation page, three directories down, and each asset it loads, as a browser
        # resolves them from the page's URL.
        page_path = next(p for p in site_dir(site).rglob("*.html")
                         if "validations" in p.relative_to(site_dir(site)).parts)
        page_url = f"{PREFIX}/{page_path.relative_to(site_dir(site)).as_posix()}"
        page = client.get(page_url)
        assert page.status_code == 200
        kinds = {"script": "javascript", "stylesheet": "text/css"}
        checked = 0
        for kind, url in page_loads(page.text):
            if kind not in kinds:
                continue
            absolute = urlsplit(str(client.base_url.join(page_url).join(url))).path
            assert absolute.startswith(f"{PREFIX}/static/"), url
            asset = client.get(absolute)
            assert asset.status_code == 200, absolute
            assert kinds[kind] in asset.headers["content-type"], (absolute, asset.headers["content-type"])
            checked += 1
        assert checked >= 10

        font = client.get(f"{PREFIX}/static/vendor/@fortawesome/fontawesome-free/webfonts/fa-solid-900.woff2")
        assert font.status_code == 200 and font.headers["content-type"] == "font/woff2"
        assert client.get(f"{PREFIX}/static/vendor/no-such-file.js").status_code == 404


def test_data_docs_app_says_the_docs_were_never_built(settings: Settings) -> None:
    with _mounted(settings) as client:
        for path in (f"{PREFIX}/", f"{PREFIX}/index.html", f"{PREFIX}/static/vendor/jquery/dist/jquery.min.js"):
            response = client.get(path)
            assert response.status_code == 404, path
            assert response.headers["content-type"].startswith("text/html")
            assert "have not been built yet" in response.text
            assert "tickcast quality --docs" in response.text
            assert str(site_dir(settings)) in response.text


def test_data_docs_app_serves_docs_built_after_it_started(spark, settings: Settings) -> None:
    with _mounted(settings) as client:
        assert client.get(f"{PREFIX}/").status_code == 404
        QualityGate(settings).publish_docs(force=True)  # the suites alone: nothing validated
        assert client.get(f"{PREFIX}/").status_code == 200


# --- in a real browser ------------------------------------------------------------------------

RESOURCES = "return performance.getEntriesByType('resource').map(e => e.name);"


@pytest.fixture
def docs_url(site: Settings):
    """The docs app mounted as the dashboard mounts it, on a loopback port (uvicorn in a thread)."""
    import uvicorn

    from tickcast.platform.processes import free_port, wait_for_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(Starlette(routes=[Mount(PREFIX, app=data_docs_app(site))]),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for_port(port, timeout=60)
        yield f"http://127.0.0.1:{port}{PREFIX}/"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.mark.browser
@pytest.mark.slow
def test_the_docs_render_in_chromium_from_loopback_only(browser, docs_url: str, site: Settings) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(docs_url)
    # jQuery, Bootstrap's plugins and bootstrap-table ran: the index's table of results is built.
    WebDriverWait(browser, 60, poll_frequency=0.25).until(
        lambda d: d.execute_script("return !!(window.jQuery && jQuery.fn.bootstrapTable && jQuery.fn.collapse"
                                   " && window.vegaEmbed)"))
    page = next(p for p in site_dir(site).rglob("*.html") if "validations" in p.relative_to(site_dir(site)).parts)
    browser.get(docs_url + page.relative_to(site_dir(site)).as_posix())
    WebDriverWait(browser, 60, poll_frequency=0.25).until(
        lambda d: d.execute_script("return !!(window.jQuery && jQuery.fn.bootstrapTable)"))
    # Bootstrap's stylesheet applied: a .container-fluid has its padding.
    assert browser.execute_script(
        "return getComputedStyle(document.querySelector('.container-fluid')).paddingLeft") != "0px"

    # Font Awesome's icons (the results' check marks) drew with its font, from the site.
    WebDriverWait(browser, 60, poll_frequency=0.25).until(lambda d: d.execute_script(
        "return [...document.fonts].some(f => f.family.includes('Font Awesome') && f.status === 'loaded')"))

    fetched = browser.execute_script(RESOURCES)
    assert any(url.endswith("/jquery.min.js") for url in fetched), fetched
    assert any(url.endswith(".woff2") for url in fetched), fetched
    elsewhere = [url for url in fetched if urlsplit(url).hostname != "127.0.0.1"]
    assert not elsewhere, f"the page fetched from other hosts: {elsewhere}"
