"""Who may see the dashboard: sign-in, sessions and the Host check.

Every request passes three layers (outermost first):

1. ``TrustedHostMiddleware``: a Host header outside ``TICKCAST_DASHBOARD_ALLOWED_HOSTS`` gets a
   400, so a DNS-rebinding page cannot read the dashboard through a signed-in analyst's browser.
2. Starlette's ``SessionMiddleware``: a signed cookie (``SameSite=Strict``, ``HttpOnly``; ``Secure``
   outside local mode) that holds the user name and when they signed in. The signing secret is
   ``TICKCAST_DASHBOARD_SESSION_SECRET``, or in local mode one generated once under
   ``$TICKCAST_HOME/dashboard``.
3. ``RequireSession``: only ``/login`` and ``/healthz`` answer without a session. A page asked for
   without one is redirected to the sign-in form; everything else (Dash's layout, dependencies and
   callbacks, assets, the live stream, the data docs) gets a 401 and no data. A user disabled
   with ``tickcast users disable`` loses access within ``USER_RECHECK_SECONDS``.

Passwords are checked by ``tickcast.auth.users`` (argon2 hashes); failed sign-ins are limited per
user name and per client address with the ``limits`` library.
"""

from __future__ import annotations

import contextvars
import html
import logging
import os
import secrets
import time
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, quote, urlsplit

from starlette.middleware.sessions import SessionMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.types import ASGIApp, Receive, Scope, Send

    from tickcast.auth.users import UserStore
    from tickcast.core.settings import Settings

log = logging.getLogger("tickcast.dashboard.security")

SESSION_COOKIE = "tickcast_session"
LOGIN_PATH = "/login"
LOGOUT_PATH = "/logout"
PUBLIC_PATHS = frozenset({LOGIN_PATH, "/healthz"})
# A disabled user's session stops working within this delay (the user table is not read per request).
USER_RECHECK_SECONDS = 30.0
# The sign-in form is three short fields; anything longer is not a sign-in.
MAX_LOGIN_BODY = 4096
SECRET_FILE = "session_secret"

# The signed-in user of the request being served: set by RequireSession, read by callbacks
# (saved watchlists are per user). Context variables follow the request into worker threads.
current_user: contextvars.ContextVar[str | None] = contextvars.ContextVar("tickcast_dashboard_user", default=None)


def session_secret(settings: Settings) -> str:
    """The cookie-signing secret: configured, or (local mode only) generated once and kept."""
    if settings.dashboard_session_secret is not None:
        return settings.dashboard_session_secret.get_secret_value()
    if settings.mode != "local":
        raise RuntimeError("TICKCAST_DASHBOARD_SESSION_SECRET is not set; outside local mode the dashboard "
                           "needs a real secret to sign its sessions")
    path = settings.dashboard_dir / SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: of two workers starting at once, one writes and the other reads its secret.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(48))
    for _ in range(50):  # the other worker may be between creating and writing the file
        secret = path.read_text().strip()
        if secret:
            return secret
        time.sleep(0.02)
    raise RuntimeError(f"{path} is empty; delete it and start the dashboard again")


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this site, never another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


class RequireSession:
    """Lets a request through only with a session of an active user (see the module docstring)."""

    def __init__(self, app: ASGIApp, users: UserStore):
        self.app = app
        self.users = users
        self._active: dict[str, tuple[bool, float]] = {}

    def _is_active(self, username: str) -> bool:
        now = time.monotonic()
        cached = self._active.get(username)
        if cached is None or cached[1] < now:
            user = self.users.get(username)
            cached = (user is not None and user.disabled_at is None, now + USER_RECHECK_SECONDS)
            if len(self._active) > 10_000:
                self._active.clear()
            self._active[username] = cached
        return cached[0]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        username = (scope.get("session") or {}).get("user")
        if isinstance(username, str) and self._is_active(username):
            token = current_user.set(username)
            try:
                await self.app(scope, receive, send)
            finally:
                current_user.reset(token)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 4401, "reason": "sign in first"})
            return
        request = Request(scope)
        response: Response
        if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            response = RedirectResponse(f"{LOGIN_PATH}?next={quote(target, safe='')}", status_code=303)
        else:
            response = JSONResponse({"detail": f"sign in first: {LOGIN_PATH}"}, status_code=401)
        await response(scope, receive, send)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · TickCast</title><link rel="icon" href="data:,">
