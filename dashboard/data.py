"""What the pages read, behind one object per dashboard process.

Everything comes through the platform's services and the catalog, as the API's own routes do:
bars and past predictions from the catalog's Delta readers, the latest predictions from the same
live service as the API (``tickcast.scoring.live_predictions``: the Kafka ``predictions`` topic,
the online store as fallback), explanations from the on-demand scorer, models from the registry
listing, alerts from the alert store. The dashboard owns only its saved watchlists.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from dashboard.components import base_close, quantile_price
from dashboard.watchlists import WatchlistStore
from tickcast.catalog.market import MarketStore
from tickcast.core.intervals import horizon_interval, interval
from tickcast.core.predictions import DEFAULT_ROUTE, Prediction, is_stale

if TYPE_CHECKING:
    from tickcast.core.settings import Settings
    from tickcast.scoring.live_predictions import LivePredictions
    from tickcast.scoring.on_demand import OnDemandScorer

log = logging.getLogger("tickcast.dashboard.data")

# Closes behind the watchlist's price change, shared by every browser for this long.
CLOSES_TTL_SECONDS = 60.0
# Past predictions drawn on a symbol page, at most.
HISTORY_LIMIT = 500


@dataclass(frozen=True)
class Closes:
    last: float
    previous: float | None


def watchlist_row(prediction: dict[str, Any], closes: Closes | None, now: datetime) -> dict[str, Any]:
    """One watchlist row from a prediction in its contract JSON form (what the topic, the online
    store and the API carry): numbers stay numbers (returns as fractions, prices as prices); the
    grid formats them."""
    data_ts = datetime.fromisoformat(prediction["data_timestamp"])
    data_ts = data_ts if data_ts.tzinfo else data_ts.replace(tzinfo=UTC)
    close = base_close(prediction["predicted_price"], prediction["predicted_return"])
    previous = closes.previous if closes is not None else None
    return {
        "symbol": prediction["symbol"],
        "price": close,
        "change": (close / previous - 1.0) if previous else None,
        "signal": prediction["signal"],
        "confidence": prediction["confidence"],
        "predicted_return": prediction["predicted_return"],
        "p10": prediction["p10"],
        "p90": prediction["p90"],
        "p10_price": quantile_price(close, prediction["p10"]),
        "p90_price": quantile_price(close, prediction["p90"]),
        "model": f"{prediction['model_name']} v{prediction['model_version']}",
        "route": prediction.get("route", DEFAULT_ROUTE),
        "horizon": prediction["horizon"],
        "data_timestamp": data_ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "stale": is_stale(data_ts, prediction["horizon"], now),
    }


class DashboardData:
    def __init__(self, settings: Settings, market: MarketStore | None = None):
        self.settings = settings
        self.market = market or MarketStore(settings)
        self.watchlists = WatchlistStore(settings.dashboard_dir / "watchlists.sqlite")
        self._live: LivePredictions | None = None
        self._live_lock = asyncio.Lock()
        self._closes: tuple[float, dict[str, Closes]] | None = None
        self._closes_lock = threading.Lock()
        self._scorer: OnDemandScorer | None = None

    # -- latest predictions --------------------------------------------------------------

    async def live(self) -> LivePredictions:
        """The live service, started on first use inside the server's event loop."""
        if self._live is None:
            async with self._live_lock:
                if self._live is None:
                    from tickcast.scoring.live_predictions import LivePredictions

                    live = LivePredictions(self.market.online, self.settings.api_poll_seconds, self.settings,
                                           client="dashboard")
                    live.start()
                    self._live = live
        return self._live

    async def latest_payloads(self) -> list[dict[str, Any]]:
        live = await self.live()
        return [orjson.loads(entry.payload) for entry in list(live.latest.values())]

    def closes(self) -> dict[str, Closes]:
        """Every symbol's latest daily close and the one before (cached for all browsers)."""
        with self._closes_lock:
            now = time.monotonic()
            if self._closes is None or now - self._closes[0] > CLOSES_TTL_SECONDS:
                try:
                    found = self.market.bars.last_closes("1d")
                except Exception:  # noqa: BLE001 - the grid still shows predictions without a change
                    log.exception("reading the latest closes failed")
                    found = {}
                self._closes = (now, {s: Closes(last, prev) for s, (last, prev) in found.items()})
            return self._closes[1]

    async def watchlist_rows(self, symbols: set[str] | None = None) -> list[dict[str, Any]]:
        payloads = await self.latest_payloads()
        closes = await asyncio.to_thread(self.closes)
        now = datetime.now(UTC)
        rows = [watchlist_row(p, closes.get(p["symbol"]), now) for p in payloads
                if symbols is None or p["symbol"] in symbols]
        rows.sort(key=lambda r: r["symbol"])
        return rows

    # -- one symbol ----------------------------------------------------------------------

    def history(self, symbol: str, interval_name: str, since: datetime | None = None) -> list[Prediction]:
        """Past predictions of ``symbol`` made on bars of this interval, oldest first."""
        from tickcast.catalog import predictions

        wanted = interval(interval_name)
        found = predictions.history(self.settings, symbol, start=since, limit=HISTORY_LIMIT)
        return [p for p in found if horizon_interval(p.horizon) == wanted]

    def prediction_for(self, symbol: str, interval_name: str) -> Prediction | None:
        """The newest prediction of ``symbol`` on bars of this interval: the live one when it is
        of this interval, else the newest stored."""
        latest = self.market.latest_prediction(symbol)
        if latest is not None and horizon_interval(latest.horizon) == interval(interval_name):
            return latest
        past = self.history(symbol, interval_name)
        return past[-1] if past else None

    def scorer(self) -> OnDemandScorer:
        if self._scorer is None:
            from tickcast.scoring.models import ModelLoader
            from tickcast.scoring.on_demand import OnDemandScorer

            self._scorer = OnDemandScorer(self.settings, ModelLoader(self.settings))
        return self._scorer
