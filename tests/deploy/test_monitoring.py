"""The monitoring files in deploy/ checked without a cluster: the alert rules and their unit
tests with promtool, the example Prometheus configuration, the Grafana dashboard's JSON and
PromQL, and that every series they read is one the gateway publishes (deploy/README.md's
"Monitoring" table, which tests/e2e/test_prometheus.py checks against a live scrape).

promtool comes with Debian's `prometheus` package (scripts/install-deps.sh apt).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from monitoring_files import (ALERT_TESTS, ALERTS, PROMETHEUS_CONFIG, alert_rules, dashboard,
                              dashboard_panels, dashboard_queries, documented, selectors,
                              unpublished)

#: promtool answers in well under a second; this only stops a hung one.
PROMTOOL_TIMEOUT = 60
SEVERITIES = {"critical", "warning"}


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool not found: run scripts/install-deps.sh apt (Debian's prometheus package)",
                    pytrace=False)
    return subprocess.run([binary, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=PROMTOOL_TIMEOUT)


def passed(result: subprocess.CompletedProcess) -> bool:
    return result.returncode == 0


def output(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


# ---------------------------------------------------------------------------------------------
# Alert rules


def test_alert_rules_pass_promtool_check():
    result = promtool("check", "rules", str(ALERTS))
    assert passed(result), output(result)


def test_alert_rule_unit_tests_pass():
    result = promtool("test", "rules", str(ALERT_TESTS))
    assert passed(result), output(result)


def alert_tests() -> list[dict]:
    """Every alert_rule_test case of alerts_test.yml."""
    doc = yaml.safe_load(ALERT_TESTS.read_text())
    assert doc["rule_files"] == [ALERTS.name], doc["rule_files"]
    return [case for test in doc["tests"] for case in test.get("alert_rule_test", [])]


def test_every_alert_is_tested_firing_and_not_firing():
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names)), f"alert names repeat: {names}"
    cases = alert_tests()
    firing = {c["alertname"] for c in cases if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    assert not set(names) - firing, f"never shown firing: {sorted(set(names) - firing)}"
    assert not set(names) - quiet, f"never shown not firing: {sorted(set(names) - quiet)}"
    unknown = {c["alertname"] for c in cases} - set(names)
    assert not unknown, f"alerts_test.yml tests alerts alerts.yml does not have: {sorted(unknown)}"


def test_every_alert_waits_has_a_severity_and_says_what_happened():
    for rule in alert_rules():
        name = rule["alert"]
        assert rule.get("for"), f"{name} has no `for`: one bad scrape would page"
        assert rule.get("labels", {}).get("severity") in SEVERITIES, f"{name}: severity {rule.get('labels')}"
        annotations = rule.get("annotations", {})
        assert annotations.get("summary") and annotations.get("description"), f"{name}: {annotations}"


def test_firing_alerts_name_the_cluster_group_or_instance_they_are_about():
    """The unit tests' expected alerts carry the labels promtool computed and the annotations it
    rendered (promtool compares both): each summary must name the cluster, consumer group and
    gateway instance the alert is about."""
    checked = 0
    for case in alert_tests():
        for alert in case.get("exp_alerts") or []:
            labels, summary = alert["exp_labels"], alert["exp_annotations"]["summary"]
            for label in ("cluster", "consumergroup", "instance"):
                if label in labels:
                    assert labels[label] in summary, f"{case['alertname']}: {summary!r} does not name {label} {labels[label]}"
                    checked += 1
    assert checked, "no expected alert carries a cluster, consumergroup or instance label"


# ---------------------------------------------------------------------------------------------
# The example Prometheus configuration


def test_prometheus_config_passes_promtool_check_with_the_alert_rules():
    # From elsewhere than deploy/prometheus: rule_files must resolve relative to the file.
    result = promtool("check", "config", str(PROMETHEUS_CONFIG), cwd=Path("/"))
    assert passed(result), output(result)
    # promtool checks the rule files the configuration loads, after the configuration.
    assert f"Checking {ALERTS}" in result.stdout, output(result)


def test_prometheus_config_scrapes_the_job_the_alerts_read():
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert config["rule_files"] == [ALERTS.name]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["tollgate"].get("metrics_path", "/metrics") == "/metrics"
    up_rules = [r for r in alert_rules() if any(name == "up" for name, _ in selectors(r["expr"]))]
    assert up_rules and all('job="tollgate"' in r["expr"] for r in up_rules), up_rules


# ---------------------------------------------------------------------------------------------
# The Grafana dashboard


def test_dashboard_is_a_grafana_dashboard_on_a_prometheus_variable():
    board = dashboard()
    assert 36 <= board["schemaVersion"] <= 41, board["schemaVersion"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("cluster", "consumergroup"):
        var = variables[name]
        assert var["type"] == "query" and var["datasource"]["uid"] == "${datasource}", var
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        assert query.startswith("label_values(") and query.endswith(f", {name})"), query
    panels = dashboard_panels(board)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, (panel["title"], pos)
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"]["uid"] == "${datasource}", target


def test_dashboard_has_the_rows_an_operator_looks_for():
    board = dashboard()
    text = " ".join(t["expr"] for p in dashboard_panels(board) for t in p.get("targets", []))
    for wanted in ("tollgate_topic_bytes_in_total", "tollgate_topic_bytes_out_total",
                   "tollgate_topic_messages_in_total", "histogram_quantile(",
                   "tollgate_request_duration_seconds_bucket", "tollgate_throttle_seconds_total",
                   "tollgate_connections", "tollgate_authentication_failures_total",
                   "kafka_consumergroup_lag{", "tollgate_consumergroup_max_lag",
                   "tollgate_consumergroup_estimated_max_time_lag_seconds", "tollgate_pool_brokers",
                   "tollgate_pool_desired_brokers", "tollgate_pool_utilization",
                   "tollgate_pool_scale_events_total", "tollgate_meter_flush_lag_seconds",
                   "tollgate_audit_events_dropped_total"):
        assert wanted in text, f"the dashboard shows no {wanted}"


def test_dashboard_queries_parse_as_promql(tmp_path):
    """promtool reads each query as a recording rule's expression: a query it refuses is one
    Grafana's panel would show an error for."""
    queries = dashboard_queries(dashboard())
    assert queries

    def check(items: list[tuple[str, str]]) -> subprocess.CompletedProcess:
        rules = {"groups": [{"name": "dashboard", "rules": [
            {"record": f"dashboard:query_{i}", "expr": expr} for i, (_, expr) in enumerate(items)]}]}
        path = tmp_path / "dashboard-rules.yml"
        path.write_text(yaml.safe_dump(rules, sort_keys=False))
        return promtool("check", "rules", str(path))

    if passed(check(queries)):
        return
    # Say which ones.
    bad = [f"{where}: {expr}\n{output(result)}" for where, expr in queries
           if not passed(result := check([(where, expr)]))]
    assert not bad, "\n".join(bad)
    pytest.fail("promtool refused the queries together but none alone")


