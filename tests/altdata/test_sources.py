"""The live adapters against stand-ins of their providers: the request each sends, paging to
the end, retrying a 429 no sooner than Retry-After, and a malformed payload handed back whole
for the quarantine."""

from __future__ import annotations

from datetime import date

import pytest
from provider_standins import Providers
from pydantic import SecretStr

from tickcast.altdata.http import ProviderClient, ProviderError
from tickcast.altdata.sources import EarningsCalendar, EdgarFundamentals, FredMacro, NewsApi, live_source
from tickcast.core.altdata import KINDS
from tickcast.core.settings import Settings


@pytest.fixture
def live(settings: Settings, providers: Providers) -> Settings:
    return settings.model_copy(update={
        "fred_api_key": SecretStr("fred-key"), "fred_api_base": providers.base,
        "news_api_key": SecretStr("news-key"), "news_api_base": providers.base,
        "earnings_api_key": SecretStr("finnhub-key"), "earnings_api_base": providers.base,
        "sec_api_base": providers.base, "sec_tickers_url": f"{providers.base}/files/company_tickers.json",
        "altdata_sec_user_agent": "TickCast tests ops@example.com", "altdata_macro_series": "DGS10,UNRATE",
        "altdata_http_attempts": 3, "altdata_http_timeout_seconds": 5.0,
    })


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def _client(settings: Settings, provider: str, base: str, sleeps: Sleeps, **headers: str) -> ProviderClient:
    return ProviderClient(provider, base, settings, headers=headers, sleep=sleeps)


def test_each_kind_is_live_only_with_its_credentials(settings: Settings, live: Settings) -> None:
    assert all(live_source(settings, kind) is None for kind in KINDS.values())
    assert {name: type(live_source(live, kind)).__name__ for name, kind in KINDS.items()} == {
        "news": "NewsApi", "macro": "FredMacro", "earnings": "EarningsCalendar", "fundamentals": "EdgarFundamentals"}


def test_fred_asks_for_first_releases_and_pages_by_offset_to_the_count(live: Settings, providers: Providers) -> None:
    providers.observations["DGS10"] = [{"date": f"2024-01-{d:02d}", "value": f"4.{d:02d}",
                                        "realtime_start": f"2024-01-{d + 1:02d}", "realtime_end": "9999-12-31"}
                                       for d in range(1, 26)]
    providers.observations["UNRATE"] = [{"date": "2024-01-01", "value": "3.7", "realtime_start": "2024-02-02"}]
    source = FredMacro(live)
    source.page_size = 10
    pages = list(source.pages([], date(2024, 1, 1), date(2024, 3, 1)))

    assert [p.origin for p in pages] == ["fred:DGS10@0", "fred:DGS10@10", "fred:DGS10@20", "fred:UNRATE@0"]
    records = [r for p in pages for r in p.records]
    assert len(records) == 26 and records[0] == {"series_id": "DGS10", "observation_date": "2024-01-01",
                                                 "value": "4.01", "release_date": "2024-01-02"}
    first = providers.requests[0]["args"]
    assert first == {"series_id": "DGS10", "api_key": "fred-key", "file_type": "json",
                     "observation_start": "2024-01-01", "observation_end": "2024-03-01",
                     "realtime_start": "1776-07-04", "realtime_end": "9999-12-31", "output_type": "4",
                     "sort_order": "asc", "limit": "10", "offset": "0"}
    assert [r["args"]["offset"] for r in providers.requests] == ["0", "10", "20", "0"]


def test_a_429_is_retried_no_sooner_than_retry_after_and_a_500_too(live: Settings, providers: Providers) -> None:
    providers.observations["DGS10"] = [{"date": "2024-01-02", "value": "4", "realtime_start": "2024-01-03"}]
    providers.failures["/fred/series/observations"] = [("429", 7), ("500",)]
    sleeps = Sleeps()
    source = FredMacro(live.model_copy(update={"altdata_macro_series": "DGS10"}),
                       client=_client(live, "fred", providers.base, sleeps))
    [page] = list(source.pages([], date(2024, 1, 1), date(2024, 1, 31)))

    assert len(page.records) == 1 and page.malformed is None
    assert len(providers.requests) == 3
    assert len(sleeps) == 2 and sleeps[0] >= 7.0


def test_retries_end_after_the_configured_attempts_with_the_key_masked(live: Settings, providers: Providers) -> None:
    from tickcast.altdata.http import TransientProviderError

    providers.failures["/fred/series/observations"] = [("429", 0)] * 5
    source = FredMacro(live.model_copy(update={"altdata_macro_series": "DGS10"}),
                       client=_client(live, "fred", providers.base, Sleeps()))
    with pytest.raises(TransientProviderError) as raised:
        list(source.pages([], date(2024, 1, 1), date(2024, 1, 31)))
    assert len(providers.requests) == 3  # altdata_http_attempts
    assert "HTTP 429" in str(raised.value) and "fred-key" not in str(raised.value) and "'***'" in str(raised.value)


def test_a_malformed_payload_comes_back_whole_for_the_quarantine(live: Settings, providers: Providers) -> None:
    providers.failures["/fred/series/observations"] = [("malformed", "<html>maintenance</html>"),
                                                      ("malformed", '{"observations": "none"}')]
    providers.observations["UNRATE"] = [{"date": "2024-01-01", "value": "3.7", "realtime_start": "2024-02-02"}]
    pages = list(FredMacro(live).pages([], date(2024, 1, 1), date(2024, 3, 1)))

    assert [(p.origin, p.malformed, p.records) for p in pages[:2]] == [
        ("fred:DGS10@0", "malformed_payload:not_json (JSONDecodeError)", []),
        ("fred:UNRATE@0", "malformed_payload:missing_observations", [])]
    assert pages[0].raw == "<html>maintenance</html>"


