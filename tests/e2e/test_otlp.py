"""OTLP export (CONTRACT.md, "Observability": `--otlp-endpoint URL`) to a real receiver: a
small OTLP/HTTP server here that decodes every export with the `opentelemetry-proto` package's
generated messages, as a collector would.

- after a known produce and consume through a real client, the receiver finds
  `tollgate_topic_bytes_in_total`, `_messages_in_total` and `_bytes_out_total` for the topic
  equal to what the gateway's own `/metrics` shows and to the usage API's bytes, as integer
  points of monotonic cumulative sums;
- with `--otlp-trace-ratio 1` the requests arrive as SERVER spans named after their Kafka API,
  with the cluster they belong to;
- the gateway counts its exports in its own `/metrics`;
- a stop exports the counts once more, so the last requests before it are not lost.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (ExportMetricsServiceRequest,
                                                                          ExportMetricsServiceResponse)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTraceServiceRequest,
                                                                      ExportTraceServiceResponse)
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from conftest import make_tenant
from support import Admin, TenantCluster, create_topic, unique, wait_until
from test_metering import consume_all, get_usage, produce_exact, totals

#: Metrics are exported this often (`--otlp-interval-ms`; the default is 10 s): a count is at
#: the receiver within about this long of the gateway's counting it.
OTLP_INTERVAL_MS = 500
#: The gateway sends a batch of spans at least every 5 s (trace.rs TRACE_FLUSH).
SETTLE_TIMEOUT = 60
RECORDS = 40


# ---------------------------------------------------------------------------------------------
# The receiver


class Receiver:
    """An OTLP/HTTP receiver on a free loopback port: decodes each POST to /v1/metrics and
    /v1/traces and keeps what it decoded; anything it cannot decode is kept as an error."""

    def __init__(self):
        self.lock = threading.Lock()
        self.metrics: list[ExportMetricsServiceRequest] = []
        self.traces: list[ExportTraceServiceRequest] = []
        self.content_types: set[str] = set()
        self.errors: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            # Keep-alive, as a collector offers: the gateway keeps its connection between exports.
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                kinds = {"/v1/metrics": (ExportMetricsServiceRequest, ExportMetricsServiceResponse, receiver.metrics),
                         "/v1/traces": (ExportTraceServiceRequest, ExportTraceServiceResponse, receiver.traces)}
                if self.path not in kinds:
                    with receiver.lock:
                        receiver.errors.append(f"POST to {self.path}")
                    return self.answer(404, b"")
                request_type, response_type, into = kinds[self.path]
                try:
                    message = request_type.FromString(body)
                except Exception as e:  # noqa: BLE001 - kept for the test to report
                    with receiver.lock:
                        receiver.errors.append(f"{self.path}: {e!r}")
                    return self.answer(400, b"")
                with receiver.lock:
                    receiver.content_types.add(self.headers.get("Content-Type", ""))
                    into.append(message)
                self.answer(200, response_type().SerializeToString())

            def answer(self, status: int, body: bytes):
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def latest_metrics(self) -> ExportMetricsServiceRequest | None:
        with self.lock:
            return self.metrics[-1] if self.metrics else None

    def spans(self) -> list[Span]:
        with self.lock:
            exports = list(self.traces)
        return [span for e in exports for rs in e.resource_spans for ss in rs.scope_spans for span in ss.spans]


def attributes(kvs) -> dict:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in kvs}


@dataclass
class Point:
    value: int
    attributes: dict


def sum_points(export: ExportMetricsServiceRequest | None, name: str) -> list[Point]:
    """The points of the cumulative monotonic sum `name` in `export`; each must be an integer."""
    points = []
    if export is None:
        return points
    for rm in export.resource_metrics:
        assert attributes(rm.resource.attributes).get("service.name") == "tollgate", rm.resource
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name != name:
                    continue
                assert metric.WhichOneof("data") == "sum", f"{name} is a {metric.WhichOneof('data')}"
                assert metric.sum.is_monotonic, name
                assert metric.sum.aggregation_temporality == AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
                for p in metric.sum.data_points:
                    assert p.WhichOneof("value") == "as_int", f"{name}: a count sent as {p.WhichOneof('value')}"
                    assert 0 < p.start_time_unix_nano <= p.time_unix_nano, p
                    points.append(Point(p.as_int, attributes(p.attributes)))
    return points


def exported(receiver: Receiver, name: str, **labels: str) -> int | None:
    matching = [p.value for p in sum_points(receiver.latest_metrics(), name)
                if all(p.attributes.get(k) == v for k, v in labels.items())]
    assert len(matching) <= 1, f"{name}{labels}: several points {matching}"
    return matching[0] if matching else None


# ---------------------------------------------------------------------------------------------
# The gateway's own exposition


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:\\.|[^"\\])*)"')


def scraped(stack, name: str, **labels: str) -> int | None:
    """`name`'s sample with `labels` in the stack's `GET /metrics` (admin token), or None."""
    req = urllib.request.Request(f"{stack.admin_url}/metrics",
                                 headers={"Authorization": f"Bearer {stack.admin_token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        text = resp.read().decode()
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m and m.group(1) == name and dict(_LABEL.findall(m.group(2) or "")) == labels:
            return int(float(m.group(3)))
    return None


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module", autouse=True)
def receiver(request):
    """The module's receiver, and the stack's flags pointing at it (the `stack` fixture reads
    STACK_ARGS when it starts, after this autouse fixture)."""
    r = Receiver()
    request.module.STACK_ARGS = ("--otlp-endpoint", r.url, "--otlp-interval-ms", str(OTLP_INTERVAL_MS),
                                 "--otlp-trace-ratio", "1")
    yield r
    r.stop()


@dataclass
class Traffic:
    tc: TenantCluster
    topic: str
    bytes_in: int


def produce_and_consume(tc: TenantCluster, records: int) -> Traffic:
    conn = tc.conn()
    topic = unique("t-otlp-")
    create_topic(conn, topic, partitions=1)
    # Sizes vary so that a count of records could not pass for a count of bytes.
    batch = [(f"k-{i:03d}".encode(), b"v" * (10 + i % 13), 0) for i in range(records)]
    bytes_in = produce_exact(conn, topic, batch)
    consume_all(conn, topic, 1, records)
    return Traffic(tc, topic, bytes_in)


@pytest.fixture(scope="module")
def traffic(stack, admin) -> Traffic:
    return produce_and_consume(make_tenant(stack, admin), RECORDS)


# ---------------------------------------------------------------------------------------------
# The tests


def test_the_receiver_finds_the_counts_metrics_shows(receiver, stack, admin, traffic):
    tc, topic = traffic.tc, traffic.topic
    series = {"cluster": tc.cluster_id, "topic": topic}

    wait_until(lambda: totals(get_usage(admin, tc))["bytes_in"] >= traffic.bytes_in, SETTLE_TIMEOUT,
               "the usage API to count the bytes in")
    usage = totals(get_usage(admin, tc))
    assert usage["bytes_in"] == traffic.bytes_in, "the meter's bytes in are not the batches produced"

    # Nothing moves any more: the gateway's own exposition settles, and the receiver's latest
    # export must say the same.
    expected = {
        "tollgate_topic_bytes_in_total": traffic.bytes_in,
        "tollgate_topic_messages_in_total": RECORDS,
    }
    for name, value in expected.items():
        wait_until(lambda: scraped(stack, name, **series) == value, SETTLE_TIMEOUT,
                   f"/metrics {name} = {value} (last: {scraped(stack, name, **series)})")

    def bytes_out_settled():
        metered = totals(get_usage(admin, tc))["bytes_out"]
        shown = scraped(stack, "tollgate_topic_bytes_out_total", **series)
        bytes_out_settled.last = (metered, shown)
        return metered > 0 and shown == metered

    bytes_out_settled.last = None
    try:
        wait_until(bytes_out_settled, SETTLE_TIMEOUT, "/metrics bytes out to equal the usage API's")
    except AssertionError as e:
        raise AssertionError(f"{e}: (usage API, /metrics) = {bytes_out_settled.last}") from None
    expected["tollgate_topic_bytes_out_total"] = bytes_out_settled.last[1]

    def receiver_agrees():
        got = {name: exported(receiver, name, **series) for name in expected}
        receiver_agrees.last = got
        return got == expected

    receiver_agrees.last = None
    try:
        wait_until(receiver_agrees, SETTLE_TIMEOUT, f"the receiver's latest export to show {expected}")
    except AssertionError as e:
        raise AssertionError(f"{e}; last: {receiver_agrees.last}") from None
    assert receiver.content_types == {"application/x-protobuf"}, receiver.content_types
    assert not receiver.errors, receiver.errors


def test_requests_arrive_as_server_spans(receiver, traffic):
    cluster = traffic.tc.cluster_id

    def spans_of(api: str) -> list[Span]:
        return [s for s in receiver.spans()
                if s.name == api and attributes(s.attributes).get("tollgate.cluster") == cluster]

    for api in ("Produce", "Fetch"):
        wait_until(lambda: spans_of(api), SETTLE_TIMEOUT, f"a {api} span of cluster {cluster}")
    span = spans_of("Produce")[0]
    attrs = attributes(span.attributes)
    assert span.kind == Span.SpanKind.SPAN_KIND_SERVER
    assert attrs["messaging.system"] == "kafka"
    assert attrs["messaging.operation.name"] == "Produce"
    assert attrs["tollgate.outcome"] == "ok"
    assert span.status.code != Status.StatusCode.STATUS_CODE_ERROR
    assert len(span.trace_id) == 16 and len(span.span_id) == 8
    assert 0 < span.start_time_unix_nano <= span.end_time_unix_nano
    assert not receiver.errors, receiver.errors


def test_the_gateway_counts_its_exports(receiver, stack, traffic):
    wait_until(lambda: (scraped(stack, "tollgate_otlp_exports_total", signal="metrics", outcome="ok") or 0) > 0,
               SETTLE_TIMEOUT, "a delivered metrics export counted")
    wait_until(lambda: (scraped(stack, "tollgate_otlp_exports_total", signal="traces", outcome="ok") or 0) > 0,
               SETTLE_TIMEOUT, "a delivered traces export counted")
    assert scraped(stack, "tollgate_otlp_exports_total", signal="metrics", outcome="failed") == 0
    assert scraped(stack, "tollgate_otlp_spans_dropped_total") == 0


def test_a_stop_exports_the_last_counts(stack_factory):
    """With an hour between exports, only the one at the start and the one at the stop run:
    the traffic in between reaches the receiver through the stop's export alone."""
    last = Receiver()
    try:
        s = stack_factory(("--otlp-endpoint", last.url, "--otlp-interval-ms", str(3_600_000),
                           "--otlp-trace-ratio", "0"))
        tc = make_tenant(s, Admin(s.admin_url, s.admin_token))
        traffic = produce_and_consume(tc, 5)
        series = {"cluster": tc.cluster_id, "topic": traffic.topic}
        assert exported(last, "tollgate_topic_bytes_in_total", **series) is None, \
            "an export ran between the start and the stop"
        code, left = s.stop()
        assert code in (0, 143) and not left, (code, left)
        assert exported(last, "tollgate_topic_bytes_in_total", **series) == traffic.bytes_in
        assert exported(last, "tollgate_topic_messages_in_total", **series) == 5
        assert not last.traces, "spans exported with a ratio of 0"
        assert not last.errors, last.errors
    finally:
        last.stop()