<style>
body {{ font-family: system-ui, sans-serif; background: #f6f8fa; color: #1f2328; margin: 0; }}
main {{ max-width: 340px; margin: 12vh auto 0; padding: 24px; background: white; border: 1px solid #d0d7de;
       border-radius: 8px; }}
h1 {{ font-size: 22px; margin: 0 0 16px; }}
label {{ display: block; font-size: 14px; margin: 12px 0 4px; }}
input {{ width: 100%; box-sizing: border-box; padding: 8px; font-size: 15px; border: 1px solid #d0d7de;
        border-radius: 6px; }}
button {{ margin-top: 18px; width: 100%; padding: 9px; font-size: 15px; color: white; background: #1f6feb;
         border: 0; border-radius: 6px; cursor: pointer; }}
.error {{ color: #cf222e; font-size: 14px; margin: 0 0 8px; }}
.muted {{ color: #656d76; font-size: 13px; margin-top: 16px; }}
</style></head>
<body><main>
<h1>TickCast</h1>
{error}
<form method="post" action="{action}">
<input type="hidden" name="next" value="{next}">
<label for="username">User name</label>
<input id="username" name="username" autocomplete="username" maxlength="64" required autofocus value="{username}">
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" maxlength="256" required>
<button type="submit" id="sign-in">Sign in</button>
</form>
<p class="muted">Create a user with <code>tickcast users create NAME</code>.</p>
</main></body></html>
"""


def login_page(next_path: str, error: str | None = None, username: str = "", status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(
        _PAGE.format(
            action=LOGIN_PATH,
            next=html.escape(next_path, quote=True),
            username=html.escape(username, quote=True),
            error=f'<p class="error" id="login-error">{html.escape(error)}</p>' if error else "",
        ),
        status_code=status_code,
        headers={"Cache-Control": "no-store"},
    )


class LoginThrottle:
    """Failed sign-ins per user name and per client address, in a moving window."""

    def __init__(self, rate: str):
        from limits import parse, storage
        from limits.strategies import MovingWindowRateLimiter

        self._limit = parse(rate)
        self._limiter = MovingWindowRateLimiter(storage.MemoryStorage())

    def blocked_for(self, *identities: str) -> int:
        """Seconds until these may try again (0: now)."""
        waits = []
        for identity in identities:
            if not self._limiter.test(self._limit, identity):
                reset = self._limiter.get_window_stats(self._limit, identity).reset_time
                waits.append(max(1, int(reset - time.time()) + 1))
        return max(waits, default=0)

    def failed(self, *identities: str) -> None:
        for identity in identities:
            self._limiter.hit(self._limit, identity)


def install(server: FastAPI, settings: Settings, users: UserStore) -> None:
    """The sign-in routes and the three layers, on the dashboard's FastAPI server."""
    from starlette.concurrency import run_in_threadpool

    throttle = LoginThrottle(settings.dashboard_login_rate_limit)

    @server.get(LOGIN_PATH, include_in_schema=False)
    async def login_form(request: Request) -> Response:
        if (request.session or {}).get("user"):
            return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
        return login_page(safe_next(request.query_params.get("next")))

    @server.post(LOGIN_PATH, include_in_schema=False)
    async def login(request: Request) -> Response:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_LOGIN_BODY:
                return login_page("/", "The form was too large.", status_code=413)
        fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=3)
        username = (fields.get("username") or [""])[0].strip()[:64]
        password = (fields.get("password") or [""])[0][:256]
        next_path = safe_next((fields.get("next") or ["/"])[0])
        client = request.client.host if request.client else "unknown"
        wait = throttle.blocked_for(f"user:{username.lower()}", f"client:{client}")
        if wait:
            log.warning("sign-in refused for %r from %s: too many failures", username, client)
            return login_page(next_path, f"Too many failed sign-ins; try again in {wait} s.", username,
                              status_code=429)
        user = await run_in_threadpool(users.verify, username, password) if username and password else None
        if user is None:
            throttle.failed(f"user:{username.lower()}", f"client:{client}")
            log.warning("failed sign-in for %r from %s", username, client)
            return login_page(next_path, "Wrong user name or password.", username, status_code=401)
        request.session.clear()
        request.session.update({"user": user.username, "since": int(time.time())})
        log.info("%s signed in from %s", user.username, client)
        return RedirectResponse(next_path, status_code=303)

    @server.get(LOGOUT_PATH, include_in_schema=False)
    async def logout(request: Request) -> Response:
        user = (request.session or {}).get("user")
        request.session.clear()
        if user:
            log.info("%s signed out", user)
        return RedirectResponse(LOGIN_PATH, status_code=303)

    # Last added is outermost: hosts, then the cookie, then the session check.
    server.add_middleware(RequireSession, users=users)
    server.add_middleware(
        SessionMiddleware,
        secret_key=session_secret(settings),
        session_cookie=SESSION_COOKIE,
        max_age=int(settings.dashboard_session_hours * 3600),
        same_site="strict",
        https_only=settings.mode != "local",
    )
    hosts = settings.dashboard_hosts or ["127.0.0.1", "localhost"]
    server.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts)

