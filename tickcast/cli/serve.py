"""`tickcast serve`: the scoring API and the analyst dashboard, each under uvicorn.

Both are ASGI apps built by a factory in the server process (``serving.app:app_from_env``,
``dashboard.app:asgi_app_from_env``), which reads settings from the TICKCAST_* environment,
so worker processes build the same app the parent would.
"""

from __future__ import annotations

import os
import shutil

import typer
from pydantic import ValidationError

serve_app = typer.Typer(
    name="serve",
    help="Run the HTTP services: the scoring API (FastAPI) and the analyst dashboard (Dash).",
    no_args_is_help=True,
)


def _settings():
    from tickcast.core.settings import Settings

    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ())) or "settings"
        typer.echo(f"error: invalid setting TICKCAST_{field.upper()}: {first['msg']}", err=True)
        raise typer.Exit(2) from None


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
    import uvicorn

    settings = _settings()
    workers = workers or settings.api_workers
    if workers > 1:
        from serving.metrics import workers_metrics_dir

        # Each worker counts its own requests; prometheus_client merges them through files
        # in this directory, which must start empty.
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
    # The workers build their settings from the environment: they must know how many there are.
    os.environ["TICKCAST_API_WORKERS"] = str(workers)
    uvicorn.run(
        "serving.app:app_from_env",
        factory=True,
        host=host or settings.api_host,
        port=port or settings.api_port,
        workers=workers,
        proxy_headers=True,
        access_log=settings.api_access_log,
    )


@serve_app.command("dashboard")
def dashboard(
    host: str | None = typer.Option(
        None, help="Interface to bind (default: TICKCAST_DASHBOARD_HOST or 127.0.0.1)"
    ),
    port: int | None = typer.Option(
        None, min=1, max=65535, help="TCP port (default: TICKCAST_DASHBOARD_PORT or 8050)"
    ),
) -> None:
    """Serve the Dash dashboard (candles and latest prediction per symbol) with uvicorn."""
    import uvicorn

    settings = _settings()
    uvicorn.run(
        "dashboard.app:asgi_app_from_env",
        factory=True,
        host=host or settings.dashboard_host,
        port=port or settings.dashboard_port,
    )


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the main app."""
    app.add_typer(serve_app, name="serve")
