"""`tickcast serve`: the scoring API and the analyst dashboard, each under uvicorn.

The settings are loaded once, here, and handed to the app factory (``serving.app.create_app``,
``dashboard.app.asgi_app``) as ``functools.partial(factory, settings)``: with several workers,
uvicorn's supervisor pickles that partial, settings included, into each spawned worker, so
every worker builds the app from the very settings the command validated.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
from typing import TYPE_CHECKING

import typer

from tickcast.cli.common import load_settings

if TYPE_CHECKING:
    import uvicorn

serve_app = typer.Typer(
    name="serve",
    help="Run the HTTP services: the scoring API (FastAPI) and the analyst dashboard (Dash).",
    no_args_is_help=True,
)


def _run(config: uvicorn.Config) -> None:
    """What ``uvicorn.run`` does, for an app given as a factory object rather than an import
    string (``uvicorn.run`` refuses those with several workers)."""
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    if config.workers > 1:
        with contextlib.suppress(KeyboardInterrupt):
            Multiprocess(config, sockets=[config.bind_socket()]).run()
        return
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        raise typer.Exit(STARTUP_FAILURE)


@serve_app.command("api")
def api(
    host: str | None = typer.Option(
        None, help="Interface to bind (default: TICKCAST_API_HOST or 127.0.0.1)"
    ),
    port: int | None = typer.Option(
        None, min=1, max=65535, help="TCP port (default: TICKCAST_API_PORT or 8000)"
    ),
    workers: int | None = typer.Option(
        None, min=1, max=64, help="Worker processes (default: TICKCAST_API_WORKERS or 1)"
    ),
) -> None:
    """Serve the REST API (/api/v1/..., /docs, /healthz, /metrics) with uvicorn."""
    # --workers is this run's api_workers setting: each worker's /metrics decides by it
    # whether to merge the counts of all workers.
    settings = load_settings(api_workers=workers) if workers else load_settings()
    if settings.api_workers > 1:
        from serving.metrics import workers_metrics_dir

        # Each worker counts its own requests; prometheus_client merges them through files
        # in this directory, which must start empty. prometheus_client takes the directory
        # from this variable only (read when it is imported), hence the one write to the
        # environment, which the spawned workers inherit.
        metrics_dir = workers_metrics_dir(settings)
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    else:
        # One worker shows its own registry (serving.metrics). A directory inherited from the
        # caller (importing Feast sets one, and removes it when that process exits) would only
        # make prometheus_client keep this worker's values in files there.
        for name in ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir"):
            os.environ.pop(name, None)

    import uvicorn

    from serving.app import create_app
    from tickcast.cli.httpserver import server_options

    _run(uvicorn.Config(
        functools.partial(create_app, settings),
        factory=True,
        host=host or settings.api_host,
        port=port or settings.api_port,
        workers=settings.api_workers,
        proxy_headers=True,
        access_log=settings.api_access_log,
        **server_options(settings),
    ))


@serve_app.command("dashboard")
def dashboard(
    host: str | None = typer.Option(
        None, help="Interface to bind (default: TICKCAST_DASHBOARD_HOST or 127.0.0.1)"
    ),
    port: int | None = typer.Option(
        None, min=1, max=65535, help="TCP port (default: TICKCAST_DASHBOARD_PORT or 8050)"
    ),
) -> None:
    """Serve the analyst dashboard (Dash, behind a sign-in: watchlist, symbol pages, models, data quality,
    pipeline, alerts) with uvicorn."""
    settings = load_settings()

    import uvicorn

    from dashboard.app import asgi_app
    from tickcast.cli.httpserver import body_bounded, server_options

    _run(uvicorn.Config(
        functools.partial(body_bounded, asgi_app, settings),
        factory=True,
        host=host or settings.dashboard_host,
        port=port or settings.dashboard_port,
        **server_options(settings),
    ))


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the main app."""
    app.add_typer(serve_app, name="serve")
