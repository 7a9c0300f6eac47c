"""Where alternative data comes from: one adapter per provider, each yielding pages of records
in the normalised field names of ``tickcast.core.altdata`` (the collector validates and stores
them), or a malformed page to quarantine whole.

Live adapters (used when their key is set): FRED for macro series, a NewsAPI-style
``/v2/everything`` for headlines, a Finnhub-style earnings calendar, SEC EDGAR's company facts
for fundamentals. The file adapter (the default) reads CSV or JSON files dropped into
``$TICKCAST_HOME/inbox/alt_data/<kind>/``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Protocol

from tickcast.altdata.http import MalformedPayload, ProviderClient, ProviderError
from tickcast.core.altdata import EARNINGS, FUNDAMENTALS, MACRO, NEWS, AltKind
from tickcast.core.settings import Settings

log = logging.getLogger("tickcast.altdata")


@dataclass
class Page:
    """One response or file: its records, or (``malformed``) the reason it cannot be read and
    what it held, to quarantine instead of loading any of it."""

    origin: str
    records: list[Mapping[str, Any]] = field(default_factory=list)
    malformed: str | None = None
    raw: str | None = None


class Source(Protocol):
    provider: str
    kind: AltKind

    def pages(self, symbols: list[str], start: date, end: date) -> Iterator[Page]: ...


def _records(payload: Any, key: str, origin: str, raw: str) -> list[Mapping[str, Any]]:
    """``payload[key]`` as a list of objects, or ``MalformedPayload``."""
    items = payload.get(key) if isinstance(payload, dict) else None
    if not isinstance(items, list):
        raise MalformedPayload(f"malformed_payload:missing_{key}", raw)
    return items


# --- files ------------------------------------------------------------------------------------


class FileSource:
    """Files dropped into the kind's inbox folder: CSV with a header row in the normalised
    field names, or JSON (a list of records, or ``{"records": [...]}``). ``pages`` reads the
    inbox and the files an earlier run of the same ``run_key`` already took (``loaded/<run_key>/``),
    so a re-run of a day reloads exactly that day's files; ``settle`` moves them there."""

    provider = "file"

    def __init__(self, kind: AltKind, inbox: Path, run_key: str):
        self.kind = kind
        self.inbox = inbox / kind.name
        self.loaded = self.inbox / "loaded" / run_key
        self.taken: list[Path] = []

    def pages(self, symbols: list[str], start: date, end: date) -> Iterator[Page]:
        self.inbox.mkdir(parents=True, exist_ok=True)
        candidates = [*sorted(self.inbox.iterdir()), *(sorted(self.loaded.iterdir()) if self.loaded.is_dir() else [])]
        for path in candidates:
            if not path.is_file() or path.suffix.lower() not in (".csv", ".json"):
                continue
            self.taken.append(path)
            text = path.read_bytes().decode("utf-8", "replace")
            try:
                yield Page(path.name, self._parse(path.suffix.lower(), text))
            except MalformedPayload as exc:
                yield Page(path.name, malformed=exc.reason, raw=exc.raw)

    @staticmethod
    def _parse(suffix: str, text: str) -> list[Mapping[str, Any]]:
        if suffix == ".csv":
            rows = list(csv.DictReader(io.StringIO(text)))
            if rows and None in rows[0]:
                raise MalformedPayload("malformed_file:csv_row_longer_than_header", text[:4_000])
            return [{key: (value if value != "" else None) for key, value in row.items()} for row in rows]
        try:
            payload = json.loads(text)
        except json.JSONDecodeError:
            raise MalformedPayload("malformed_file:not_json", text[:4_000]) from None
        if isinstance(payload, dict):
            payload = payload.get("records")
        if not isinstance(payload, list):
            raise MalformedPayload("malformed_file:no_record_list", text[:4_000])
        return payload

    def settle(self) -> list[str]:
        """Move the files read from the inbox under ``loaded/<run_key>/``; their names."""
        self.loaded.mkdir(parents=True, exist_ok=True)
        moved = []
        for path in self.taken:
            if path.parent == self.inbox and path.exists():
                path.replace(self.loaded / path.name)
                moved.append(path.name)
        return moved


