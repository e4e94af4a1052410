"""A real Prometheus (Debian's `prometheus` package) scraping a real stack's `/metrics`
(CONTRACT.md, "Observability"):

- after a known produce and a group that committed part of it, PromQL returns the bytes and
  messages in to the byte (the record batches, sized from the v2 batch format as
  test_metering.py does, and equal to the usage API's), the bytes out equal to the usage API's,
  and the consumer lag equal to produced minus committed under kafka_exporter's names;
- `promtool check metrics` accepts the exposition without a lint warning;
- every series the scrape publishes is documented in deploy/README.md with its type and
  labels, and every one the dashboard and alerts read that this traffic makes is there;
- the shipped alert rules run on the live data without an evaluation error, and every
  dashboard query runs;
- a tenant reads its own cluster's series with its Kafka token, and nothing of another
  cluster's nor the operator's; without DescribeCluster, with another cluster's token or none,
  it reads nothing.

The module's stack serves /metrics on `--metrics-listen` (no token); Prometheus scrapes it
every second with the shipped alerts.yml loaded.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from confluent_kafka import Consumer, KafkaError, TopicPartition

from conftest import REPO, free_port, make_tenant
from support import RawKafka, TenantCluster, create_topic, end_process, unique, wait_until
from test_metering import get_usage, produce_exact, totals

sys.path.insert(0, str(REPO / "tests" / "deploy"))
from monitoring_files import (ALERTS, alert_rules, dashboard, dashboard_queries,  # noqa: E402
                              documented, family_of, selectors)

#: The meter flushes every second (the default, stated so the waits below are tied to it).
FLUSH_INTERVAL_MS = 1000

#: Prometheus scrapes and evaluates this often: a count is in PromQL a second or two after
#: the gateway counted it.
SCRAPE_SECONDS = 1
#: Long enough for a scrape, a meter flush and a lag reconciliation (every few seconds) to
#: land, with room for a loaded 2-core machine.
SETTLE_TIMEOUT = 60
PROMETHEUS_START_TIMEOUT = 60
#: A group's first records come after its join and rebalance (a few seconds); 100 small
#: records then take well under a second.
CONSUME_TIMEOUT = 90

#: A group reads all RECORDS and commits COMMITTED of them: a lag that is neither none nor
#: everything, so that neither "lag = log end offset" nor "lag = 0" could pass for it.
RECORDS = 100
COMMITTED = 60
#: The moving partition: records before the group commits, its commit, and records after.
MOVING_FIRST, MOVING_COMMITTED, MOVING_MORE = 10, 5, 10

#: promtool check metrics's exit code when its only complaints are lint warnings.
PROMTOOL_LINT_EXIT = 3
#: The one lint warning the exposition has on purpose: kafka_exporter's name for the lag summed
#: over a topic's partitions (CONTRACT.md), which the dashboards built for kafka_exporter read,
#: ends in _sum on a gauge.
ACCEPTED_LINT = {'kafka_consumergroup_lag_sum non-histogram and non-summary metrics should not have "_sum" suffix'}

#: Series this module's traffic makes (a produce, a group's commit, more records produced
#: while the gateway watched, a failed login) on a stack without an autoscaler. The rest
#: appear only on an event this module does not cause.
MADE_BY_THIS_TRAFFIC = {
    "tollgate_topic_bytes_in_total", "tollgate_topic_bytes_out_total",
    "tollgate_topic_messages_in_total", "tollgate_connections", "tollgate_requests_total",
    "tollgate_request_duration_seconds", "tollgate_authentication_failures_total",
    "tollgate_partitions", "tollgate_stored_bytes",
    "kafka_consumergroup_lag", "kafka_consumergroup_lag_sum", "kafka_consumergroup_current_offset",
    "kafka_topic_partition_current_offset", "tollgate_consumergroup_max_lag",
    "tollgate_consumergroup_sum_lag", "tollgate_consumergroup_estimated_max_time_lag_seconds",
    "tollgate_pool_brokers", "tollgate_pool_desired_brokers", "tollgate_meter_flush_lag_seconds",
}
#: Why the others may be missing here.
NOT_MADE_HERE = {
    "tollgate_throttle_seconds_total": "only once a quota throttled",
    "tollgate_pool_min_brokers": "only with an autoscaler (--autoscale-policy)",
    "tollgate_pool_max_brokers": "only with an autoscaler",
    "tollgate_pool_utilization": "only with an autoscaler",
    "tollgate_pool_scale_events_total": "only with an autoscaler",
    "tollgate_meter_flush_failures_total": "only once a flush failed",
    "tollgate_audit_events_total": "only with an audit sink",
    "tollgate_audit_events_delivered_total": "only with an audit sink",
    "tollgate_audit_events_dropped_total": "only with an audit sink",
    "tollgate_otlp_exports_total": "only with --otlp-endpoint",
    "tollgate_otlp_spans_dropped_total": "only with --otlp-endpoint",
}
#: Families only the operator sees: the pool, the meter, audit delivery, latency across clusters.
OPERATOR_ONLY = re.compile(r"^(tollgate_pool_|tollgate_meter_|tollgate_audit_|tollgate_request_duration_seconds)")


# ---------------------------------------------------------------------------------------------
# Prometheus


class Prometheus:
    """A prometheus process with its own configuration and data dir, on a free port."""

    def __init__(self, target: str):
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus not found: run scripts/install-deps.sh apt", pytrace=False)
        self.base = Path(tempfile.mkdtemp(prefix="tollgate-prometheus-", dir="/tmp"))
        config = {
            "global": {"scrape_interval": f"{SCRAPE_SECONDS}s", "scrape_timeout": f"{SCRAPE_SECONDS}s",
                       "evaluation_interval": f"{SCRAPE_SECONDS}s"},
            # The shipped rules, evaluated on live data (their job name is the shipped config's).
            "rule_files": [str(ALERTS)],
            "scrape_configs": [{"job_name": "tollgate", "metrics_path": "/metrics",
                                "static_configs": [{"targets": [target]}]}],
        }
        (self.base / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.base / "prometheus.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={self.base / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.base / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.base)

    def wait_ready(self) -> None:
        def ready():
            assert self.proc.poll() is None, f"prometheus exited with {self.proc.returncode}:\n{self.log()}"
            with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as resp:
                return resp.status == 200

        wait_until(ready, PROMETHEUS_START_TIMEOUT, "prometheus to be ready")

    def api(self, path: str, **params: str):
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as e:
            body = json.load(e)
        assert body["status"] == "success", f"{path} {params}: {body}"
        return body["data"]

    def query(self, promql: str) -> list[tuple[dict, str]]:
        """An instant query's samples: (labels, value as Prometheus wrote it)."""
        data = self.api("query", query=promql)
        assert data["resultType"] == "vector", data
        return [(r["metric"], r["value"][1]) for r in data["result"]]

    def value(self, promql: str) -> int | None:
        """The one sample `promql` returns, as an integer; None while there is none. A
        fractional value fails: these are counts."""
        samples = self.query(promql)
        if not samples:
            return None
        assert len(samples) == 1, f"{promql}: {samples}"
        text = samples[0][1]
        assert re.fullmatch(r"-?[0-9]+", text), f"{promql} = {text}: not an integer"
        return int(text)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        end_process(self.proc, 30)
        self._log.close()
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="module", autouse=True)
def metrics_address(request) -> str:
    """The stack's `--metrics-listen` address. The module's `stack` fixture reads STACK_ARGS
    when it starts the stack, after this (autouse fixtures come first in their scope): the port
    is free then, not merely at import, which in a whole suite's run is long before."""
    address = f"127.0.0.1:{free_port()}"
    request.module.STACK_ARGS = ("--metrics-listen", address, "--flush-interval-ms", str(FLUSH_INTERVAL_MS))
    return address


