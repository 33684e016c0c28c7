"""The inline charts: well-formed SVG (so the browser draws them), escaped labels, honest counts."""
import xml.etree.ElementTree as ET

from webtune.report import svg

NS = "{http://www.w3.org/2000/svg}"


def parse(text):
    return ET.fromstring(text)


def test_every_chart_is_well_formed_and_escapes_labels():
    charts = [svg.line_chart({"train <loss>": [(1, 3.0), (2, 2.5)], "val & co": [(2, 2.7)]}),
              svg.bar_chart({"a<b": 3, "c&d": 1}), svg.stacked_bars({"src<1>": {"kept": 3, "rejected": 1}},
                                                                  {"kept": "#0f0", "rejected": "#f00"}),
              svg.histogram({"domain": [1, 2, 3, 40], "general": [5, 6]}), svg.interval(0.7, 0.5, 0.85),
              svg.grouped_bars({"domain <test>": {"base": 2.0, "tuned": 1.5}})]
    for chart in charts:
        root = parse(chart)
        assert root.tag == f"{NS}svg" and root.get("viewBox")
    assert "train &lt;loss&gt;" in charts[0] and "c&amp;d" in charts[1]


def test_histogram_counts_every_value_once():
    values = [1, 1, 2, 5, 9, 9, 9, 30]
    root = parse(svg.histogram(values, bins=6))
    titles = [r.find(f"{NS}title").text for r in root.iter(f"{NS}rect")]
    assert sum(int(t.rsplit(": ", 1)[1]) for t in titles) == len(values)
    assert titles[0].startswith("examples 1-")


def test_empty_data_says_so():
    assert "no data" in svg.line_chart({}) and "no data" in svg.histogram([]) and "no data" in svg.bar_chart({})
