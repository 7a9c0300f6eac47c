"""The Grafana dashboards of infra/grafana/: what `tickcast metrics grafana` generates from the
charts the Dash pipeline page draws (one definition), and a dashboard Grafana can import."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from dashboard.pages import pipeline
from tickcast.cli import app
from tickcast.platform import grafana
from tickcast.platform.panels import CHARTS


def test_the_committed_dashboards_are_what_the_generator_makes() -> None:
    committed = sorted(p.name for p in grafana.GRAFANA_DIR.glob("*.json"))
    assert committed == sorted(grafana.dashboards())
    assert grafana.stale() == []
    result = CliRunner().invoke(app, ["metrics", "grafana", "--check"])
    assert result.exit_code == 0, result.output


def test_a_stale_file_is_found_and_rewritten(tmp_path: Path) -> None:
    grafana.write(tmp_path)
    assert grafana.stale(tmp_path) == []
    path = tmp_path / "pipeline.json"
    path.write_text(path.read_text().replace("avg_over_time", "min_over_time", 1))
    assert grafana.stale(tmp_path) == [path]
    grafana.write(tmp_path)
    assert grafana.stale(tmp_path) == []


def test_the_dashboard_is_valid_and_draws_the_dash_pages_queries() -> None:
    dashboard = json.loads((grafana.GRAFANA_DIR / "pipeline.json").read_text())
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert dashboard["uid"] and dashboard["title"]
    [variable] = dashboard["templating"]["list"]
    assert (variable["type"], variable["query"], variable["name"]) == ("datasource", "prometheus", "datasource")

    panels = dashboard["panels"]
    assert [p["id"] for p in panels] == list(range(1, len(panels) + 1))
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= set(grid) and grid["x"] + grid["w"] <= 24
        covered = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                   for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not covered & cells, f"panel {panel['title']} overlaps another"
        cells |= covered
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"] and all(t["expr"] and t["refId"] and t["datasource"]["uid"] == "${datasource}"
                                        for t in panel["targets"])

    # The same PromQL as the Dash page, in its order, with Grafana's interval for the page's window.
    assert pipeline.CHARTS is CHARTS
    assert [p["targets"][0]["expr"] for p in panels] == [c.expr("$__rate_interval") for c in pipeline.CHARTS]
    assert [p["targets"][0]["expr"].replace("$__rate_interval", "60s") for p in panels] == \
        [c.query(60) for c in pipeline.CHARTS]
