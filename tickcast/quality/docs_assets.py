"""The data docs without internet: every script, stylesheet, font and image that GX's pages
load from a CDN is served from the site itself.

GX 1.24's page templates load Bootstrap 4.3.1, bootstrap-table 1.19.1, bootstrap-datepicker
1.9.0, bootstrap-dark 1.1.0, jQuery 3.7.1, Popper 1.12.9, Vega 5 / Vega-Lite 5 / Vega-Embed 6 and
Font Awesome 6.6.0 from unpkg, jsdelivr, cdnjs, code.jquery.com and bootstrapcdn, and GX's logo
from S3: without internet a page loses its styles, its tables and its charts. Here:

- the files come from npm at the versions the templates name, locked by
  ``infra/datadocs/package.json`` and ``package-lock.json`` and installed by ``make bootstrap``
  (``npm ci`` into ``infra/datadocs/node_modules``); no PyPI package vendors them all at those
  versions (bootstrap-table, bootstrap-dark, Popper and Vega not at all);
- ``install_vendor`` copies them under the site's ``static/vendor/`` (keeping their paths in
  their packages, so Font Awesome's ``../webfonts/`` still resolves);
- the pages are rewritten as GX writes them, through GX's own extension point: the site's
  ``store_backend`` is ``OfflineSiteStoreBackend``, GX's ``TupleFilesystemStoreBackend`` which
  knows where each page goes and so points each CDN URL at the local copy by a relative path.
  The site works opened as files, and served under any prefix (the dashboard's /quality/docs).

A CDN URL whose file is not installed is left as it is, with a warning naming the fix: online,
the page still works.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from tickcast.core.settings import REPO_ROOT

log = logging.getLogger(__name__)

NPM_PROJECT = REPO_ROOT / "infra" / "datadocs"
NODE_MODULES = NPM_PROJECT / "node_modules"
VENDOR_DIR = PurePosixPath("static", "vendor")  # in the site, beside GX's own static/

# Each CDN URL as GX's templates write it -> the file in node_modules serving it.
CDN_FILES: dict[str, str] = {
    # stylesheets
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": "bootstrap/dist/css/bootstrap.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": "bootstrap-table/dist/bootstrap-table.min.css",
    # GX names 1.19.0 for the filter-control styles (1.19.1 for its script): both from 1.19.1.
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css":
        "bootstrap-table/dist/extensions/filter-control/bootstrap-table-filter-control.min.css",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css":
        "bootstrap-table/dist/extensions/filter-control/bootstrap-table-filter-control.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css":
        "bootstrap-datepicker/dist/css/bootstrap-datepicker.min.css",
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css":
        "@forevolve/bootstrap-dark/dist/css/bootstrap-prefers-dark.css",
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": "@fortawesome/fontawesome-free/css/all.min.css",
    # scripts (jsdelivr serves a bare package@major as the package's "jsdelivr" file)
    "https://cdn.jsdelivr.net/npm/vega@5": "vega/build/vega.min.js",
    "https://cdn.jsdelivr.net/npm/vega-lite@5": "vega-lite/build/vega-lite.min.js",
    "https://cdn.jsdelivr.net/npm/vega-embed@6": "vega-embed/build/vega-embed.min.js",
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery/dist/jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": "popper.js/dist/umd/popper.min.js",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": "bootstrap/dist/js/bootstrap.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": "bootstrap-table/dist/bootstrap-table.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js":
        "bootstrap-table/dist/extensions/filter-control/bootstrap-table-filter-control.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js":
        "bootstrap-datepicker/dist/js/bootstrap-datepicker.min.js",
}
# What the copied stylesheets load in turn: Font Awesome's ../webfonts/*.
CDN_DIRS: tuple[str, ...] = ("@fortawesome/fontawesome-free/webfonts",)

# GX's logo, from S3 (with a tracking query): its own copy in the site's static/images/. GX ships
# no copy of the dark-theme logo; the dark theme shows the light one.
GX_IMAGES_HOST = "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/"
GX_IMAGES = {"logo-long.png": "logo-long.png", "full_logo_dark.png": "logo-long.png"}

_URL = re.compile(r"""https?://[^\s"'()<>]+""")
# A script or stylesheet now local keeps no Subresource Integrity check: it is no longer fetched
# from a third party, and `crossorigin` would make the page fail when opened as a file.
# GX's own links into the site's static/ (its favicon, its logo), which it counts from the page
# itself -- one level short on validation pages (favicon.j2): counted again from where the page is.
_STATIC_LINK = re.compile(r"""((?:src|href)=["'])(?:\./|(?:\.\./)+)static/""")
_SRI = re.compile(r"""(<(?:script|link)\b[^>]*?(?:src|href)="(?!https?:)[^"]*")\s+integrity="[^"]*"(?:\s+crossorigin="[^"]*")?""")