def test_news_pages_until_total_results_with_the_key_in_a_header(live: Settings, providers: Providers) -> None:
    providers.articles["AAPL"] = [{"source": {"id": None, "name": "Wire"}, "title": f"Apple headline {i}",
                                   "url": f"https://news.example/{i}", "publishedAt": f"2024-01-0{1 + i % 5}T12:00:00Z"}
                                  for i in range(5)]
    source = NewsApi(live)
    source.page_size = 2
    pages = list(source.pages(["AAPL", "MSFT"], date(2024, 1, 1), date(2024, 1, 7)))

    assert [p.origin for p in pages] == ["newsapi:AAPL@1", "newsapi:AAPL@2", "newsapi:AAPL@3", "newsapi:MSFT@1"]
    records = [r for p in pages for r in p.records]
    assert [r["headline"] for r in records] == [f"Apple headline {i}" for i in range(5)]
    assert records[0]["symbol"] == "AAPL" and records[0]["source"] == "Wire" and len(records[0]["news_id"]) == 40
    request = providers.requests[0]
    assert request["headers"]["X-Api-Key"] == "news-key" and "news-key" not in str(request["args"])
    assert request["args"] == {"q": '"AAPL"', "from": "2024-01-01", "to": "2024-01-07", "language": "en",
                               "sortBy": "publishedAt", "pageSize": "2", "page": "1"}


def test_news_says_what_the_provider_refused(live: Settings, providers: Providers) -> None:
    source = NewsApi(live.model_copy(update={"news_api_key": SecretStr("wrong")}))
    with pytest.raises(ProviderError, match="apiKeyInvalid"):
        list(source.pages(["AAPL"], date(2024, 1, 1), date(2024, 1, 7)))


def test_earnings_are_asked_in_windows_and_mapped(live: Settings, providers: Providers) -> None:
    providers.calendar = [
        {"date": "2024-01-25", "epsActual": 2.18, "epsEstimate": 2.1, "hour": "amc", "quarter": 1,
         "revenueActual": 119.6e9, "revenueEstimate": 117.9e9, "symbol": "AAPL", "year": 2024},
        {"date": "2024-02-20", "epsActual": None, "epsEstimate": 1.0, "hour": "", "quarter": 1, "revenueActual": None,
         "revenueEstimate": None, "symbol": "MSFT", "year": 2024},
        {"date": "2024-02-21", "epsActual": None, "epsEstimate": 5.0, "hour": "bmo", "quarter": 4,
         "revenueActual": None, "revenueEstimate": None, "symbol": "ZZZ", "year": 2023},
    ]
    pages = list(EarningsCalendar(live).pages(["AAPL", "MSFT"], date(2024, 1, 1), date(2024, 3, 15)))

    assert [p.origin for p in pages] == ["finnhub:2024-01-01..2024-01-30", "finnhub:2024-01-31..2024-02-29",
                                         "finnhub:2024-03-01..2024-03-15"]
    records = [r for p in pages for r in p.records]
    assert records == [
        {"symbol": "AAPL", "report_date": "2024-01-25", "hour": "amc", "fiscal_period": "2024Q1", "eps_estimate": 2.1,
         "eps_actual": 2.18, "revenue_estimate": 117.9e9, "revenue_actual": 119.6e9},
        {"symbol": "MSFT", "report_date": "2024-02-20", "hour": None, "fiscal_period": "2024Q1", "eps_estimate": 1.0,
         "eps_actual": None, "revenue_estimate": None, "revenue_actual": None}]
    assert all(r["headers"]["X-Finnhub-Token"] == "finnhub-key" and "token" not in r["args"]
               for r in providers.requests)


def test_edgar_maps_tickers_to_ciks_and_facts_to_metrics(live: Settings, providers: Providers) -> None:
    providers.tickers = {"AAPL": 320193, "MSFT": 789019}
    providers.facts[320193] = {
        "us-gaap": {
            "EarningsPerShareDiluted": {"units": {"USD/shares": [
                {"end": "2023-09-30", "val": 6.13, "form": "10-K", "filed": "2023-11-03", "fy": 2023, "fp": "FY"},
                {"end": "2020-09-26", "val": 3.28, "form": "10-K", "filed": "2020-10-30"}]}},
            "RevenueFromContractWithCustomerExcludingAssessedTax": {"units": {"USD": [
                {"end": "2023-12-30", "val": 119.575e9, "form": "10-Q", "filed": "2024-02-02"}]}},
        },
        "dei": {"EntityCommonStockSharesOutstanding": {"units": {"shares": [
            {"end": "2024-01-19", "val": 15441881000, "form": "10-Q", "filed": "2024-02-02"}]}}},
    }
    pages = list(EdgarFundamentals(live).pages(["AAPL", "MSFT", "NOPE"], date(2023, 1, 1), date(2024, 6, 30)))

    # MSFT has no facts at the stand-in (a 404, as EDGAR answers for a company without XBRL): skipped.
    assert [p.origin for p in pages] == ["edgar:AAPL:CIK0000320193"]
    assert pages[0].records == [
        {"symbol": "AAPL", "metric": "eps_diluted", "period_end": "2023-09-30", "form": "10-K", "value": 6.13,
         "filed": "2023-11-03"},
        {"symbol": "AAPL", "metric": "revenue", "period_end": "2023-12-30", "form": "10-Q", "value": 119.575e9,
         "filed": "2024-02-02"},
        {"symbol": "AAPL", "metric": "shares_outstanding", "period_end": "2024-01-19", "form": "10-Q",
         "value": 15441881000, "filed": "2024-02-02"}]
    assert all(r["headers"]["User-Agent"] == "TickCast tests ops@example.com" for r in providers.requests)
