"""A collection run into the real Delta tables (delta-rs): every record stored or quarantined with
its reason, a malformed page loading nothing, re-runs of a day changing nothing, and no key in
any log line."""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime

import pytest
from provider_standins import Providers
from pydantic import SecretStr

from tickcast.altdata.collect import collect
from tickcast.catalog import tables
from tickcast.core.settings import Settings

NOW = datetime(2024, 1, 10, 12, 0, tzinfo=UTC)




def _rows(settings: Settings, table: str) -> list[dict]:
    found = tables.delta_rows(settings, table)
    return [] if found is None else found.to_pylist()


def _ours(caplog: pytest.LogCaptureFixture) -> str:
    """What the platform logged (the stand-in server's own access log shows the URLs it was sent)."""
    return "\n".join(r.getMessage() for r in caplog.records if r.name != "werkzeug")


def _quarantine(settings: Settings) -> list[tuple[str, str]]:
    return sorted((r["stage"], r["reason"]) for r in _rows(settings, tables.QUARANTINE))


def test_news_from_the_api_stores_scored_headlines_and_quarantines_a_malformed_page(
        settings: Settings, providers: Providers, caplog: pytest.LogCaptureFixture) -> None:
    live = settings.model_copy(update={"news_api_key": SecretStr("news-key"), "news_api_base": providers.base,
                                       "altdata_symbols": "AAPL,MSFT"})
    providers.articles["AAPL"] = [
        {"source": {"name": "Wire"}, "title": "Apple beats estimates, strong gains", "url": "https://n.example/1",
         "publishedAt": "2024-01-08T13:00:00Z"},
        {"source": {"name": "Wire"}, "title": "Apple faces lawsuit and losses", "url": "https://n.example/2",
         "publishedAt": "2024-01-09T13:00:00Z"},
        {"source": {"name": "Wire"}, "title": "", "url": "https://n.example/3", "publishedAt": "2024-01-09T14:00:00Z"},
        {"source": {"name": "Wire"}, "title": "From the future", "url": "https://n.example/4",
         "publishedAt": "2024-02-01T00:00:00Z"},
    ]
    # MSFT's answer is malformed (no totalResults): its article must not load.
    original = providers._news

    def msft_malformed(request):
        if request.args["q"] == '"MSFT"':
            from werkzeug import Response
            return Response(json.dumps({"status": "ok", "articles": [{"title": "x"}]}), content_type="application/json")
        return original(request)

    providers._news = msft_malformed
    providers.server.clear()
    providers.install()

    with caplog.at_level(logging.DEBUG):
        report = collect(live, "news", "20240110T060000", start=date(2024, 1, 3), end=date(2024, 1, 10), now=NOW)

    stored = sorted(_rows(live, "alt_news"), key=lambda r: r["published_at"])
    assert [r["headline"] for r in stored] == ["Apple beats estimates, strong gains", "Apple faces lawsuit and losses"]
    assert stored[0]["sentiment"] > 0.3 and stored[1]["sentiment"] < -0.3
    assert stored[1]["sentiment_lm"] == -1.0
    assert all(r["available_at"] == r["published_at"] and r["provider"] == "newsapi"
               and r["run_key"] == "20240110T060000" for r in stored)
    assert _quarantine(live) == [("alt_news", "malformed_payload:missing_totalResults"),
                                 ("alt_news", "missing_or_invalid:headline"), ("alt_news", "published_at_in_future")]
    assert (report.read, report.stored, report.quarantined) == (4, 2, 3)
    assert "news-key" not in _ours(caplog)

    again = collect(live, "news", "20240110T060000", start=date(2024, 1, 3), end=date(2024, 1, 10), now=NOW)
    assert (again.inserted, again.updated) == (0, 2)
    assert len(_rows(live, "alt_news")) == 2