@pytest.fixture(scope="module")
def metrics_url(stack, metrics_address) -> str:
    assert metrics_address in stack.argv, "the stack started before metrics_address set STACK_ARGS"
    return f"http://{metrics_address}/metrics"


@pytest.fixture(scope="module")
def prometheus(metrics_address, stack):
    p = Prometheus(metrics_address)
    try:
        p.wait_ready()
        yield p
    finally:
        p.stop()


# ---------------------------------------------------------------------------------------------
# The traffic


@dataclass
class Traffic:
    tc: TenantCluster
    topic: str
    group: str
    bytes_in: int  # the record batches produced, from the v2 batch format


def produce_and_commit_part(tc: TenantCluster, records: int, committed: int) -> Traffic:
    """`records` single-record batches to partition 0 of a new topic, read back whole by a
    group that commits `committed` of them."""
    conn = tc.conn()
    topic, group = unique("t-prom-"), unique("g-prom-")
    create_topic(conn, topic, partitions=1)
    # Sizes vary so that a count of records could not pass for a count of bytes.
    batch = [(f"k-{i:03d}".encode(), b"v" * (10 + i % 17), 0) for i in range(records)]
    bytes_in = produce_exact(conn, topic, batch)

    consumer = Consumer(conn.confluent(**{"group.id": group, "auto.offset.reset": "earliest",
                                          "enable.auto.commit": False}))
    got = 0
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + CONSUME_TIMEOUT
        while got < records and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            assert msg.error() is None or msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
            if msg.error() is None:
                got += 1
        assert got == records, f"consumed {got} of {records}"
        # The group has read everything but commits only the first `committed` records.
        consumer.commit(offsets=[TopicPartition(topic, 0, committed)], asynchronous=False)
    finally:
        consumer.close()
    return Traffic(tc, topic, group, bytes_in)


