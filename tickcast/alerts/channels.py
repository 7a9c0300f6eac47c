"""The channels an alert goes out on: SMS through Twilio's client, e-mail through SendGrid's,
a JSON webhook signed with HMAC-SHA256, and the dry-run sink a channel is without credentials.

Each channel sends one rendered message to one address and classifies what went wrong:
``TransientError`` (429, 5xx, a timeout, a refused connection: worth retrying, with the
provider's Retry-After when it gave one) or ``PermanentError`` (any other 4xx: retrying
cannot help). Each also says whether it can find out, after a crash, if a message it may have
sent was delivered (``find``): Twilio's message list and SendGrid's e-mail activity can be asked
for the alert's reference, which every message carries; a webhook cannot be asked, so it is
sent again and carries the alert id in ``X-TickCast-Alert-Id`` for the receiver to drop a copy.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tickcast.alerts.rules import mask_address
from tickcast.core.retry import retry_after_seconds

if TYPE_CHECKING:
    from tickcast.core.settings import Settings

log = logging.getLogger("tickcast.alerts")

TEMPLATES = Path(__file__).resolve().parent / "templates"
# Every message carries this reference; reconciliation looks for it at the provider.
REFERENCE_LENGTH = 12
SIGNATURE_HEADER = "X-TickCast-Signature"
ALERT_ID_HEADER = "X-TickCast-Alert-Id"


class DeliveryError(Exception):
    pass


class TransientError(DeliveryError):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(DeliveryError):
    pass


@dataclass(frozen=True)
class Message:
    alert_id: str
    phase: str
    severity: str
    subject: str
    title: str
    text: str
    html: str
    payload: dict[str, Any]

    @property
    def reference(self) -> str:
        return self.alert_id[:REFERENCE_LENGTH]


class Channel(Protocol):
    name: str
    dry_run: bool

    def send(self, message: Message, address: str) -> str:
        """Deliver; the provider's message id."""

    def find(self, message: Message, address: str, since: datetime) -> str | None | bool:
        """After a crash mid-send: the provider's id if it has the message, None if it has
        not, False if this channel cannot tell (the engine then chooses for it)."""


@cache
def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=jinja2.select_autoescape(["html.j2"]),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["number"] = _number
    return env


def _number(value: Any, spec: str, scale: float = 1.0) -> str:
    """A prediction's number in a message; "n/a" for one the prediction lacks (the topic's
    messages need only a symbol, a signal and a time to be evaluated)."""
    if not isinstance(value, int | float) or isinstance(value, bool) or value != value:
        return "n/a"
    return spec % (value * scale)


def render(alert: dict[str, Any]) -> Message:
    """The message of a stored alert (``AlertStore.history`` / ``due`` rows)."""
    from tickcast.alerts.rules import price_band

    env = _environment()
    payload = alert["payload"]
    is_signal = "signal" in payload
    context = {"alert": alert, "payload": payload, "reference": alert["id"][:REFERENCE_LENGTH],
               "is_signal": is_signal, "band": price_band(payload) if is_signal else None}
    return Message(
        alert_id=alert["id"], phase=alert["phase"], severity=alert["severity"], subject=alert["subject"],
        title=alert["title"], text=env.get_template("alert.txt.j2").render(context).strip(),
        html=env.get_template("alert.html.j2").render(context), payload=alert["payload"],
    )


def _sms_body(message: Message) -> str:
    # An SMS is short: the title, the link, the reference (what reconciliation matches).
    link = message.payload.get("link")
    return "\n".join(part for part in (message.title[:240], link, f"ref {message.reference}") if part)


# -- SMS ------------------------------------------------------------------------------------------


def _twilio_http_client(timeout: float, api_base: str | None) -> Any:
    from twilio.http.http_client import TwilioHttpClient

    class BoundedTwilioHttpClient(TwilioHttpClient):
        """Twilio's own HTTP client, with a timeout, every ``*.twilio.com`` host optionally
        pointed elsewhere, and the last response's Retry-After kept per thread."""

        def __init__(self) -> None:
            super().__init__(timeout=timeout)
            self.local = threading.local()

        def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            if api_base:
                url = re.sub(r"^https://[A-Za-z0-9.\-]*twilio\.com", api_base.rstrip("/"), url)
            self.local.retry_after = None
            response = super().request(method, url, *args, **kwargs)
            self.local.retry_after = retry_after_seconds((response.headers or {}).get("Retry-After"))
            return response

    return BoundedTwilioHttpClient()


class TwilioSms:
    name = "sms"
    dry_run = False

    def __init__(self, account_sid: str, auth_token: str, from_number: str, *, timeout: float,
                 api_base: str | None = None):
        from twilio.rest import Client

        self.http = _twilio_http_client(timeout, api_base)
        self.client = Client(account_sid, auth_token, http_client=self.http)
        self.from_number = from_number

    def send(self, message: Message, address: str) -> str:
        created = self._call(lambda: self.client.messages.create(to=address, from_=self.from_number,
                                                                 body=_sms_body(message)))
        return str(created.sid)

    def find(self, message: Message, address: str, since: datetime) -> str | None:
        # Twilio filters by the day sent; the reference in the body picks the message out.
        sent = self._call(lambda: self.client.messages.list(to=address, date_sent_after=since - timedelta(days=1),
                                                            limit=200))
        marker = f"ref {message.reference}"
        return next((str(m.sid) for m in sent if marker in (m.body or "")), None)

    def _call(self, call: Any) -> Any:
        import requests
        from twilio.base.exceptions import TwilioRestException

        try:
            return call()
        except TwilioRestException as exc:
            raise _classify(exc.status, f"Twilio answered {exc.status}: {exc.msg}",
                            getattr(self.http.local, "retry_after", None)) from None
        except (requests.Timeout, requests.ConnectionError) as exc:
            raise TransientError(f"Twilio unreachable or too slow: {type(exc).__name__}") from None