# --- FRED (macro) -----------------------------------------------------------------------------


class FredMacro:
    """FRED's ``/fred/series/observations``, each observation's first release only
    (``output_type=4`` over all vintages): its ``realtime_start`` is when it was first published,
    which is what point-in-time features need. Paged by ``offset``/``limit``."""

    provider = "fred"
    kind = MACRO
    page_size = 1_000

    def __init__(self, settings: Settings, client: ProviderClient | None = None):
        assert settings.fred_api_key is not None
        self.key = settings.fred_api_key.get_secret_value()
        self.series = [s.strip().upper() for s in settings.altdata_macro_series.split(",") if s.strip()]
        self.max_pages = settings.altdata_max_pages
        self.client = client or ProviderClient("fred", settings.fred_api_base, settings)

    def pages(self, symbols: list[str], start: date, end: date) -> Iterator[Page]:
        for series in self.series:
            offset = 0
            for _ in range(self.max_pages):
                params = {"series_id": series, "api_key": self.key, "file_type": "json",
                          "observation_start": start.isoformat(), "observation_end": end.isoformat(),
                          "realtime_start": "1776-07-04", "realtime_end": "9999-12-31", "output_type": 4,
                          "sort_order": "asc", "limit": self.page_size, "offset": offset}
                origin = f"fred:{series}@{offset}"
                try:
                    payload = self.client.get_json("/fred/series/observations", params)
                    observations = _records(payload, "observations", origin, json.dumps(payload)[:4_000])
                    count = payload.get("count")
                    if not isinstance(count, int):
                        raise MalformedPayload("malformed_payload:missing_count", json.dumps(payload)[:4_000])
                except MalformedPayload as exc:
                    yield Page(origin, malformed=exc.reason, raw=exc.raw)
                    break
                yield Page(origin, [
                    {"series_id": series, "observation_date": item.get("date"), "value": item.get("value"),
                     "release_date": item.get("realtime_start")} if isinstance(item, dict) else item
                    for item in observations])
                offset += len(observations)
                if not observations or offset >= count:
                    break
            else:
                log.warning("fred %s: stopped after %d pages (TICKCAST_ALTDATA_MAX_PAGES)", series, self.max_pages)


# --- news -------------------------------------------------------------------------------------


def news_id(url: str | None, headline: str | None, published_at: str | None) -> str:
    """A stable id for a headline without one: the same article collected twice is one row."""
    basis = url or f"{headline}|{published_at}"
    return hashlib.sha1(basis.encode()).hexdigest()  # noqa: S324 - an id, not a signature


class NewsApi:
    """A NewsAPI-style ``/v2/everything``: headlines mentioning each symbol between two days,
    paged by ``page``/``pageSize`` until ``totalResults`` are read. The key goes in the
    ``X-Api-Key`` header, never in a URL."""

    provider = "newsapi"
    kind = NEWS
    page_size = 100

    def __init__(self, settings: Settings, client: ProviderClient | None = None):
        assert settings.news_api_key is not None
        self.max_pages = settings.altdata_max_pages
        self.client = client or ProviderClient(
            "newsapi", settings.news_api_base, settings, headers={"X-Api-Key": settings.news_api_key.get_secret_value()})

    def pages(self, symbols: list[str], start: date, end: date) -> Iterator[Page]:
        for symbol in symbols:
            read = 0
            for page in range(1, self.max_pages + 1):
                params = {"q": f'"{symbol}"', "from": start.isoformat(), "to": end.isoformat(), "language": "en",
                          "sortBy": "publishedAt", "pageSize": self.page_size, "page": page}
                origin = f"newsapi:{symbol}@{page}"
                try:
                    payload = self.client.get_json("/v2/everything", params)
                    raw = json.dumps(payload)[:4_000]
                    if isinstance(payload, dict) and payload.get("status") == "error":
                        raise ProviderError(f"newsapi: {payload.get('code')}: {payload.get('message')}")
                    articles = _records(payload, "articles", origin, raw)
                    total = payload.get("totalResults")
                    if not isinstance(total, int):
                        raise MalformedPayload("malformed_payload:missing_totalResults", raw)
                except MalformedPayload as exc:
                    yield Page(origin, malformed=exc.reason, raw=exc.raw)
                    break
                yield Page(origin, [self._record(symbol, item) for item in articles])
                read += len(articles)
                if not articles or read >= total:
                    break

    @staticmethod
    def _record(symbol: str, item: Any) -> Any:
        if not isinstance(item, dict):
            return item
        source = item.get("source")
        return {"news_id": news_id(item.get("url"), item.get("title"), item.get("publishedAt")), "symbol": symbol,
                "published_at": item.get("publishedAt"), "headline": item.get("title"),
                "source": source.get("name") if isinstance(source, dict) else None, "url": item.get("url")}


