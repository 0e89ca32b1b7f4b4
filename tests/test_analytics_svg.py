"""The analytics page's charts: well-formed SVG, bars proportional to their values, gaps left as gaps."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from agent.analytics_svg import BOTTOM, HEIGHT, TOP, bar_chart, line_chart, nice_ceiling

NS = {"svg": "http://www.w3.org/2000/svg"}


def _parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # raises on anything that is not well-formed XML
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert root.get("viewBox") and root.get("role") == "img"
    return root


def test_bars_are_proportional_to_their_values() -> None:
    root = _parse(bar_chart("Calls per day", ["03-01", "03-02", "03-03", "03-04"], [4, 3, 0, 1]))
    bars = root.findall("svg:rect[@class='bar']", NS)
    assert [b.get("data-label") for b in bars] == ["03-01", "03-02", "03-03", "03-04"]
    heights = [float(b.get("height", "nan")) for b in bars]
    assert heights[2] == 0
    assert heights[1] / heights[0] == pytest.approx(3 / 4, abs=1e-3)
    assert heights[3] / heights[0] == pytest.approx(1 / 4, abs=1e-3)
    # All bars stand on the same baseline and the tallest fills the axis (4 is a round top).
    bottoms = {round(float(b.get("y", "nan")) + float(b.get("height", "nan")), 1) for b in bars}
    assert len(bottoms) == 1
    assert heights[0] == pytest.approx(HEIGHT - TOP - BOTTOM)
    assert bars[0].findtext("svg:title", namespaces=NS) == "03-01: 4"


def test_labels_are_escaped() -> None:
    root = _parse(bar_chart('Cost <by> "country" & day', ["<script>", "A&B"], [0.04, 0.03]))
    assert root.findtext("svg:title", namespaces=NS) == 'Cost <by> "country" & day'
    assert [b.get("data-label") for b in root.findall("svg:rect[@class='bar']", NS)] == ["<script>", "A&B"]


def test_an_empty_chart_is_still_a_picture() -> None:
    root = _parse(bar_chart("Nothing", [], []))
    assert root.findall("svg:rect[@class='bar']", NS) == []
    root = _parse(line_chart("Nothing", ["03-01"], {"p50": [None]}))
    assert root.findall("svg:polyline", NS) == []


def test_lines_break_where_nothing_was_measured() -> None:
    labels = ["1", "2", "3", "4", "5"]
    root = _parse(line_chart("v2v", labels, {"p50": [500, 600, None, 700, 650], "p95": [900, 950, None, None, 990]}))
    p50 = root.findall("svg:polyline[@data-series='p50']", NS)
    p95 = root.findall("svg:polyline[@data-series='p95']", NS)
    assert [len(p.get("points", "").split()) for p in p50] == [2, 2]
    assert [len(p.get("points", "").split()) for p in p95] == [2]  # the lone 990 is a point, not a line
    points = root.findall("svg:circle[@data-series='p95']", NS)
    assert [float(c.get("data-value", "nan")) for c in points] == [900, 950, 990]
    # Higher values are drawn higher (smaller y), on one shared axis (top 1000).
    ys = [float(c.get("cy", "nan")) for c in points]
    assert ys[0] > ys[1] > ys[2]
    plot_h = HEIGHT - TOP - BOTTOM
    assert float(points[0].get("cy", "nan")) == pytest.approx(TOP + plot_h - plot_h * 0.9)


def test_the_axis_top_is_a_round_number_at_or_above_the_largest_value() -> None:
    assert [nice_ceiling(v) for v in (0, 1, 3, 4, 5, 11, 900, 0.07)] == [1, 1, 4, 4, 8, 20, 1000, 0.08]
    with pytest.raises(ValueError):
        bar_chart("x", ["a"], [1, 2])