def test_fred_first_releases_are_stored_with_their_publication_and_no_key_is_logged(
        settings: Settings, providers: Providers, caplog: pytest.LogCaptureFixture) -> None:
    live = settings.model_copy(update={"fred_api_key": SecretStr("fred-key"), "fred_api_base": providers.base,
                                       "altdata_macro_series": "UNRATE"})
    providers.observations["UNRATE"] = [
        {"date": "2023-11-01", "value": "3.7", "realtime_start": "2023-12-08"},
        {"date": "2023-12-01", "value": ".", "realtime_start": "2024-01-05"},
        {"date": "2023-12-01", "value": "3.7", "realtime_start": "2023-11-30"},
    ]
    providers.failures["/fred/series/observations"] = [("429", 0)]
    with caplog.at_level(logging.DEBUG):
        report = collect(live, "macro", "20240110T060000", start=date(2023, 11, 1), end=date(2024, 1, 10), now=NOW)

    [row] = _rows(live, "alt_macro")
    assert (row["series_id"], row["observation_date"], row["value"]) == ("UNRATE", date(2023, 11, 1), 3.7)
    assert row["available_at"] == datetime(2023, 12, 9, tzinfo=UTC)
    assert _quarantine(live) == [("alt_macro", "missing_or_invalid:value"), ("alt_macro", "published_before_observed")]
    assert report.reasons == {"missing_or_invalid:value": 1, "published_before_observed": 1}
    assert "fred-key" not in _ours(caplog) and "HTTP 429" in _ours(caplog)


def test_dropped_files_are_loaded_moved_by_run_and_reloaded_by_a_rerun(settings: Settings) -> None:
    inbox = settings.alt_data_inbox / "earnings"
    inbox.mkdir(parents=True)
    (inbox / "calendar.csv").write_text(
        "symbol,report_date,hour,eps_estimate,eps_actual,revenue_estimate,revenue_actual\n"
        "AAA,2024-01-04,amc,1.00,1.10,100,98\n"
        "BBB,2024-03-01,bmo,2.00,,,\n"
        "CCC,,amc,1,1,,\n"
        "bad symbol!,2024-01-04,amc,1,1,,\n"
        "DDD,2024-03-05,bmo,2.00,2.5,,\n")
    (inbox / "broken.json").write_text('{"records": [ {"symbol": ')
    report = collect(settings, "earnings", "20240110T060000", now=NOW)

    stored = {r["symbol"]: r for r in _rows(settings, "alt_earnings")}
    assert set(stored) == {"AAA", "BBB"}
    aaa = stored["AAA"]
    assert aaa["eps_surprise"] == pytest.approx(0.1) and aaa["revenue_surprise"] == pytest.approx(-0.02)
    assert aaa["available_at"] == datetime(2024, 1, 4, 21, 0, tzinfo=UTC)
    assert aaa["date_known_at"] == datetime(2023, 12, 21, tzinfo=UTC)
    assert stored["BBB"]["eps_surprise"] is None and stored["BBB"]["available_at"] == datetime(2024, 3, 1, 12, tzinfo=UTC)
    assert _quarantine(settings) == [("alt_earnings", "actuals_before_release"), ("alt_earnings", "invalid_symbol"),
                                     ("alt_earnings", "invalid_timestamp:report_date"),
                                     ("alt_earnings", "malformed_file:not_json")]
    assert sorted(report.files) == ["broken.json", "calendar.csv"]
    assert not [p for p in inbox.iterdir() if p.is_file()]
    assert sorted(p.name for p in (inbox / "loaded" / "20240110T060000").iterdir()) == ["broken.json", "calendar.csv"]

    rerun = collect(settings, "earnings", "20240110T060000", now=NOW)
    assert (rerun.inserted, rerun.updated) == (0, 2)
    assert len(_rows(settings, "alt_earnings")) == 2
    later = collect(settings, "earnings", "20240111T060000", now=NOW)
    assert (later.read, later.pages) == (0, 0)