# --- earnings ---------------------------------------------------------------------------------


class EarningsCalendar:
    """A Finnhub-style ``/api/v1/calendar/earnings`` (report date, hour, EPS and revenue
    estimates and actuals). The provider caps the rows of one answer, so the span is asked for
    in windows of ``window_days``."""

    provider = "finnhub"
    kind = EARNINGS
    window_days = 30

    def __init__(self, settings: Settings, client: ProviderClient | None = None):
        assert settings.earnings_api_key is not None
        self.max_pages = settings.altdata_max_pages
        self.client = client or ProviderClient(
            "finnhub", settings.earnings_api_base, settings,
            headers={"X-Finnhub-Token": settings.earnings_api_key.get_secret_value()})

    def pages(self, symbols: list[str], start: date, end: date) -> Iterator[Page]:
        wanted = {symbol.upper() for symbol in symbols}
        window_start = start
        for _ in range(self.max_pages):
            if window_start > end:
                return
            window_end = min(end, window_start + timedelta(days=self.window_days - 1))
            origin = f"finnhub:{window_start}..{window_end}"
            try:
                payload = self.client.get_json("/api/v1/calendar/earnings",
                                               {"from": window_start.isoformat(), "to": window_end.isoformat()})
                items = _records(payload, "earningsCalendar", origin, json.dumps(payload)[:4_000])
            except MalformedPayload as exc:
                yield Page(origin, malformed=exc.reason, raw=exc.raw)
            else:
                yield Page(origin, [self._record(item) for item in items
                                    if not isinstance(item, dict) or not wanted
                                    or str(item.get("symbol", "")).upper() in wanted])
            window_start = window_end + timedelta(days=1)
        log.warning("finnhub: stopped after %d windows (TICKCAST_ALTDATA_MAX_PAGES)", self.max_pages)

    @staticmethod
    def _record(item: Any) -> Any:
        if not isinstance(item, dict):
            return item
        period = f"{item.get('year')}Q{item.get('quarter')}" if item.get("quarter") else None
        return {"symbol": item.get("symbol"), "report_date": item.get("date"), "hour": item.get("hour") or None,
                "fiscal_period": period, "eps_estimate": item.get("epsEstimate"), "eps_actual": item.get("epsActual"),
                "revenue_estimate": item.get("revenueEstimate"), "revenue_actual": item.get("revenueActual")}


# --- fundamentals -----------------------------------------------------------------------------

# Our metric <- (taxonomy, concepts in order of preference, unit) in EDGAR's company facts.
EDGAR_CONCEPTS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "eps_diluted": ("us-gaap", ("EarningsPerShareDiluted",), "USD/shares"),
    "revenue": ("us-gaap", ("Revenues", "RevenueFromContractWithCustomerExcludingAssessedTax"), "USD"),
    "net_income": ("us-gaap", ("NetIncomeLoss",), "USD"),
    "total_assets": ("us-gaap", ("Assets",), "USD"),
    "shares_outstanding": ("dei", ("EntityCommonStockSharesOutstanding",), "shares"),
}