@pytest.fixture(scope="module")
def traffic(stack, admin) -> Traffic:
    return produce_and_commit_part(make_tenant(stack, admin), RECORDS, COMMITTED)


@pytest.fixture(scope="module")
def moving_partition(stack, admin, prometheus) -> Traffic:
    """A group behind a partition whose high watermark moved while the gateway watched. The
    estimated time lag interpolates the mark's history (telemetry/lag/history.rs), which
    scrapes sample: a mark that never moved while sampled has no estimate."""
    t = produce_and_commit_part(make_tenant(stack, admin), MOVING_FIRST, MOVING_COMMITTED)
    mark = f'kafka_topic_partition_current_offset{{cluster="{t.tc.cluster_id}",topic="{t.topic}",partition="0"}}'
    wait_until(lambda: prometheus.value(mark) == MOVING_FIRST, SETTLE_TIMEOUT, f"{mark} = {MOVING_FIRST}")
    produce_exact(t.tc.conn(), t.topic, [(f"more-{i}".encode(), b"v", 0) for i in range(MOVING_MORE)])
    wait_until(lambda: prometheus.value(mark) == MOVING_FIRST + MOVING_MORE, SETTLE_TIMEOUT,
               f"{mark} = {MOVING_FIRST + MOVING_MORE}")
    return t


@pytest.fixture(scope="module")
def failed_login(stack, traffic) -> None:
    """One failed authentication (a token that is no token), for the failures' series."""
    error, _ = RawKafka.refused(stack.bootstrap, "not-a-token")
    assert error != 0


# ---------------------------------------------------------------------------------------------
# The exposition


