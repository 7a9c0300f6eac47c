// TickCast dashboard: number formats for the grids, the symbol link, and the watchlist's live feed.
// Served from the dashboard itself (no CDN).

var dagfuncs = (window.dashAgGridFunctions = window.dashAgGridFunctions || {});

// Returns are fractions (0.0123): shown as percentages. Prices are prices.
dagfuncs.tcPct = function (value) {
  if (value === null || value === undefined || !isFinite(value)) { return "–"; }
  return (value >= 0 ? "+" : "") + (value * 100).toFixed(2) + "%";
};
dagfuncs.tcPct0 = function (value) {
  if (value === null || value === undefined || !isFinite(value)) { return "–"; }
  return Math.round(value * 100) + "%";
};
dagfuncs.tcPrice = function (value) {
  if (value === null || value === undefined || !isFinite(value)) { return "–"; }
  return value.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
};
dagfuncs.tcStale = function (value) { return value ? "STALE" : "fresh"; };

var dagcomponentfuncs = (window.dashAgGridComponentFunctions = window.dashAgGridComponentFunctions || {});

dagcomponentfuncs.SymbolLink = function (props) {
  var symbol = props.value;
  return React.createElement("a", { href: "/symbol/" + encodeURIComponent(symbol), className: "symbol-link" }, symbol);
};

// The watchlist follows /stream/watchlist (server-sent events) while its page is shown and
// applies each batch of rows to the grid as a transaction: changed rows update in place.
(function () {
  var source = null;
  // What the page and the benchmark read: when each symbol's row last changed (epoch ms).
  window.tickcastLive = { appliedAt: {}, events: 0, loadedAt: Date.now() };

  function apply(el, rows) {
    dash_ag_grid.getApiAsync(el.dataset.grid).then(function (api) {
      var list = el.getAttribute("data-list");
      var update = [], add = [];
      rows.forEach(function (row) {
        if (api.getRowNode(row.symbol)) { update.push(row); } else if (list === "__all__") { add.push(row); }
      });
      api.applyTransaction({ update: update, add: add });
      var now = Date.now();
      update.concat(add).forEach(function (row) { window.tickcastLive.appliedAt[row.symbol] = now; });
      window.tickcastLive.events += 1;
    });
  }

  function follow() {
    var el = document.getElementById("watchlist-live");
    if (!el) {
      if (source) { source.close(); source = null; }
      return;
    }
    if (source) { return; }
    source = new EventSource(el.dataset.stream);
    source.addEventListener("rows", function (event) {
      var current = document.getElementById("watchlist-live");
      if (current) { apply(current, JSON.parse(event.data)); }
    });
  }

  setInterval(follow, 300);  // pages come and go without a reload
})();
