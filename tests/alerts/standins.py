"""Local stand-ins for Twilio and SendGrid: real HTTP servers on 127.0.0.1 (pytest-httpserver,
threaded so a hanging answer does not block the next request) that speak the endpoints the
real clients call - send a message, list messages / query e-mail activity - and answer each
send with the next scripted behaviour: accept, 429 with Retry-After, 500, or hang past the
client's timeout. Every request is logged; ``accepted`` is what the provider kept."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

ACCOUNT = "ACtest"
MESSAGES_PATH = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"


@contextmanager
def standin_server() -> Iterator[HTTPServer]:
    """A threaded HTTP server on 127.0.0.1 for the stand-ins to install their endpoints on."""
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    try:
        yield server
    finally:
        server.clear()
        if server.is_running():
            server.stop()


@dataclass
class Script:
    """Answers for the sends, in order; once used up, every send is accepted."""

    steps: list[tuple] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next(self) -> tuple:
        with self.lock:
            return self.steps.pop(0) if self.steps else ("accept",)


class StandIn:
    def __init__(self, server, script: Script | None = None):
        self.server = server
        self.script = script or Script()
        self.requests: list[dict] = []
        self.accepted: list[dict] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        # Called after a message was accepted and before the answer goes back (the tests
        # SIGKILL the engine there).
        self.on_accept = None

    @property
    def url(self) -> str:
        return self.server.url_for("").rstrip("/")

    def _answer(self, kind: str, record: dict, accept) -> Response:
        step = self.script.next()
        with self._lock:
            self.requests.append({"kind": kind, "step": step[0], **record})
        if step[0] == "429":
            return Response(json.dumps({"message": "Too Many Requests", "code": 20429, "status": 429}), status=429,
                            headers={"Retry-After": str(step[1])}, content_type="application/json")
        if step[0] == "500":
            return Response(json.dumps({"message": "boom", "status": 500}), status=500,
                            content_type="application/json")
        if step[0] == "400":
            return Response(json.dumps({"message": "invalid 'To' number", "code": 21211, "status": 400}), status=400,
                            content_type="application/json")
        if step[0] == "hang":
            time.sleep(step[1])
            return Response("", status=504)
        with self._lock:
            kept = {"id": next(self._ids), **record}
            self.accepted.append(kept)
        if self.on_accept is not None:
            self.on_accept(kept)
        return accept(kept)


class TwilioStandIn(StandIn):
    def install(self) -> TwilioStandIn:
        self.server.expect_request(MESSAGES_PATH, method="POST").respond_with_handler(self._create)
        self.server.expect_request(MESSAGES_PATH, method="GET").respond_with_handler(self._list)
        return self

    def _create(self, request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs(request.get_data(as_text=True)).items()}

        def accept(kept: dict) -> Response:
            return Response(json.dumps(self._resource(kept)), status=201, content_type="application/json")

        return self._answer("create", {"to": form.get("To"), "from": form.get("From"), "body": form.get("Body")},
                            accept)

    def _resource(self, kept: dict) -> dict:
        return {"sid": f"SM{kept['id']:032d}", "account_sid": ACCOUNT, "to": kept["to"], "from": kept["from"],
                "body": kept["body"], "status": "queued", "direction": "outbound-api",
                "date_created": "Fri, 04 Dec 2026 15:00:00 +0000", "uri": f"{MESSAGES_PATH[:-5]}/SM{kept['id']}.json"}

    def _list(self, request: Request) -> Response:
        to = request.args.get("To")
        with self._lock:
            self.requests.append({"kind": "list", "to": to})
            found = [self._resource(k) for k in self.accepted if to is None or k["to"] == to]
        return Response(json.dumps({"messages": found, "next_page_uri": None, "page": 0, "page_size": 200,
                                    "uri": MESSAGES_PATH, "first_page_uri": MESSAGES_PATH, "previous_page_uri": None,
                                    "start": 0, "end": len(found)}), status=200, content_type="application/json")

    def bodies(self) -> list[str]:
        return [k["body"] for k in self.accepted]


class SendGridStandIn(StandIn):
    def install(self) -> SendGridStandIn:
        self.server.expect_request("/v3/mail/send", method="POST").respond_with_handler(self._send)
        self.server.expect_request("/v3/messages", method="GET").respond_with_handler(self._activity)
        return self

    def _send(self, request: Request) -> Response:
        mail = json.loads(request.get_data())
        record = {"to": mail["personalizations"][0]["to"][0]["email"], "subject": mail.get("subject"),
                  "alert_id": (mail.get("custom_args") or {}).get("alert_id"),
                  "types": sorted(c["type"] for c in mail.get("content", []))}

        def accept(kept: dict) -> Response:
            return Response("", status=202, headers={"X-Message-Id": f"sg-{kept['id']}"})

        return self._answer("send", record, accept)

    def _activity(self, request: Request) -> Response:
        query = request.args.get("query", "")
        with self._lock:
            self.requests.append({"kind": "activity", "query": query})
            found = [{"msg_id": f"sg-{k['id']}", "to_email": k["to"], "status": "delivered"}
                     for k in self.accepted if k["alert_id"] and f'"{k["alert_id"]}"' in query]
        return Response(json.dumps({"messages": found}), status=200, content_type="application/json")