def scrape(url: str, token: str | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@dataclass
class Family:
    kind: str
    samples: list[tuple[str, dict[str, str]]]  # (sample name, labels)


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? \S+$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:\\.|[^"\\])*)"')


def families(text: str) -> dict[str, Family]:
    """The exposition's families by name (a histogram's _bucket, _sum and _count under it)."""
    out: dict[str, Family] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            out[name] = Family(kind, [])
        elif line and not line.startswith("#"):
            m = _SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            name, labels = m.group(1), dict(_LABEL.findall(m.group(2) or ""))
            family = next((f for f in (name, *(name.removesuffix(s) for s in ("_bucket", "_sum", "_count")))
                           if f in out), None)
            assert family is not None, f"{name} has no # TYPE line before it"
            out[family].samples.append((name, labels))
    return out


# ---------------------------------------------------------------------------------------------
# The tests


def test_promql_counts_the_traffic_to_the_byte_and_the_lag(prometheus, traffic, admin):
    tc, topic, group = traffic.tc, traffic.topic, traffic.group
    series = f'cluster="{tc.cluster_id}",topic="{topic}"'

    def metered_in():
        return totals(get_usage(admin, tc))["bytes_in"] >= traffic.bytes_in

    wait_until(metered_in, SETTLE_TIMEOUT, "the usage API to count the bytes in")
    assert totals(get_usage(admin, tc))["bytes_in"] == traffic.bytes_in, \
        "the meter's bytes in are not the batches produced"

    def promql_is(promql: str, expected: int):
        return lambda: prometheus.value(promql) == expected

    wait_until(promql_is(f"tollgate_topic_bytes_in_total{{{series}}}", traffic.bytes_in), SETTLE_TIMEOUT,
               f"bytes in = {traffic.bytes_in} "
               f"(last: {prometheus.value(f'tollgate_topic_bytes_in_total{{{series}}}')})")
    wait_until(promql_is(f"tollgate_topic_messages_in_total{{{series}}}", RECORDS), SETTLE_TIMEOUT,
               f"messages in = {RECORDS}")

    # What was delivered depends on how the pool cut its answers (tansu's SQLite engine does
    # not answer with the batches as produced): the reference is the meter's count. Nothing
    # moves any more, so the two settle on one value.
    def bytes_out_agree():
        metered = totals(get_usage(admin, tc))["bytes_out"]
        scraped = prometheus.value(f"tollgate_topic_bytes_out_total{{{series}}}")
        bytes_out_agree.last = (metered, scraped)
        return metered > 0 and scraped == metered

    bytes_out_agree.last = None
    try:
        wait_until(bytes_out_agree, SETTLE_TIMEOUT, "bytes out to equal the usage API's")
    except AssertionError as e:
        raise AssertionError(f"{e}: (usage API, PromQL) = {bytes_out_agree.last}") from None

    lag = RECORDS - COMMITTED
    group_series = f'cluster="{tc.cluster_id}",consumergroup="{group}",topic="{topic}"'
    for promql, expected in (
        (f'kafka_consumergroup_lag{{{group_series},partition="0"}}', lag),
        (f"kafka_consumergroup_lag_sum{{{group_series}}}", lag),
        (f'kafka_consumergroup_current_offset{{{group_series},partition="0"}}', COMMITTED),
        (f'kafka_topic_partition_current_offset{{{series},partition="0"}}', RECORDS),
        (f'tollgate_consumergroup_max_lag{{cluster="{tc.cluster_id}",consumergroup="{group}"}}', lag),
        (f'tollgate_consumergroup_sum_lag{{cluster="{tc.cluster_id}",consumergroup="{group}"}}', lag),
    ):
        try:
            wait_until(promql_is(promql, expected), SETTLE_TIMEOUT, f"{promql} = {expected}")
        except AssertionError as e:
            raise AssertionError(f"{e}; last: {prometheus.query(promql)}") from None


def test_promtool_accepts_the_exposition_with_no_warning_but_the_kafka_exporter_name(metrics_url, traffic,
                                                                                     failed_login):
    status, text = scrape(metrics_url)
    assert status == 200, text
    assert f'topic="{traffic.topic}"' in text and "kafka_consumergroup_lag_sum{" in text
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: run scripts/install-deps.sh apt"
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                            text=True, timeout=60)
    said = f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    warnings = set(result.stderr.strip().splitlines())
    assert not result.stdout.strip(), said
    # promtool exits 3 when it has lint warnings, 1 when it cannot read the text.
    assert (result.returncode, warnings) in ((0, set()), (PROMTOOL_LINT_EXIT, ACCEPTED_LINT)), said


def test_every_series_published_is_documented_with_its_type_and_labels(metrics_url, traffic, failed_login):
    status, text = scrape(metrics_url)
    assert status == 200, text
    scraped = families(text)
    published = documented()
    problems = []
    for name, family in scraped.items():
        if name not in published:
            problems.append(f"{name} ({family.kind}) is published but not in deploy/README.md's table")
            continue
        if family.kind != published[name].kind:
            problems.append(f"{name} is a {family.kind}, the table says {published[name].kind}")
        _, allowed = family_of(name, published)
        for sample, labels in family.samples:
            extra = set(labels) - allowed - ({"le"} if sample.endswith("_bucket") else set())
            if extra:
                problems.append(f"{sample} has labels {sorted(extra)} the table does not list")
                break
    assert not problems, "\n".join(problems)


def test_every_series_the_dashboard_and_alerts_read_is_in_a_live_scrape(metrics_url, traffic, failed_login,
                                                                        moving_partition):
    published = documented()
    assert set(MADE_BY_THIS_TRAFFIC) | set(NOT_MADE_HERE) == set(published), \
        "every documented series is either made by this module's traffic or said not to be"
    read = {name for _, expr in dashboard_queries(dashboard()) for name, _ in selectors(expr)}
    read |= {name for rule in alert_rules() for name, _ in selectors(rule["expr"])}
    read = {family_of(name, published)[0].name for name in read if family_of(name, published)[0]}
    expected = read & MADE_BY_THIS_TRAFFIC
    assert expected

    def missing() -> list[str]:
        status, text = scrape(metrics_url)
        assert status == 200, text
        missing.last = sorted(expected - set(families(text)))
        return not missing.last

    missing.last = None
    try:
        wait_until(missing, SETTLE_TIMEOUT, "every series the dashboard and alerts read in the scrape")
    except AssertionError as e:
        raise AssertionError(f"{e}; read by the dashboard or alerts, not in the scrape: {missing.last}") from None


def test_the_estimated_time_lag_is_there_once_the_mark_moved(prometheus, moving_partition):
    t = moving_partition
    promql = (f'tollgate_consumergroup_estimated_max_time_lag_seconds'
              f'{{cluster="{t.tc.cluster_id}",consumergroup="{t.group}"}}')
    samples = wait_until(lambda: prometheus.query(promql), SETTLE_TIMEOUT, f"{promql} in Prometheus")
    assert len(samples) == 1, samples
    # The committed offset was below the mark when the history began, so it was passed
    # before then: some time ago, not now.
    assert 0 < float(samples[0][1]) < float("inf"), samples


def test_shipped_alert_rules_and_dashboard_queries_run_on_live_data(prometheus, traffic, failed_login):
    # Every query the dashboard sends, with its variables as "All": an error here (a
    # many-to-many match, say) is one only live data shows.
    wait_until(lambda: prometheus.value(f'count(tollgate_topic_bytes_in_total{{topic="{traffic.topic}"}})'),
               SETTLE_TIMEOUT, "the traffic's series in Prometheus")
    for where, expr in dashboard_queries(dashboard()):
        prometheus.query(expr)  # asserts status success
    # And one of them shows the traffic, once Prometheus has the two samples a rate needs.
    panel_query = next(expr for _, expr in dashboard_queries(dashboard())
                       if expr.startswith("sum by (cluster, topic) (rate(tollgate_topic_bytes_in_total"))
    ours = {"cluster": traffic.tc.cluster_id, "topic": traffic.topic}
    wait_until(lambda: ours in [labels for labels, _ in prometheus.query(panel_query)], SETTLE_TIMEOUT,
               f"{panel_query} to show {ours}")

    started = time.time()

    def rules_evaluated():
        groups = prometheus.api("rules", type="alert")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        assert {r["name"] for r in rules} == {r["alert"] for r in alert_rules()}, rules
        bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] == "err"]
        assert not bad, f"alert rules failing on live data: {bad}"
        # Evaluated at least once since the series were there.
        return all(r["health"] == "ok" and _unix(r["lastEvaluation"]) > started for r in rules)

    wait_until(rules_evaluated, SETTLE_TIMEOUT, "every shipped alert rule evaluated without an error")


