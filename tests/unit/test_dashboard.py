"""The Grafana dashboard imports cleanly and queries only metrics argoctl exports
(argoctl/metrics_names.py), and every exported metric has a panel."""

import json
import re
from pathlib import Path

import pytest

from argoctl import metrics_names

DASHBOARD = Path(__file__).parents[2] / "contrib" / "grafana" / "argoctl-dashboard.json"

# PromQL words that are not metric names.
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
            "and", "or", "unless", "offset", "inf", "nan"}


def metric_names_in(expr: str) -> set[str]:
    """Identifiers in a PromQL expression that name series: not functions,
    keywords, label names/values, durations, variables or numbers."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)          # string literals
    e = re.sub(r"\{[^}]*\}", "", e)                        # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)                       # ranges
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    e = re.sub(r"\$\{?\w+\}?", "", e)                      # dashboard variables
    e = re.sub(r"(label_values\([^,()]*),\s*\w+\s*\)", r"\1)", e)  # Grafana's label argument
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        word = m.group(0)
        rest = e[m.end():].lstrip()
        if rest.startswith("(") or word.lower() in KEYWORDS:
            continue                                       # a function call or keyword
        names.add(word)
    return names


def test_the_parser_sees_metrics_and_ignores_the_rest():
    assert metric_names_in('sum by (path) (rate(foo_total{a="b",c=~"x|y"}[$__rate_interval]))'
                           ' / on (path) bar') == {"foo_total", "bar"}
    assert metric_names_in('1 - max(x{dest=~"$dest"}) > bool 0') == {"x"}
    assert metric_names_in('label_values(m{instance=~"$instance"}, dest)') == {"m"}


def load():
    return json.loads(DASHBOARD.read_text())


def panels(dash):
    for p in dash["panels"]:
        yield p
        yield from p.get("panels", [])


def expressions(dash):
    for p in panels(dash):
        for t in p.get("targets", []):
            yield p["title"], t["expr"]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]
            yield f"variable {var['name']}", q["query"] if isinstance(q, dict) else q


def test_every_query_uses_only_exported_metrics():
    seen = set()
    for where, expr in expressions(load()):
        used = metric_names_in(expr)
        assert used, f"{where}: no metric in {expr!r}"
        unknown = used - metrics_names.SERIES
        assert not unknown, f"{where}: {sorted(unknown)} not in argoctl/metrics_names.py"
        seen |= used
    missing = metrics_names.SERIES - seen
    assert not missing, f"metrics without a panel: {sorted(missing)}"


def test_queries_use_only_declared_labels():
    labels = {lab for m in metrics_names.METRICS for lab in m.labels} | {"instance", "job"}
    for where, expr in expressions(load()):
        for matcher in re.findall(r"\{([^}]*)\}", expr):
            for name in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matcher):
                assert name in labels, f"{where}: label {name}"
        for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
            for name in re.split(r"\s*,\s*", group.strip()):
                assert name in labels, f"{where}: label {name}"


def test_dashboard_is_importable_with_a_datasource_variable():
    dash = load()
    assert dash["title"] and dash["uid"] and isinstance(dash["schemaVersion"], int)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids))
    for p in panels(dash):
        if p["type"] == "row":
            continue
        # Every panel and query follows the variable, none hard-codes a data source.
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"]), p["title"]
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]


@pytest.mark.parametrize("metric", metrics_names.METRICS, ids=lambda m: m.name)
def test_metric_contract_is_well_formed(metric):
    assert re.fullmatch(r"argoctl_[a-z_]+", metric.name)
    assert metric.name.endswith("_total") == (metric.kind == "counter")
    assert metric.help.endswith(".")


def test_metrics_doc_lists_every_metric():
    doc = (Path(__file__).parents[2] / "docs" / "metrics.md").read_text()
    for m in metrics_names.METRICS:
        assert f"| `{m.name}` | {m.kind}" in doc, m.name
