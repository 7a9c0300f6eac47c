"""Local stand-ins for the data providers, real HTTP servers on 127.0.0.1 (pytest-httpserver)
that speak the endpoints the live adapters call - FRED's series observations, NewsAPI's
/v2/everything, Finnhub's earnings calendar, SEC EDGAR's company tickers and company facts -
paging as the providers do, and answering the next request of a path with a scripted failure
first when told to: 429 with Retry-After, 500, or a malformed payload. Every request is logged
with its query and headers."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response


@dataclass
class Providers:
    server: HTTPServer
    observations: dict[str, list[dict]] = field(default_factory=dict)
    articles: dict[str, list[dict]] = field(default_factory=dict)
    calendar: list[dict] = field(default_factory=list)
    tickers: dict[str, int] = field(default_factory=dict)
    facts: dict[int, dict] = field(default_factory=dict)
    # path -> answers to give before serving normally: ("429", retry_after) | ("500",) | ("malformed", body)
    failures: dict[str, list[tuple]] = field(default_factory=dict)
    requests: list[dict] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def install(self) -> Providers:
        routes = {"/fred/series/observations": self._fred, "/v2/everything": self._news,
                  "/api/v1/calendar/earnings": self._earnings, "/files/company_tickers.json": self._tickers}
        for path, handler in routes.items():
            self.server.expect_request(path).respond_with_handler(self._logged(path, handler))
        self.server.expect_request(_FACTS_PATH).respond_with_handler(self._logged("companyfacts", self._facts))
        return self

    def _logged(self, name: str, handler):
        def respond(request: Request) -> Response:
            self.requests.append({"path": request.path, "name": name, "args": dict(request.args),
                                  "headers": dict(request.headers)})
            scripted = self.failures.get(name) or []
            if scripted:
                step = scripted.pop(0)
                if step[0] == "429":
                    return Response("slow down", status=429, headers={"Retry-After": str(step[1])})
                if step[0] == "500":
                    return Response("oops", status=500)
                if step[0] == "malformed":
                    return Response(step[1], status=200, content_type="application/json")
            return handler(request)
        return respond

    @staticmethod
    def _json(payload) -> Response:
        return Response(json.dumps(payload), status=200, content_type="application/json")

    def _fred(self, request: Request) -> Response:
        if request.args.get("api_key") != "fred-key":
            return Response(json.dumps({"error_code": 400, "error_message": "Bad Request. api_key"}), status=400)
        rows = self.observations.get(request.args["series_id"], [])
        offset, limit = int(request.args.get("offset", 0)), int(request.args.get("limit", 100000))
        return self._json({"realtime_start": request.args.get("realtime_start"), "count": len(rows),
                           "offset": offset, "limit": limit, "observations": rows[offset:offset + limit]})

    def _news(self, request: Request) -> Response:
        if request.headers.get("X-Api-Key") != "news-key":
            return self._json({"status": "error", "code": "apiKeyInvalid", "message": "bad key"})
        symbol = request.args["q"].strip('"')
        rows = self.articles.get(symbol, [])
        page, size = int(request.args["page"]), int(request.args["pageSize"])
        return self._json({"status": "ok", "totalResults": len(rows),
                           "articles": rows[(page - 1) * size: page * size]})

    def _earnings(self, request: Request) -> Response:
        if request.headers.get("X-Finnhub-Token") != "finnhub-key":
            return Response("{}", status=401)
        first, last = request.args["from"], request.args["to"]
        return self._json({"earningsCalendar": [r for r in self.calendar if first <= r["date"] <= last]})

    def _tickers(self, request: Request) -> Response:
        return self._json({str(i): {"cik_str": cik, "ticker": t, "title": f"{t} Inc."}
                           for i, (t, cik) in enumerate(self.tickers.items())})

    def _facts(self, request: Request) -> Response:
        cik = int(request.path.rsplit("CIK", 1)[1].removesuffix(".json"))
        if cik not in self.facts:
            return Response("not found", status=404)
        return self._json({"cik": cik, "entityName": "x", "facts": self.facts[cik]})


_FACTS_PATH = __import__("re").compile(r"^/api/xbrl/companyfacts/CIK\d{10}\.json$")
