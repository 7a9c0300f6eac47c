"""The dashboard's pieces without a browser: figures, the card, watchlist rows, saved watchlists,
and the sign-in layers (sessions, Host check) through the real ASGI app."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pandas as pd
import pytest
from dash import html
from starlette.testclient import TestClient

from dashboard.components import band_points, candle_figure, outcomes, prediction_card
from dashboard.data import Closes, watchlist_row
from dashboard.security import SESSION_COOKIE, safe_next
from dashboard.watchlists import MAX_LISTS_PER_USER, WatchlistError, WatchlistStore
from tests.dashboard.conftest import ANALYST, PASSWORD, add_analyst
from tests.serving.market_data import make_prediction
from tickcast.catalog.market import Bar
from tickcast.core.settings import Settings

DAY = datetime(2024, 1, 2, tzinfo=UTC)


def _bars(count: int, interval: timedelta = timedelta(days=1)) -> list[Bar]:
    return [Bar("AAPL", DAY + interval * i, DAY + interval * (i + 1), 10.0 + i, 11.0 + i, 9.0 + i, 10.5 + i, 100.0, 3)
            for i in range(count)]


def test_candle_figure_holds_the_bars_in_order() -> None:
    bars = _bars(3)
    fig = candle_figure("AAPL", "1d", bars)
    candles = fig.data[0]
    assert candles.type == "candlestick"
    assert list(candles.close) == [10.5, 11.5, 12.5]
    assert [str(x) for x in candles.x] == [f"2024-01-0{d} 00:00:00" for d in (2, 3, 4)]
    assert fig.layout.title.text == "AAPL · 1d bars"
    assert candle_figure("AAPL", "1m", []).layout.title.text == "AAPL · 1m bars (none yet)"
    # Daily bars read as dates; one bar gets an axis of days around it, not of microseconds.
    assert fig.layout.xaxis.tickformat == "%Y-%m-%d" and fig.layout.xaxis.range is None
    one = candle_figure("AAPL", "1d", bars[:1])
    low, high = (pd.Timestamp(v) for v in one.layout.xaxis.range)
    assert low == pd.Timestamp("2023-12-30") and high == pd.Timestamp("2024-01-05")
    assert candle_figure("AAPL", "1m", bars[:1]).layout.xaxis.tickformat is None


def test_the_band_is_drawn_in_prices_where_the_horizon_ends_and_markers_sit_on_their_bars() -> None:
    bars = _bars(6)
    # Made on the close of the second bar (data time inside it), 1 bar ahead; then a SELL on the 5th.
    buy = make_prediction("AAPL", DAY + timedelta(days=1, hours=20), bars[1].close)
    sell = make_prediction("AAPL", DAY + timedelta(days=4, hours=20), bars[4].close).model_copy(
        update={"signal": "SELL", "predicted_at": datetime(2024, 2, 2, tzinfo=UTC)})
    found = outcomes([buy, sell], bars, "1d")
    # The first has reached its horizon: realised is the next bar's close over its own.
    assert found[0].target == bars[2].window_start
    assert found[0].realised == pytest.approx(bars[2].close / bars[1].close - 1)
    assert found[0].hit is True  # BUY and the close rose
    assert found[1].target == bars[5].window_start and found[1].hit is False  # SELL, but it rose
    band = band_points(found)
    # p10 / p90 are returns from the close the prediction was made at: drawn as prices (the
    # sample prediction's price is rounded to 4 decimals, hence the tolerance).
    assert band["p10"][0] == pytest.approx(bars[1].close * (1 - 0.02), rel=1e-4)
    assert band["p90"][0] == pytest.approx(bars[1].close * (1 + 0.04), rel=1e-4)
    assert band["p50"][0] == pytest.approx(bars[1].close * 1.0123, rel=1e-4)

    fig = candle_figure("AAPL", "1d", bars, history=[buy, sell])
    traces = {t.name: t for t in fig.data}
    assert list(traces["p10"].y) == pytest.approx(band["p10"]) and list(traces["p90"].y) == pytest.approx(band["p90"])
    assert [str(x) for x in traces["p50"].x] == ["2024-01-04 00:00:00", "2024-01-07 00:00:00"]
    # A BUY marker under its bar's low, a SELL marker above its bar's high.
    assert list(traces["BUY"].y) == [bars[1].low] and [str(x) for x in traces["BUY"].x] == ["2024-01-03 00:00:00"]
    assert list(traces["SELL"].y) == [bars[4].high]
    # Not reached yet: no realised return, no verdict.
    pending = outcomes([make_prediction("AAPL", DAY + timedelta(days=5, hours=20), bars[5].close)], bars, "1d")
    assert pending[0].realised is None and pending[0].hit is None
    assert pending[0].target == DAY + timedelta(days=6)


def test_prediction_card_shows_units_staleness_and_the_model() -> None:
    data_ts = datetime(2024, 2, 1, tzinfo=UTC)
    prediction = make_prediction("MSFT", data_ts, 400.0)
    fresh = html.Div(prediction_card("MSFT", prediction, now=data_ts + timedelta(hours=3)))
    text = str(fresh)
    # Returns as percentages, prices as prices: the quantiles are returns, shown as both.
    for fragment in ("BUY", "+1.23%", "404.92", "-2.00% / +1.23% / +4.00%", "392.00 / 416.00", "55% / 25% / 20%",
                     "momentum-baseline v1", "2024-02-01 00:00:00 UTC", "1d (daily bars)", "3.0 h"):
        assert fragment in text, fragment
    assert "STALE" not in text and "prediction-stale" not in text
    # The baseline says so on the badge and beside the model; a champion's prediction does not.
    assert "BUY · baseline" in text and "baseline: no champion model yet" in text
    champion = prediction.model_copy(update={"model_name": "tickcast-lstm-1d+tickcast-transformer-1d"})
    assert "baseline" not in str(html.Div(prediction_card("MSFT", champion, now=data_ts)))
    assert "earnings day (the earnings-day model)" in str(
        html.Div(prediction_card("MSFT", champion.model_copy(update={"route": "earnings"}), now=data_ts)))
    # 4.8 years old: marked stale, on the badge and in words.
    old = str(html.Div(prediction_card("MSFT", prediction, now=data_ts + timedelta(days=365 * 4.8))))
    assert "prediction-stale" in old and "STALE: the newest data is 1,752.0 d old" in old
    assert "No prediction yet" in str(html.Div(prediction_card("MSFT", None)))


def test_watchlist_rows_keep_units_and_mark_stale_ones() -> None:
    now = datetime(2024, 2, 1, 12, tzinfo=UTC)
    payload = orjson.loads(make_prediction("AAPL", now - timedelta(hours=2), 200.0).model_dump_json())
    row = watchlist_row(payload, Closes(last=200.0, previous=190.0), now)
    assert row["price"] == pytest.approx(200.0)  # the close the prediction was made at
    assert row["change"] == pytest.approx(200.0 / 190.0 - 1)
    assert row["predicted_return"] == 0.0123 and row["p10"] == -0.02 and row["p90"] == 0.04  # fractions
    assert row["p10_price"] == pytest.approx(196.0) and row["p90_price"] == pytest.approx(208.0)
    assert row["model"] == "momentum-baseline v1" and row["route"] == "normal" and row["stale"] is False
    old = watchlist_row(payload, None, now + timedelta(days=5))
    assert old["stale"] is True and old["change"] is None


def test_saved_watchlists_are_per_user_and_bounded(tmp_path: Path) -> None:
    store = WatchlistStore(tmp_path / "w.sqlite")
    assert store.names("ann") == []
    assert store.save("ann", " tech ", ["MSFT", "AAPL", "AAPL"]) == ["AAPL", "MSFT"]
    assert store.names("ann") == ["tech"] and store.names("bob") == []
    assert store.symbols("ann", "tech") == ["AAPL", "MSFT"] and store.symbols("bob", "tech") is None
    assert store.save("ann", "tech", ["NVDA"]) == ["NVDA"]  # replaced
    for bad_name, symbols, message in (("", ["AAPL"], "name"), ("x" * 41, ["AAPL"], "name"),
                                       ("ok", [], "at least one"), ("ok", ["AA PL"], "not ticker")):
        with pytest.raises(WatchlistError, match=message):
            store.save("ann", bad_name, symbols)
    for i in range(MAX_LISTS_PER_USER - 1):
        store.save("ann", f"list {i}", ["AAPL"])
    with pytest.raises(WatchlistError, match="at most"):
        store.save("ann", "one too many", ["AAPL"])
    assert store.delete("ann", "tech") and not store.delete("ann", "tech")


@pytest.mark.parametrize(("target", "expected"), [
    ("/symbol/AAPL?interval=1m", "/symbol/AAPL?interval=1m"), ("//evil.example/x", "/"),
    ("https://evil.example/", "/"), ("/\\evil", "/"), (None, "/"), ("models", "/"),
])
def test_sign_in_only_returns_to_this_site(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


@pytest.fixture
def client(settings: Settings):
    from dashboard.app import create_app

    add_analyst(settings)
    app = create_app(settings)
    with TestClient(app.server, base_url="http://127.0.0.1", follow_redirects=False) as test_client:
        yield test_client


def _update_request() -> dict:
    return {"output": "nav-user.children", "outputs": {"id": "nav-user", "property": "children"},
            "inputs": [{"id": "nav-user", "property": "id", "value": "nav-user"}], "changedPropIds": []}


def test_nothing_is_served_without_a_session(client: TestClient) -> None:
    page = client.get("/symbol/AAPL?interval=1m", headers={"Accept": "text/html"})
    assert page.status_code == 303 and page.headers["location"] == "/login?next=%2Fsymbol%2FAAPL%3Finterval%3D1m"
    for path in ("/_dash-layout", "/_dash-dependencies", "/stream/watchlist", "/assets/tickcast.js"):
        response = client.get(path)
        assert response.status_code == 401, path
        assert response.json() == {"detail": "sign in first: /login"}
    update = client.post("/_dash-update-component", json=_update_request())
    assert update.status_code == 401 and ANALYST not in update.text
    assert client.get("/healthz").status_code == 200
    assert client.get("/login").status_code == 200


def test_sign_in_gives_a_session_that_opens_everything(client: TestClient) -> None:
    wrong = client.post("/login", data={"username": ANALYST, "password": "not the password", "next": "/"})
    assert wrong.status_code == 401 and "Wrong user name or password." in wrong.text
    assert SESSION_COOKIE not in wrong.cookies
    right = client.post("/login", data={"username": ANALYST, "password": PASSWORD, "next": "/models?interval=1d"})
    assert right.status_code == 303 and right.headers["location"] == "/models?interval=1d"
    cookie = right.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert client.get("/_dash-layout").status_code == 200
    update = client.post("/_dash-update-component", json=_update_request())
    assert update.status_code == 200 and update.json()["response"]["nav-user"]["children"] == ANALYST
    # Signed out: nothing again.
    assert client.get("/logout").status_code == 303
    assert client.get("/_dash-layout").status_code == 401


def test_a_disabled_user_and_repeated_failures_are_refused(client: TestClient, settings: Settings) -> None:
    from tickcast.auth.users import UserStore

    UserStore(settings.dashboard_users_path).disable(ANALYST)
    refused = client.post("/login", data={"username": ANALYST, "password": PASSWORD})
    assert refused.status_code == 401
    for _ in range(10):
        client.post("/login", data={"username": "nobody", "password": "wrong password!"})
    throttled = client.post("/login", data={"username": "nobody", "password": "wrong password!"})
    assert throttled.status_code == 429 and "Too many failed sign-ins" in throttled.text


def test_another_host_header_is_refused(client: TestClient) -> None:
    # DNS rebinding: a page on evil.example resolving to 127.0.0.1 still says its own name.
    response = client.get("/login", headers={"Host": "evil.example:8050"})
    assert response.status_code == 400
    assert client.get("/login", headers={"Host": "localhost:8050"}).status_code == 200


def test_the_served_dashboard_refuses_a_body_over_the_bound_before_signing_in(settings: Settings) -> None:
    """As `tickcast serve dashboard` builds it: a 2 MB sign-in form gets 413 and is never parsed."""
    from dashboard.app import asgi_app
    from tickcast.cli.httpserver import body_bounded

    add_analyst(settings)
    with TestClient(body_bounded(asgi_app, settings), base_url="http://127.0.0.1") as served:
        refused = served.post("/login", content=b"username=" + b"a" * 2_000_000,
                              headers={"content-type": "application/x-www-form-urlencoded"})
        assert refused.status_code == 413
        assert "at most 1,048,576 bytes" in refused.json()["detail"]
        assert served.post("/login", data={"username": ANALYST, "password": PASSWORD}).status_code == 200


def test_building_the_app_reads_and_creates_nothing(settings: Settings) -> None:
    from pydantic import SecretStr

    from dashboard.app import create_app

    create_app(settings.model_copy(update={"dashboard_session_secret": SecretStr("a-real-secret-for-this-test")}))
    assert not settings.home_dir.exists()


def test_outside_local_mode_a_session_secret_is_required(settings: Settings) -> None:
    from dashboard.app import create_app

    with pytest.raises(RuntimeError, match="TICKCAST_DASHBOARD_SESSION_SECRET is not set"):
        create_app(settings.model_copy(update={"mode": "production"}))
