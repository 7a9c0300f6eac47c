"""`tickcast users`: create, list, disable, enable the analyst dashboard's users and set their passwords."""

from __future__ import annotations

import json
import sqlite3
import sys
from typing import TYPE_CHECKING, NoReturn

import typer

from tickcast.cli.common import fail, load_settings

if TYPE_CHECKING:
    from tickcast.auth.users import User

users_app = typer.Typer(
    help="Users of the analyst dashboard, who sign in with a user name and a password. Only "
    "argon2 hashes of the passwords are stored, under $TICKCAST_HOME/auth/: a forgotten password "
    "cannot be shown, only replaced (set-password).",
    no_args_is_help=True,
)

USERNAME_HELP = "1-64 of letters, digits, '_', '.', '-'; compared without case."
PASSWORD_STDIN_HELP = (
    "Read the password from the first line of stdin instead of prompting "
    "(for scripts: never put a password on the command line)."
)


def _store():
    from tickcast.auth.users import UserStore

    return UserStore(load_settings().dashboard_users_path)


def _refuse(message: str) -> NoReturn:
    """End the command as one red line on stderr and exit code 2: what was asked cannot be done
    (a bad name or password, an unknown or duplicate user), as a bad option ends it."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _when(at) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S") if at else "-"


def _read_password(password_stdin: bool) -> str:
    """The new password: one line of stdin, or a hidden prompt asked twice (re-asked until valid)."""
    from tickcast.auth.users import PASSWORD_MAX_LENGTH, UserError, validate_password

    if password_stdin:
        # Bounded read: a longer line is cut, and then refused as too long.
        line = sys.stdin.readline(PASSWORD_MAX_LENGTH + 3)
        if not line:
            _refuse("--password-stdin: no password on stdin")
        try:
            return validate_password(line.removesuffix("\n").removesuffix("\r"))
        except UserError as exc:
            _refuse(str(exc))

    # A loop of our own: Typer's prompt would hide why a hidden value was refused.
    while True:
        password = typer.prompt("Password", hide_input=True)
        try:
            validate_password(password)
        except UserError as exc:
            typer.secho(f"{exc}; try again", fg=typer.colors.YELLOW, err=True)
            continue
        if typer.prompt("Repeat for confirmation", hide_input=True) == password:
            return password
        typer.secho("the two passwords do not match; try again", fg=typer.colors.YELLOW, err=True)


@users_app.command("create")
def create(
    username: str = typer.Argument(..., help=f"The new user's name: {USERNAME_HELP}"),
    password_stdin: bool = typer.Option(False, "--password-stdin", help=PASSWORD_STDIN_HELP),
) -> None:
    """Create a user who can sign in to the dashboard.

    The password (12 to 256 characters) is asked for twice, hidden; scripts pipe it in instead:

        printf '%s\\n' "$PASSWORD" | tickcast users create alice --password-stdin
    """
    from tickcast.auth.users import UserError, validate_username

    store = _store()
    try:
        validate_username(username)
        existing = store.get(username)
        if existing is not None:  # before asking for a password that would be refused
            raise UserError(
                f"a user named {existing.username!r} already exists; pick another name, "
                "or use set-password to change their password"
            )
        user = store.create(username, _read_password(password_stdin))
    except UserError as exc:
        _refuse(str(exc))
    except sqlite3.Error as exc:
        fail(f"user store {store.path}: {exc}")
    typer.echo(f"Created dashboard user '{user.username}'.")


@users_app.command("list")
def list_users(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output on stdout."),
) -> None:
    """Every user, disabled ones included, oldest first: name, created, last sign-in, status (UTC).

    Passwords are never shown: only their hashes are stored.
    """
    store = _store()
    try:
        users = store.list()
    except sqlite3.Error as exc:
        fail(f"user store {store.path}: {exc}")
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {
                        "username": u.username,
                        "created_at": u.created_at.isoformat(),
                        "last_login_at": u.last_login_at.isoformat() if u.last_login_at else None,
                        "disabled_at": u.disabled_at.isoformat() if u.disabled_at else None,
                    }
                    for u in users
                ],
                indent=2,
            )
        )
        return
    if not users:
        typer.echo("No dashboard users yet. Create one with: tickcast users create USERNAME")
        return

    from rich.console import Console
    from rich.table import Table

    # Piped output keeps each user on one line (greppable).
    console = Console(width=None if sys.stdout.isatty() else 200)
    table = Table(title="Dashboard users", title_justify="left")
    for column in ("user", "created (UTC)", "last sign-in (UTC)", "status"):
        table.add_column(column, no_wrap=column == "user")
    for u in users:
        status = "active" if u.active else f"disabled {_when(u.disabled_at)}"
        table.add_row(u.username, _when(u.created_at), _when(u.last_login_at), status)
    console.print(table)


def _switch(username: str, enable: bool) -> tuple[User | None, User]:
    """The user as it was, and as it is after enabling or disabling it; a clear exit otherwise."""
    from tickcast.auth.users import UserError

    store = _store()
    try:
        before = store.get(username)
        return before, (store.enable if enable else store.disable)(username)
    except UserError as exc:
        _refuse(str(exc))
    except sqlite3.Error as exc:
        fail(f"user store {store.path}: {exc}")


@users_app.command("disable")
def disable(username: str = typer.Argument(..., help="The user's name (see `tickcast users list`).")) -> None:
    """Refuse a user's sign-ins from now on (the user and their history are kept; enable undoes it)."""
    before, user = _switch(username, enable=False)
    if before is not None and not before.active:
        typer.echo(
            f"Dashboard user '{user.username}' was already disabled (since {_when(user.disabled_at)} UTC)."
        )
    else:
        typer.echo(f"Disabled dashboard user '{user.username}': they can no longer sign in.")


@users_app.command("enable")
def enable(username: str = typer.Argument(..., help="The user's name (see `tickcast users list`).")) -> None:
    """Let a disabled user sign in again, with the password they had."""
    before, user = _switch(username, enable=True)
    if before is not None and before.active:
        typer.echo(f"Dashboard user '{user.username}' is already active.")
    else:
        typer.echo(f"Enabled dashboard user '{user.username}': they can sign in again.")


@users_app.command("set-password")
def set_password(
    username: str = typer.Argument(..., help="The user's name (see `tickcast users list`)."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help=PASSWORD_STDIN_HELP),
) -> None:
    """Replace a user's password (asked for twice, hidden, unless --password-stdin is given).

    A disabled user stays disabled.
    """
    from tickcast.auth.users import UserError, validate_username

    store = _store()
    try:
        validate_username(username)
        if store.get(username) is None:  # before asking for a password that would be refused
            raise UserError(f"no user {username!r} (see `tickcast users list`)")
        user = store.set_password(username, _read_password(password_stdin))
    except UserError as exc:
        _refuse(str(exc))
    except sqlite3.Error as exc:
        fail(f"user store {store.path}: {exc}")
    typer.echo(f"Set a new password for dashboard user '{user.username}'.")


def register(app: typer.Typer) -> None:
    """Add the `users` group to the CLI."""
    app.add_typer(users_app, name="users")