def test_every_series_the_dashboard_and_alerts_read_is_published():
    published = documented()
    problems = []
    for where, expr in dashboard_queries(dashboard()):
        problems += [f"dashboard {where}: {p}" for p in unpublished(expr, published)]
    for rule in alert_rules():
        problems += [f"alert {rule['alert']}: {p}" for p in unpublished(rule["expr"], published)]
    assert not problems, "\n".join(problems)


def test_the_dashboard_shows_every_published_series():
    published = documented()
    read = {name for _, expr in dashboard_queries(dashboard()) for name, _ in selectors(expr)}
    for suffix in ("_bucket", "_sum", "_count"):
        read |= {n.removesuffix(suffix) for n in read}
    assert not set(published) - read, f"published, never shown: {sorted(set(published) - read)}"


def test_the_series_table_is_the_one_the_gateway_publishes():
    """deploy/README.md's table against the names the gateway's collection and the CONTRACT
    ("Observability") give; the e2e suite compares it with a live scrape."""
    published = documented()
    assert published["tollgate_topic_bytes_in_total"].labels == {"cluster", "topic"}
    assert published["kafka_consumergroup_lag"].labels == {"cluster", "consumergroup", "topic", "partition"}
    assert published["tollgate_request_duration_seconds"].kind == "histogram"
    counters = {n for n, s in published.items() if s.kind == "counter"}
    assert counters == {n for n in published if n.endswith("_total")}, \
        "a counter's name ends in _total, and only a counter's"


# ---------------------------------------------------------------------------------------------
# The reading of PromQL these checks rely on


def test_selectors_are_series_not_functions_labels_or_keywords():
    expr = ('histogram_quantile(0.99, sum by (le, api) (rate(tollgate_request_duration_seconds_bucket'
            '{api=~"Produce|Fetch"}[5m]))) > 0.5 and on (api) max without (instance) '
            '(x_y{a="1",b!~"c"} offset 5m) / ignoring (outcome) group_left y')
    assert selectors(expr) == [("tollgate_request_duration_seconds_bucket", frozenset({"api"})),
                               ("x_y", frozenset({"a", "b"})), ("y", frozenset())]


def test_unpublished_names_and_labels_are_found():
    published = documented()
    assert unpublished('rate(tollgate_topic_bytes_in_total{cluster="c",topic="t",job="j"}[5m])', published) == []
    assert unpublished("tollgate_request_duration_seconds_bucket{le=\"1\"}", published) == []
    assert unpublished("tollgate_topic_byte_in_total", published) == \
        ["tollgate_topic_byte_in_total is not a series the gateway publishes"]
    assert len(unpublished('tollgate_connections{topic="t"}', published)) == 1
    assert len(unpublished('tollgate_connections_bucket', published)) == 1
