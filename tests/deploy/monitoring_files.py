"""Reading deploy/'s monitoring files: the series deploy/README.md documents (its "Monitoring"
table), the PromQL of the alert rules and of the Grafana dashboard, and the series names and
label matchers an expression reads.

Shared by tests/deploy/test_monitoring.py (the files alone) and tests/e2e/test_prometheus.py
(against a live scrape), so both check against the same reading.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts_test.yml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "tollgate.json"
README = DEPLOY / "README.md"

#: Series Prometheus itself makes for every target, which rules may read beside the gateway's.
PROMETHEUS_OWN = {"up": frozenset({"job", "instance"})}
#: Labels Prometheus adds to every scraped series (the target's).
TARGET_LABELS = frozenset({"job", "instance"})
#: The series a histogram family exposes, and the label its buckets add.
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


@dataclass(frozen=True)
class Series:
    name: str
    labels: frozenset[str]
    kind: str  # counter, gauge or histogram


def documented() -> dict[str, Series]:
    """The series deploy/README.md's "Monitoring" section lists in its table, by name."""
    text = README.read_text()
    start = text.index("\n## Monitoring\n")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end != -1 else len(text)]
    found: dict[str, Series] = {}
    for m in re.finditer(r"^\| `([a-z_:][a-z0-9_:]*)(?:\{([a-z_,]*)\})?` \| (counter|gauge|histogram) \|",
                         section, re.M):
        name, labels, kind = m.group(1), m.group(2), m.group(3)
        assert name not in found, f"deploy/README.md lists {name} twice"
        found[name] = Series(name, frozenset(labels.split(",")) if labels else frozenset(), kind)
    assert found, "deploy/README.md has no table of series under \"## Monitoring\""
    return found


# ---------------------------------------------------------------------------------------------
# The expressions


def alert_rules() -> list[dict]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels(board: dict) -> list[dict]:
    """Every panel, including those inside collapsed rows."""
    out = []
    for panel in board["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


#: What Grafana puts in place of its variables, for a query to be read as PromQL on its own:
#: intervals become a duration, a multi-valued variable (inside a regex matcher) any value.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
}


def concrete(expr: str, variables: list[str]) -> str:
    """A dashboard query with Grafana's variables replaced (see GRAFANA_VARIABLES); the
    dashboard's own variables become `.*`."""
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace("${" + name + "}", ".*").replace("$" + name, ".*")
    assert "$" not in expr, f"a variable the dashboard does not define is left in {expr!r}"
    return expr


def dashboard_queries(board: dict) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and of every query variable's label_values()
    series selector, with the variables replaced (`concrete`)."""
    variables = [v["name"] for v in board["templating"]["list"]]
    out = []
    for panel in dashboard_panels(board):
        for target in panel.get("targets", []):
            out.append((f"panel {panel['title']!r} target {target['refId']}",
                        concrete(target["expr"], variables)))
    for var in board["templating"]["list"]:
        if var["type"] != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = re.fullmatch(r"label_values\((.+),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)", query)
        assert m, f"variable {var['name']}: {query!r} is not label_values(selector, label)"
        out.append((f"variable {var['name']}", concrete(m.group(1), variables)))
    return out


# ---------------------------------------------------------------------------------------------
# Series names in PromQL

_TOKEN = re.compile(r"""
    (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<number>[0-9][0-9a-zA-Z_.]*|\.[0-9][0-9a-zA-Z_.]*)   # numbers and durations (5m, 1h30m)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=(){}\[\],@])
  | (?P<space>\s+)
""", re.X)

#: Words that are never series names where they stand (PromQL's keywords and binary operators).
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
            "group_left", "group_right", "inf", "nan"}
#: Keywords followed by a list of label names in parentheses.
LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
AGGREGATIONS = {"sum", "avg", "min", "max", "count", "stddev", "stdvar", "topk", "bottomk",
                "quantile", "count_values", "group"}


def tokens(expr: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        assert m, f"cannot read {expr[pos:]!r} in {expr!r}"
        if m.lastgroup != "space":
            out.append((m.lastgroup, m.group()))
        pos = m.end()
    return out


def selectors(expr: str) -> list[tuple[str, frozenset[str]]]:
    """(series name, label names matched) of every series selector in `expr`: identifiers that
    are not functions, aggregations, keywords or label names."""
    toks = tokens(expr)
    found = []
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        following = toks[i + 1][1] if i + 1 < len(toks) else None
        if kind == "op" and text == "{":
            raise AssertionError(f"a selector without a series name in {expr!r}")
        if kind != "ident":
            i += 1
            continue
        if text.lower() in KEYWORDS:
            i += 1
            if text in LABEL_LISTS and following == "(":
                while toks[i][1] != ")":
                    i += 1
                i += 1
            continue
        if following == "(" or (text in AGGREGATIONS and following in ("by", "without")):
            i += 1
            continue
        labels = set()
        i += 1
        if following == "{":
            i += 1
            while toks[i][1] != "}":
                if toks[i][0] == "ident" and toks[i + 1][1] in ("=", "!=", "=~", "!~"):
                    labels.add(toks[i][1])
                i += 1
            i += 1
        found.append((text, frozenset(labels)))
    return found


def family_of(name: str, published: dict[str, Series]) -> tuple[Series | None, frozenset[str]]:
    """The documented series a name reads (a histogram's _bucket, _sum and _count read the
    histogram), and the labels a selector of it may match."""
    if name in published:
        return published[name], published[name].labels | TARGET_LABELS
    for suffix in HISTOGRAM_SUFFIXES:
        base = name.removesuffix(suffix)
        if base != name and base in published and published[base].kind == "histogram":
            extra = {"le"} if suffix == "_bucket" else set()
            return published[base], published[base].labels | TARGET_LABELS | extra
    if name in PROMETHEUS_OWN:
        return None, PROMETHEUS_OWN[name]
    raise KeyError(name)


def unpublished(expr: str, published: dict[str, Series]) -> list[str]:
    """What `expr` reads that the gateway does not publish: unknown names, and label
    matchers on labels the series does not have."""
    problems = []
    for name, labels in selectors(expr):
        try:
            _, allowed = family_of(name, published)
        except KeyError:
            problems.append(f"{name} is not a series the gateway publishes")
            continue
        if labels - allowed:
            problems.append(f"{name} has no label {sorted(labels - allowed)} (it has {sorted(allowed)})")
    return problems