class EdgarFundamentals:
    """SEC EDGAR: tickers to CIKs from ``company_tickers.json``, then each company's
    ``/api/xbrl/companyfacts/CIK##########.json``; a fact is kept if it was filed within the span.
    The SEC asks every client for a User-Agent naming a contact (``TICKCAST_ALTDATA_SEC_USER_AGENT``)."""

    provider = "edgar"
    kind = FUNDAMENTALS

    def __init__(self, settings: Settings, client: ProviderClient | None = None,
                 tickers_client: ProviderClient | None = None):
        assert settings.altdata_sec_user_agent
        headers = {"User-Agent": settings.altdata_sec_user_agent}
        self.client = client or ProviderClient("edgar", settings.sec_api_base, settings, headers=headers)
        base, _, path = settings.sec_tickers_url.rpartition("/files/")
        self.tickers_path = f"/files/{path}"
        self.tickers_client = tickers_client or ProviderClient("edgar", base, settings, headers=headers)

    def pages(self, symbols: list[str], start: date, end: date) -> Iterator[Page]:
        try:
            listing = self.tickers_client.get_json(self.tickers_path)
            if not isinstance(listing, dict):
                raise MalformedPayload("malformed_payload:tickers_not_an_object", json.dumps(listing)[:4_000])
            ciks = {str(entry.get("ticker", "")).upper(): int(entry["cik_str"]) for entry in listing.values()
                    if isinstance(entry, dict) and "cik_str" in entry}
        except MalformedPayload as exc:
            yield Page("edgar:company_tickers", malformed=exc.reason, raw=exc.raw)
            return
        except (TypeError, ValueError):
            yield Page("edgar:company_tickers", malformed="malformed_payload:bad_cik",
                       raw=json.dumps(listing)[:4_000])
            return
        for symbol in symbols:
            cik = ciks.get(symbol.upper())
            if cik is None:
                log.info("edgar: no CIK for %s; skipped", symbol)
                continue
            origin = f"edgar:{symbol}:CIK{cik:010d}"
            try:
                try:
                    payload = self.client.get_json(f"/api/xbrl/companyfacts/CIK{cik:010d}.json")
                except ProviderError as exc:
                    if exc.status != 404:
                        raise
                    log.info("edgar: no company facts for %s (CIK %d); skipped", symbol, cik)
                    continue
                facts = payload.get("facts") if isinstance(payload, dict) else None
                if not isinstance(facts, dict):
                    raise MalformedPayload("malformed_payload:missing_facts", json.dumps(payload)[:4_000])
            except MalformedPayload as exc:
                yield Page(origin, malformed=exc.reason, raw=exc.raw)
                continue
            yield Page(origin, list(self._records(symbol, facts, start, end)))

    @staticmethod
    def _records(symbol: str, facts: dict, start: date, end: date) -> Iterator[Any]:
        for metric, (taxonomy, concepts, unit) in EDGAR_CONCEPTS.items():
            for concept in concepts:
                entries = (((facts.get(taxonomy) or {}).get(concept) or {}).get("units") or {}).get(unit)
                if not entries:
                    continue
                for entry in entries:
                    if not isinstance(entry, dict):
                        yield entry
                        continue
                    filed = str(entry.get("filed", ""))
                    if filed and not start.isoformat() <= filed <= end.isoformat():
                        continue
                    yield {"symbol": symbol, "metric": metric, "period_end": entry.get("end"),
                           "form": entry.get("form"), "value": entry.get("val"), "filed": entry.get("filed")}
                break


def live_source(settings: Settings, kind: AltKind) -> Source | None:
    """The kind's live adapter when its credentials are configured, else None (files)."""
    if kind is MACRO and settings.fred_api_key is not None:
        return FredMacro(settings)
    if kind is NEWS and settings.news_api_key is not None:
        return NewsApi(settings)
    if kind is EARNINGS and settings.earnings_api_key is not None:
        return EarningsCalendar(settings)
    if kind is FUNDAMENTALS and settings.altdata_sec_user_agent:
        return EdgarFundamentals(settings)
    return None