def _unix(rfc3339: str) -> float:
    from datetime import datetime

    # Prometheus writes nanoseconds; Python reads microseconds.
    trimmed = re.sub(r"(\.\d{6})\d*", r"\1", rfc3339.replace("Z", "+00:00"))
    return datetime.fromisoformat(trimmed).timestamp()


# ---------------------------------------------------------------------------------------------
# Tenants' view


def tenant_metrics_url(stack, cluster_id: str) -> str:
    return f"{stack.admin_url}/v1/clusters/{cluster_id}/metrics"


def test_a_tenant_reads_its_own_series_and_nothing_else(stack, admin, mint_token, traffic, failed_login):
    a = traffic
    b = produce_and_commit_part(make_tenant(stack, admin), 10, 5)

    for own, other in ((a, b), (b, a)):
        status, text = scrape(tenant_metrics_url(stack, own.tc.cluster_id), own.tc.token)
        assert status == 200, text
        scraped = families(text)
        for name, family in scraped.items():
            assert not OPERATOR_ONLY.match(name), f"a tenant sees the operator's {name}"
            for sample, labels in family.samples:
                assert labels.get("cluster") == own.tc.cluster_id, \
                    f"{own.tc.cluster_id}'s view has {sample}{labels}"
        for foreign in (other.tc.cluster_id, other.topic, other.group, other.tc.physical_prefix):
            assert foreign not in text, f"{own.tc.cluster_id}'s view mentions {foreign}"
        # Its own traffic and group are there.
        for own_series in (f'tollgate_topic_bytes_in_total{{cluster="{own.tc.cluster_id}",topic="{own.topic}"}}',
                           f'consumergroup="{own.group}"'):
            assert own_series in text, f"{own.tc.cluster_id}'s view lacks {own_series}:\n{text}"

    a_url = tenant_metrics_url(stack, a.tc.cluster_id)
    status, body = scrape(a_url, b.tc.token)
    assert status == 403, ("another cluster's token", status, body)
    status, body = scrape(a_url)
    assert status == 401, ("no token", status, body)
    status, body = scrape(a_url, "not-a-token")
    assert status == 401, ("not a token", status, body)
    no_describe = mint_token(a.tc, ["kafka-cluster:Connect", "kafka-cluster:ReadData",
                                    "kafka-cluster:DescribeTopic"])
    status, body = scrape(a_url, no_describe)
    assert status == 403, ("a token without DescribeCluster", status, body)
    # A cluster id that does not exist is refused as another tenant's is: the answer does not
    # tell which ids exist.
    status, body = scrape(tenant_metrics_url(stack, "00000000-0000-4000-8000-000000000000"), a.tc.token)
    assert status == 403, ("an unknown cluster", status, body)
    for token in (a.tc.token, None):
        for other in ("/metrics", "/v1/clusters"):
            status, _ = scrape(f"{stack.admin_url}{other}", token)
            assert status == 401, (f"{other} with a tenant's token or none", status)


def test_the_operator_reads_everything_with_the_admin_token_or_on_its_own_listener(metrics_url, stack, traffic):
    status, on_admin = scrape(f"{stack.admin_url}/metrics", stack.admin_token)
    assert status == 200, on_admin
    status, on_own = scrape(metrics_url)
    assert status == 200, on_own
    for text in (on_admin, on_own):
        assert f'cluster="{traffic.tc.cluster_id}"' in text
        assert "tollgate_pool_brokers" in text and "tollgate_request_duration_seconds_bucket" in text
    status, _ = scrape(metrics_url.removesuffix("/metrics") + "/v1/clusters")
    assert status == 404, "the metrics listener serves /metrics alone"