def missing_files() -> list[str]:
    """The files of ``CDN_FILES`` and ``CDN_DIRS`` not installed (``make bootstrap`` installs them)."""
    return [name for name in (*CDN_FILES.values(), *CDN_DIRS) if not (NODE_MODULES / name).exists()]


def localize(text: str, root: str) -> str:
    """``text`` (a page or a stylesheet) with each known CDN URL replaced by the local copy,
    by a path relative to the page: ``root`` is the site's root seen from the page's directory
    (``.`` for index.html, ``../..`` two levels down). GX's own links into ``static/`` are
    counted again from ``root`` too."""

    def local(match: re.Match[str]) -> str:
        url = match.group(0)
        source = CDN_FILES.get(url)
        if source is not None:
            return f"{root}/{VENDOR_DIR}/{source}" if (NODE_MODULES / source).is_file() else url
        if url.startswith(GX_IMAGES_HOST):
            image = GX_IMAGES.get(url[len(GX_IMAGES_HOST):].split("?", 1)[0])
            if image is not None:
                return f"{root}/static/images/{image}"
        return url

    text = _STATIC_LINK.sub(lambda m: f"{m.group(1)}{root}/static/", text)
    return _SRI.sub(r"\1", _URL.sub(local, text))


def install_vendor(site: Path) -> int:
    """Copy the installed files of ``CDN_FILES`` and ``CDN_DIRS`` under ``site/static/vendor``
    (a file already there with the same size and time is kept); returns how many were copied."""
    missing = missing_files()
    if missing:
        log.warning("quality: the data docs load %d file(s) from CDNs, not installed under %s: %s; "
                    "run `make bootstrap` (npm ci --prefix infra/datadocs) for docs that work offline",
                    len(missing), NODE_MODULES, ", ".join(missing))
    copied = 0
    for source in _installed_files(name for name in (*CDN_FILES.values(), *CDN_DIRS) if name not in missing):
        relative = source.relative_to(NODE_MODULES)
        target = site.joinpath(*VENDOR_DIR.parts, relative)
        stat = source.stat()
        if target.is_file() and (target.stat().st_size, int(target.stat().st_mtime)) == (stat.st_size, int(stat.st_mtime)):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        # The content and the time (the check above), not npm's mode bits: the home stays private.
        shutil.copyfile(source, target)
        os.utime(target, (stat.st_atime, stat.st_mtime))
        copied += 1
    return copied


def _installed_files(names: Iterable[str]) -> Iterable[Path]:
    for name in names:
        path = NODE_MODULES / name
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        else:
            yield path


def _offline_site_store_backend() -> type:
    from great_expectations.data_context.store.tuple_store_backend import TupleFilesystemStoreBackend

    class OfflineSiteStoreBackend(TupleFilesystemStoreBackend):
        """GX's filesystem store for a data docs site, writing each page and stylesheet with its
        CDN URLs pointed at the site's local copies (``localize``)."""

        def _set(self, key: Any, value: Any, **kwargs: Any) -> Any:
            content_type = str(kwargs.get("content_type") or "")
            if content_type.startswith(("text/html", "text/css")):
                path = Path(self.full_base_directory, self._convert_key_to_filepath(
                    key if isinstance(key, tuple) else key.to_tuple()))
                root = Path(os.path.relpath(self.full_base_directory, path.parent)).as_posix()
                text = value.decode("utf-8") if isinstance(value, bytes) else value
                value = localize(text, root)
            return super()._set(key, value, **kwargs)

    OfflineSiteStoreBackend.__module__ = __name__
    OfflineSiteStoreBackend.__qualname__ = "OfflineSiteStoreBackend"
    return OfflineSiteStoreBackend


def __getattr__(name: str) -> Any:
    # GX loads the store backend by module and class name; the class is made on that first
    # access, so that importing this module does not import GX (tests/test_architecture.py).
    if name == "OfflineSiteStoreBackend":
        backend = globals()[name] = _offline_site_store_backend()
        return backend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
