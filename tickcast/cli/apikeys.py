"""`tickcast apikey`: create, list and revoke the scoring API's keys."""

from __future__ import annotations

import json
import sys

import typer

from tickcast.cli.common import fail, load_settings

apikey_app = typer.Typer(
    help="API keys for the scoring API. Clients send the key in the X-API-Key header "
    "(e.g. curl -H 'X-API-Key: tck_...'). Only SHA-256 hashes are stored, under "
    "$TICKCAST_HOME/auth/ (or the database TICKCAST_API_KEYS_DATABASE_URL names, or the embedded "
    "PostgreSQL's): a key is shown once, when it is created.",
    no_args_is_help=True,
)


def _store():
    from tickcast.auth.apikeys import ApiKeyStore

    return ApiKeyStore.from_settings(load_settings())


def _when(at) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S") if at else "-"


@apikey_app.command("create")
def create(
    name: str = typer.Option(
        ..., "--name", "-n",
        help="Who or what the key is for (1-64 of letters, digits, '_', '.', '-'); unique among active keys.",
    ),
    scopes: str = typer.Option(
        "read", "--scopes", "-s",
        help="Comma-separated scopes: 'read' (get predictions, alert history), 'score' (ask for new scores), 'admin' (manage alert rules).",
    ),
    rate_limit: str | None = typer.Option(
        None, "--rate-limit", "-r",
        help="Requests allowed for this key, e.g. '1000/second' or '100 per minute'. "
        "Default: the server's limit.",
    ),
) -> None:
    """Create a key and print it once on stdout (the only line there, for scripts).

    The key cannot be shown again: store it now. A lost key is revoked and replaced.
    """
    from tickcast.auth.apikeys import ApiKeyError, StoreUnavailable

    store = _store()
    try:
        record, plaintext = store.create(name, scopes, rate_limit)
    except ApiKeyError as exc:
        fail(str(exc))
    except StoreUnavailable as exc:
        fail(str(exc))
    typer.echo(
        f"Created API key {record.key_id} '{record.name}' (scopes: {', '.join(sorted(record.scopes))}; "
        f"rate limit: {record.rate_limit or 'server default'}).\n"
        "Store the key now: it will not be shown again. Send it in the X-API-Key header.",
        err=True,
    )
    typer.echo(plaintext)


@apikey_app.command("list")
def list_keys(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output on stdout."),
) -> None:
    """Every key, revoked ones included, oldest first: id, name, scopes, rate limit, dates (UTC).

    Keys themselves are never shown: only their hashes are stored.
    """
    from tickcast.auth.apikeys import StoreUnavailable

    store = _store()
    try:
        keys = store.list()
    except StoreUnavailable as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps([{
            "key_id": k.key_id, "name": k.name, "scopes": sorted(k.scopes), "rate_limit": k.rate_limit,
            "created_at": k.created_at.isoformat(), "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
        } for k in keys], indent=2))
        return
    if not keys:
        typer.echo("No API keys yet. Create one with: tickcast apikey create --name NAME --scopes read")
        return

    from rich.console import Console
    from rich.table import Table

    # Piped output keeps each key on one line (greppable).
    console = Console(width=None if sys.stdout.isatty() else 200)
    table = Table(title="API keys", title_justify="left")
    for column in ("key id", "name", "scopes", "rate limit", "created (UTC)", "revoked (UTC)"):
        table.add_column(column, no_wrap=column == "key id")
    for k in keys:
        table.add_row(k.key_id, k.name, ",".join(sorted(k.scopes)), k.rate_limit or "default",
                      _when(k.created_at), _when(k.revoked_at))
    console.print(table)


@apikey_app.command("revoke")
def revoke(
    key: str = typer.Argument(..., help="The key id (from `tickcast apikey list`) or the name of an active key."),
) -> None:
    """Revoke a key: the API refuses it once its key cache expires (TICKCAST_API_KEY_CACHE_SECONDS)."""
    from tickcast.auth.apikeys import ApiKeyError, StoreUnavailable

    store = _store()
    try:
        record = store.revoke(key)
    except ApiKeyError as exc:
        fail(str(exc))
    except StoreUnavailable as exc:
        fail(str(exc))
    typer.echo(f"Revoked API key {record.key_id} '{record.name}'.")


def register(app: typer.Typer) -> None:
    """Add the `apikey` group to the CLI."""
    app.add_typer(apikey_app, name="apikey")
