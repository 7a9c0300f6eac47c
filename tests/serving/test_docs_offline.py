"""The API's docs (Swagger UI at /docs, ReDoc at /redoc) load nothing from another host: on a
machine without internet they still render (issue 17)."""

from __future__ import annotations

import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from tickcast.core.settings import Settings
from tickcast.platform.processes import free_port, stop_process, wait_for_port

WAIT = 90  # seconds; generous because CI machines are shared, not a speed check

EXPECTED_TYPES = {"script": "javascript", "stylesheet": "text/css", "icon": "image/"}


class _Assets(HTMLParser):
    """Every URL a page loads by itself: <script src>, <link href>, <img src>, and the URLs its
    inline scripts hand to the UI (Swagger UI's ``url: '/openapi.json'``)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, str]] = []  # (kind, url)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "script" and attributes.get("src"):
            self.found.append(("script", attributes["src"] or ""))
        elif tag == "link" and attributes.get("href"):
            rel = attributes.get("rel") or ""
            self.found.append(("stylesheet" if "stylesheet" in rel else "icon", attributes["href"] or ""))
        elif tag == "img" and attributes.get("src"):
            self.found.append(("icon", attributes["src"] or ""))


def assets_of(html: str) -> list[tuple[str, str]]:
    parser = _Assets()
    parser.feed(html)
    return parser.found


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, base_settings: Settings):
    settings = base_settings.model_copy(update={"home": tmp_path_factory.mktemp("docs") / "home"})
    # No API key: the docs and the OpenAPI document are open.
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_load_every_asset_from_the_app_itself(client: TestClient, page: str) -> None:
    response = client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assets = assets_of(html)
    kinds = {kind for kind, _ in assets}
    assert "script" in kinds, assets
    if page == "/docs":
        assert "stylesheet" in kinds, assets

    for kind, url in assets:
        parts = urlsplit(url)
        # Same origin: a path on this app, no scheme, no host (not even //cdn.example).
        assert not parts.scheme and not parts.netloc, f"{page} loads {url} from another host"
        assert url.startswith("/"), url
        asset = client.get(urljoin(str(client.base_url) + page, url))
        assert asset.status_code == 200, url
        assert EXPECTED_TYPES[kind] in asset.headers["content-type"], (url, asset.headers["content-type"])
        assert len(asset.content) > 1000, url  # the real file, not an empty placeholder
    # No CDN anywhere in the page, even in an inline script.
    for cdn in ("cdn.jsdelivr.net", "unpkg.com", "cdnjs", "fastapi.tiangolo.com", "fonts.googleapis.com"):
        assert cdn not in html, cdn


def test_swagger_ui_is_version_5_which_renders_openapi_3_1(client: TestClient) -> None:
    """Swagger UI 4 answers an OpenAPI 3.1 document with 'Unable to render this definition'."""
    assert client.get("/openapi.json").json()["openapi"].startswith("3.1")
    bundle = next(url for kind, url in assets_of(client.get("/docs").text) if url.endswith(".js"))
    assert 'PACKAGE_VERSION:"5.' in client.get(bundle).text


def test_openapi_json_and_docs_need_no_key(client: TestClient) -> None:
    document = client.get("/openapi.json")
    assert document.status_code == 200
    assert "/api/v1/predictions/{symbol}" in document.json()["paths"]
    # The docs pages are not API routes: none of them is in the document.
    assert not {"/docs", "/redoc", "/docs/oauth2-redirect"} & set(document.json()["paths"])
    assert client.get("/docs/oauth2-redirect").status_code == 200
    # An API route still asks for its key.
    assert client.get("/api/v1/predictions/AAPL").status_code == 401


def test_docs_honour_a_root_path(base_settings: Settings, tmp_path: Path) -> None:
    """Behind a proxy that mounts the API under a prefix, every URL carries the prefix."""
    settings = base_settings.model_copy(update={"home": tmp_path / "home"})
    with TestClient(create_app(settings), root_path="/tickcast") as prefixed:
        html = prefixed.get("/docs").text
    urls = [url for _, url in assets_of(html)]
    assert urls and all(url.startswith("/tickcast/docs/assets/") for url in urls), urls
    assert "'/tickcast/openapi.json'" in html


# --- in a real browser ------------------------------------------------------------------------

# Every resource the page fetched, by URL (the Resource Timing API sees scripts, styles, fonts,
# images and fetch/XHR requests alike).
RESOURCES = "return performance.getEntriesByType('resource').map(e => e.name);"


@pytest.fixture
def api_url(base_settings: Settings, tmp_path: Path):
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if k != "TICKCAST_API_WORKERS"},
           "TICKCAST_HOME": str(tmp_path / "home")}
    log = (tmp_path / "api.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tickcast.cli", "serve", "api", "--port", str(port)],
        env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, timeout=120, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)
        log.close()


@pytest.mark.browser
@pytest.mark.slow
def test_swagger_ui_renders_the_operations_in_chromium_from_loopback_only(browser, api_url: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{api_url}/docs")
    try:
        WebDriverWait(browser, WAIT, poll_frequency=0.25).until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= 5)
    except Exception as exc:
        body = browser.find_element(By.TAG_NAME, "body").text[:500]
        raise AssertionError(f"Swagger UI rendered no operations; the page says: {body!r}") from exc

    summaries = {e.text for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert "/api/v1/predictions/{symbol}" in {s.replace("\u200b", "") for s in summaries}
    assert not browser.find_elements(By.CSS_SELECTOR, ".errors-wrapper")

    fetched = browser.execute_script(RESOURCES)
    assert any(url.endswith("/openapi.json") for url in fetched), fetched
    assert any(url.endswith("/swagger-ui-bundle.js") for url in fetched), fetched
    elsewhere = [url for url in fetched if urlsplit(url).hostname not in ("127.0.0.1", "localhost")]
    assert not elsewhere, f"the page fetched from other hosts: {elsewhere}"