# -- e-mail ---------------------------------------------------------------------------------------


class SendGridEmail:
    name = "email"
    dry_run = False

    def __init__(self, api_key: str, from_email: str, *, timeout: float, host: str = "https://api.sendgrid.com"):
        from sendgrid import SendGridAPIClient

        self.client = SendGridAPIClient(api_key=api_key, host=host)
        self.from_email = from_email
        self.timeout = timeout

    def send(self, message: Message, address: str) -> str:
        from sendgrid.helpers.mail import CustomArg, Mail

        mail = Mail(from_email=self.from_email, to_emails=address, subject=message.title[:200],
                    plain_text_content=message.text, html_content=message.html)
        mail.custom_arg = CustomArg("alert_id", message.alert_id)
        response = self._call(lambda: self.client.client.mail.send.post(request_body=mail.get(),
                                                                          timeout=self.timeout))
        headers = response.headers or {}
        return str(headers.get("X-Message-Id") or f"sendgrid-{message.reference}")

    def find(self, message: Message, address: str, since: datetime) -> str | None:
        # The e-mail activity API, queried on the custom argument every message carries.
        query = f'(unique_args[\'alert_id\']="{message.alert_id}") AND (to_email="{address}")'
        response = self._call(lambda: self.client.client.messages.get(query_params={"query": query, "limit": 10},
                                                                      timeout=self.timeout))
        found = json.loads(response.body or b"{}").get("messages") or []
        return str(found[0].get("msg_id")) if found else None

    def _call(self, call: Any) -> Any:
        from python_http_client.exceptions import HTTPError

        try:
            return call()
        except HTTPError as exc:
            retry_after = retry_after_seconds((exc.headers or {}).get("Retry-After")) if exc.headers else None
            raise _classify(exc.status_code, f"SendGrid answered {exc.status_code}: {exc.reason}",
                            retry_after) from None
        except (TimeoutError, OSError) as exc:  # urllib: socket timeouts, refused connections
            raise TransientError(f"SendGrid unreachable or too slow: {type(exc).__name__}") from None


# -- webhook --------------------------------------------------------------------------------------


class Webhook:
    name = "webhook"
    dry_run = False

    def __init__(self, secret: str | None, *, timeout: float):
        self.secret = secret
        self.timeout = timeout

    def body(self, message: Message) -> bytes:
        return json.dumps({"alert_id": message.alert_id, "phase": message.phase, "severity": message.severity,
                           "subject": message.subject, "title": message.title, "text": message.text,
                           "payload": message.payload}, sort_keys=True, default=str).encode()

    def send(self, message: Message, address: str) -> str:
        import httpx

        body = self.body(message)
        headers = {"Content-Type": "application/json", ALERT_ID_HEADER: message.alert_id}
        if self.secret:
            headers[SIGNATURE_HEADER] = "sha256=" + sign(self.secret, body)
        try:
            response = httpx.post(address, content=body, headers=headers, timeout=self.timeout)
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            raise TransientError(f"webhook unreachable or too slow: {type(exc).__name__}") from None
        if response.status_code >= 300:
            raise _classify(response.status_code, f"webhook answered {response.status_code}",
                            retry_after_seconds(response.headers.get("Retry-After")))
        return f"webhook-{message.reference}"

    def find(self, message: Message, address: str, since: datetime) -> bool:
        return False  # a webhook cannot be asked; sent again, its receiver drops the copy by alert id


def sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# -- dry run --------------------------------------------------------------------------------------


class DryRun:
    """A channel without credentials: the message is rendered, logged and recorded as sent."""

    dry_run = True

    def __init__(self, name: str):
        self.name = name

    def send(self, message: Message, address: str) -> str:
        log.info("dry run (%s to %s): %s", self.name, mask_address(address), message.title)
        return f"dry-run-{message.reference}"

    def find(self, message: Message, address: str, since: datetime) -> str:
        return f"dry-run-{message.reference}"  # nothing left the machine: it is as good as sent


def channels_from_settings(settings: Settings) -> dict[str, Channel]:
    """Each channel, real when its credentials are set, a dry run otherwise."""
    timeout = settings.alerts_http_timeout_seconds
    found: dict[str, Channel] = {"sms": DryRun("sms"), "email": DryRun("email"),
                                 "webhook": Webhook(_secret(settings.alerts_webhook_secret), timeout=timeout)}
    token = _secret(settings.twilio_auth_token)
    if settings.twilio_account_sid and token and settings.twilio_from_number:
        found["sms"] = TwilioSms(settings.twilio_account_sid, token, settings.twilio_from_number, timeout=timeout,
                                 api_base=settings.twilio_api_base)
    key = _secret(settings.sendgrid_api_key)
    if key:
        found["email"] = SendGridEmail(key, settings.sendgrid_from_email, timeout=timeout,
                                       host=settings.sendgrid_api_host)
    return found


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def _classify(status: int, message: str, retry_after: float | None) -> DeliveryError:
    if status == 429 or status >= 500 or status in (408, 409):
        return TransientError(message, retry_after)
    return PermanentError(message)


