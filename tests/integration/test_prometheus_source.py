"""PrometheusMetricSource against a real Prometheus holding backfilled per-pod series, and against stub servers
for the failures a real Prometheus does not produce on demand (timeouts, garbage, 503s, token rotation)."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from predictor.config import MetricSpec, PrometheusConfig, TLSConfig, default_metric_pack
from predictor.domain import DeploymentRef, Observation, RolloutState, Scope
from predictor.sources.prometheus import PrometheusMetricSource, QueryError
from tests.fixtures.prometheus import LivePrometheus, PrometheusServer, free_port, history_start, key

pytestmark = pytest.mark.prometheus

NS = "promsrc"
DEPLOYMENT = "web-api"
NEW, OLD = "n3wh4sh", "0ldh4sh"
POD_NEW_A, POD_NEW_B = f"{DEPLOYMENT}-{NEW}-aaaaa", f"{DEPLOYMENT}-{NEW}-bbbbb"
POD_OLD_C, POD_OLD_D = f"{DEPLOYMENT}-{OLD}-ccccc", f"{DEPLOYMENT}-{OLD}-ddddd"
POD_UNTRACKED = f"{DEPLOYMENT}-0th3r-eeeee"
POD_PREFIX_TRAP = f"web-{NEW}-fffff"  # Deployment 'web', same hash: not ours
B = history_start()
STEP = 15
END = B + 1800
T = B + 1200
"""The evaluation time of the tests; after it some series change, which a query at T must not see."""
LES = ("0.1", "0.25", "0.5", "1", "+Inf")

# Per-second rates before T, and after T where they change.
REQUESTS_200 = {POD_NEW_A: 9.0, POD_NEW_B: 10.0, POD_OLD_C: 20.0, POD_OLD_D: 19.8, POD_UNTRACKED: 50.0,
                POD_PREFIX_TRAP: 50.0}
REQUESTS_500 = {POD_NEW_A: (1.0, 10.0), POD_OLD_C: (0.2, 0.2), POD_OLD_D: (0.0, 0.0), POD_UNTRACKED: (50.0, 50.0),
                POD_PREFIX_TRAP: (50.0, 50.0)}
BUCKETS = {  # cumulative bucket rates per le
    POD_NEW_A: (5, 8, 9, 9.9, 10),
    POD_NEW_B: (4, 8, 9.5, 10, 10),
    POD_OLD_C: (18, 19.5, 19.9, 20, 20),
    POD_OLD_D: (18, 19.6, 19.9, 20, 20),
    POD_UNTRACKED: (0, 0, 0, 0, 100),
}
MEMORY = {POD_NEW_A: (800.0, 800.0), POD_NEW_B: (600.0, 990.0), POD_OLD_C: (500.0, 500.0), POD_OLD_D: (700.0, 700.0)}
CPU = {POD_NEW_A: 0.25, POD_NEW_B: 0.1, POD_OLD_C: 0.2, POD_OLD_D: 0.3}
RESTARTS_PER_SECOND = {POD_NEW_A: 1 / 60, POD_NEW_B: 0.0, POD_OLD_C: 0.0, POD_OLD_D: 0.0}


def times() -> range:
    return range(B, END + 1, STEP)


def counter(rate_before: float, rate_after: float | None = None, start: float = 1000.0) -> list[tuple[float, float]]:
    after = rate_before if rate_after is None else rate_after
    return [(t, start + rate_before * (min(t, T) - B) + after * max(0, t - T)) for t in times()]


def gauge(before: float, after: float | None = None) -> list[tuple[float, float]]:
    return [(t, before if t <= T or after is None else after) for t in times()]


def build_history() -> dict[str, list[tuple[float, float]]]:
    series: dict[str, list[tuple[float, float]]] = {}
    for pod, rate in REQUESTS_200.items():
        series[key("http_requests_total", namespace=NS, pod=pod, code="200")] = counter(rate)
    for pod, (before, after) in REQUESTS_500.items():
        series[key("http_requests_total", namespace=NS, pod=pod, code="500")] = counter(before, after)
    for pod, rates in BUCKETS.items():
        for le, rate in zip(LES, rates, strict=True):
            series[key("http_request_duration_seconds_bucket", namespace=NS, pod=pod, le=le)] = counter(rate)
    for pod, (before, after) in MEMORY.items():
        series[key("container_memory_working_set_bytes", namespace=NS, pod=pod, container="app")] = gauge(before, after)
        series[key("container_memory_working_set_bytes", namespace=NS, pod=pod, container="")] = gauge(1e12)
        series[key("kube_pod_container_resource_limits", namespace=NS, pod=pod, container="app",
                   resource="memory", unit="byte")] = gauge(1000.0)
        series[key("container_cpu_usage_seconds_total", namespace=NS, pod=pod, container="app")] = counter(CPU[pod])
        series[key("kube_pod_container_resource_limits", namespace=NS, pod=pod, container="app",
                   resource="cpu", unit="core")] = gauge(0.5)
        series[key("kube_pod_container_status_restarts_total", namespace=NS, pod=pod, container="app")] = counter(
            RESTARTS_PER_SECOND[pod], start=0.0
        )
    # A sidecar at 90% of its limit: the pod's ratio is its worst container's.
    series[key("container_memory_working_set_bytes", namespace=NS, pod=POD_NEW_A, container="proxy")] = gauge(90.0)
    series[key("kube_pod_container_resource_limits", namespace=NS, pod=POD_NEW_A, container="proxy",
               resource="memory", unit="byte")] = gauge(100.0)
    # NaN per pod, and a Deployment whose name holds a regex metacharacter.
    series[key("nan_gauge", namespace=NS, pod=POD_NEW_A)] = gauge(math.nan)
    series[key("nan_gauge", namespace=NS, pod=POD_NEW_B)] = gauge(math.inf)
    series[key("nan_gauge", namespace=NS, pod=POD_OLD_C)] = gauge(3.0)
    series[key("plain_gauge", namespace=NS, pod="api.v2-h4sh-xxxxx")] = gauge(7.0)
    series[key("plain_gauge", namespace=NS, pod="apiXv2-h4sh-yyyyy")] = gauge(100.0)
    return series


def state(name: str = DEPLOYMENT, new: str = NEW, old: tuple[str, ...] = (OLD,)) -> RolloutState:
    return RolloutState(
        ref=DeploymentRef(NS, name), revision=2, new_hash=new, old_hashes=old, desired_replicas=4, updated_replicas=2,
        ready_new_replicas=2, old_replicas=2, started_at=B,
    )


def values(observations: list[Observation], ref: DeploymentRef | None = None) -> dict[Scope, float | None]:
    return {o.scope: o.value for o in observations if ref is None or o.ref == ref}


@pytest.fixture(scope="module")
def prom(start_prometheus: Callable[..., PrometheusServer]) -> Iterator[PrometheusServer]:
    server = start_prometheus(build_history())
    yield server
    server.stop()


@pytest.fixture(scope="module")
def source(prom: PrometheusServer) -> PrometheusMetricSource:
    return PrometheusMetricSource(PrometheusConfig(url=prom.url, tls=TLSConfig(timeout_seconds=2.5)))


@pytest.fixture(scope="module")
def pack() -> dict[str, MetricSpec]:
    return {spec.name: spec for spec in default_metric_pack()}


# --- the default pack, hand-computed ---------------------------------------------------------------------------


def test_error_ratio_per_scope(source: PrometheusMetricSource, pack: dict[str, MetricSpec]) -> None:
    observations = source.fetch(pack["error_ratio"], [state()], T)
    assert [o.scope for o in observations] == [Scope.DEPLOYMENT, Scope.NEW, Scope.OLD]
    # new: 5xx 1 + 0 (no 5xx series for pod b) over (9 + 1) + 10; old: 0.2 + 0 over (20 + 0.2) + (19.8 + 0).
    assert values(observations) == {
        Scope.DEPLOYMENT: pytest.approx(1.2 / 60), Scope.NEW: pytest.approx(1 / 20), Scope.OLD: pytest.approx(0.2 / 40),
    }
    assert [o.pods for o in observations] == [4, 2, 2]
    assert all(o.error is None and o.time == T and o.metric == "error_ratio" for o in observations)


def test_latency_p99_per_scope_matches_hand_computation_and_promql(
    source: PrometheusMetricSource, pack: dict[str, MetricSpec], prom: PrometheusServer
) -> None:
    observations = source.fetch(pack["latency_p99"], [state()], T)
    # new: summed buckets 9, 16, 18.5, 19.9, 20; rank 19.8 lies in (0.5, 1]: 0.5 + 0.5 * (19.8 - 18.5) / 1.4.
    # old: 36, 39.1, 39.8, 40, 40; rank 39.6 in (0.25, 0.5]: 0.25 + 0.25 * 0.5 / 0.7.
    # all: 45, 55.1, 58.3, 59.9, 60; rank 59.4 in (0.5, 1]: 0.5 + 0.5 * 1.1 / 1.6.
    expected = {
        Scope.DEPLOYMENT: 0.5 + 0.5 * 1.1 / 1.6, Scope.NEW: 0.5 + 0.5 * 1.3 / 1.4, Scope.OLD: 0.25 + 0.25 * 0.5 / 0.7,
    }
    assert values(observations) == {scope: pytest.approx(v, rel=1e-9) for scope, v in expected.items()}
    for scope, regex in ((Scope.NEW, f"{DEPLOYMENT}-{NEW}-.*"), (Scope.OLD, f"{DEPLOYMENT}-{OLD}-.*")):
        promql = (
            "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket"
            f'{{namespace="{NS}", pod=~"{regex}"}}[1m])))'
        )
        [server_side] = prom.query(promql, T)
        assert float(server_side["value"][1]) == pytest.approx(expected[scope], rel=1e-9)


def test_memory_cpu_and_restarts_per_scope(source: PrometheusMetricSource, pack: dict[str, MetricSpec]) -> None:
    # memory: per pod the worst container (pod a: proxy 90/100 beats app 800/1000); the container="" cgroup
    # series (1e12 bytes) is excluded by the pack's matcher. cpu: rate / 0.5 cores. restarts: 1/min over 5m.
    expected = {
        "memory_limit_ratio": {Scope.DEPLOYMENT: 0.9, Scope.NEW: 0.9, Scope.OLD: 0.7},
        "cpu_limit_ratio": {Scope.DEPLOYMENT: 0.6, Scope.NEW: 0.5, Scope.OLD: 0.6},
        "restarts_5m": {Scope.DEPLOYMENT: 5.0, Scope.NEW: 5.0, Scope.OLD: 0.0},
    }
    for name, by_scope in expected.items():
        observations = source.fetch(pack[name], [state()], T)
        assert values(observations) == {s: pytest.approx(v, rel=1e-9, abs=1e-12) for s, v in by_scope.items()}, name
        assert [o.pods for o in observations] == [4, 2, 2], name


def test_a_query_at_t_does_not_see_samples_after_t(source: PrometheusMetricSource, pack: dict[str, MetricSpec]) -> None:
    at_t = values(source.fetch(pack["error_ratio"], [state()], T))
    later = values(source.fetch(pack["error_ratio"], [state()], T + 120))
    assert at_t[Scope.NEW] == pytest.approx(1 / 20)
    assert later[Scope.NEW] == pytest.approx(10 / 29)  # pod a's 5xx went from 1/s to 10/s just after T
    assert values(source.fetch(pack["memory_limit_ratio"], [state()], T))[Scope.NEW] == pytest.approx(0.9)
    assert values(source.fetch(pack["memory_limit_ratio"], [state()], T + STEP))[Scope.NEW] == pytest.approx(0.99)
    before_history = source.fetch(pack["memory_limit_ratio"], [state()], B - 600)
    assert all(o.value is None and "no" in (o.error or "") for o in before_history)


def test_one_http_query_per_metric_two_with_a_denominator(
    source: PrometheusMetricSource, pack: dict[str, MetricSpec], prom: PrometheusServer
) -> None:
    rollouts = [state(), state("api.v2", "h4sh", ()), state("absent", "zzz", ("yyy",))]
    for spec in pack.values():
        before = prom.http_requests("/api/v1/query")
        observations = source.fetch(spec, rollouts, T)
        assert prom.http_requests("/api/v1/query") - before == (2 if spec.denominator else 1), spec.name
        assert len(observations) == 9


def test_unknown_hashes_are_ignored_and_regex_metacharacters_are_escaped(source: PrometheusMetricSource) -> None:
    spec = MetricSpec(name="plain", query='max by (namespace, pod) (plain_gauge{namespace=~"{namespace}", '
                      'pod=~"{pods}"})', threshold=1.0)
    api = state("api.v2", "h4sh", ())
    observations = source.fetch(spec, [api], T)
    assert values(observations) == {Scope.DEPLOYMENT: 7.0, Scope.NEW: 7.0, Scope.OLD: None}  # not apiXv2's 100
    # A query that returns every pod of the namespace: the split keeps only the tracked hashes of 'web-api'.
    every_pod = MetricSpec(name="r", aggregate="sum", threshold=1.0,
                           query=f'sum by (namespace, pod) (rate(http_requests_total{{namespace="{NS}"}}[1m]))')
    untracked = values(source.fetch(every_pod, [state(new=NEW, old=())], T))
    assert untracked == {Scope.DEPLOYMENT: pytest.approx(20.0), Scope.NEW: pytest.approx(20.0), Scope.OLD: None}


# --- failures become unknown observations ----------------------------------------------------------------------


def nan_spec() -> MetricSpec:
    return MetricSpec(name="nan_metric", threshold=1.0,
                      query='max by (namespace, pod) (nan_gauge{namespace=~"{namespace}", pod=~"{pods}"})')


def test_nan_and_inf_series_give_unknown_new_scope(source: PrometheusMetricSource) -> None:
    observations = {o.scope: o for o in source.fetch(nan_spec(), [state()], T)}
    assert observations[Scope.NEW].value is None
    assert observations[Scope.NEW].error == "nan_metric: no finite value: ignored 2 NaN/Inf pod value(s)"
    assert observations[Scope.OLD].value == 3.0 and observations[Scope.OLD].pods == 1
    assert observations[Scope.DEPLOYMENT].value == 3.0


def test_broken_query_gives_unknown_observations(
    source: PrometheusMetricSource, caplog: pytest.LogCaptureFixture
) -> None:
    spec = MetricSpec(name="broken", query='sum by (namespace, pod) (rate(x{pod=~"{pods}"}[1m])', threshold=1.0)
    with caplog.at_level("DEBUG", logger="predictor.sources.prometheus"):
        observations = source.fetch(spec, [state(), state("other")], T)
    assert len(observations) == 6 and all(o.value is None for o in observations)
    assert observations[0].error is not None
    assert observations[0].error.startswith("broken: query failed: HTTP 400: bad_data: ")
    assert "parse error" in observations[0].error
    assert all(o.failed for o in observations), "a failed query, not an answer without data"
    # at DEBUG: the engine and the daemon say it once, not once per tick (tests/unit/test_outages.py)
    assert [r.getMessage()[:30] for r in caplog.records if "failed" in r.getMessage()] == [
        "metric broken: query failed: H"]


SEL = 'namespace="{namespace}", pod=~"{pods}"'
AGGREGATE_PACK = {
    "error_ratio": f'sum(rate(http_requests_total{{{SEL}, code=~"5.."}}[1m])) '
                   f"/ sum(rate(http_requests_total{{{SEL}}}[1m]))",
    "latency_p99": f"histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{{{SEL}}}[1m])))",
    "memory_limit_ratio": f'max(container_memory_working_set_bytes{{{SEL}, container!=""}} / on (namespace, pod, '
                          f'container) kube_pod_container_resource_limits{{{SEL}, resource="memory"}})',
}
"""The issue's three SLO queries, as users write them: one value for the pods in {pods}."""


def test_aggregate_queries_give_the_per_pod_forms_values_in_one_batched_query(
    source: PrometheusMetricSource, pack: dict[str, MetricSpec]
) -> None:
    rollouts = [state(), state("api.v2", "h4sh", ())]
    for name, query in AGGREGATE_PACK.items():
        aggregate = MetricSpec(name=name, query=query, threshold=pack[name].threshold)
        assert aggregate.form == "aggregate" and pack[name].form == "per-pod"
        sent = source.client.queries_sent
        got = source.fetch(aggregate, rollouts, T)
        assert source.client.queries_sent - sent == 1 == source.queries_per_tick(aggregate, rollouts), name
        expected = values(source.fetch(pack[name], [state()], T))
        assert values(got, rollouts[0].ref) == {s: pytest.approx(v, rel=1e-9) for s, v in expected.items()}, name
        assert [o.pods for o in got[:3]] == [4, 2, 2]
        # api.v2 has no old ReplicaSet (not queried) and no such series: unknown, saying why
        assert [o.value for o in got[3:]] == [None, None, None]
        assert "returned no series for this scope" in (got[3].error or "")
        assert "no old ReplicaSet" in (got[5].error or "")


def test_aggregate_batches_split_by_size_and_when_refused(prom: PrometheusServer, pack: dict[str, MetricSpec]) -> None:
    tiny = PrometheusMetricSource(PrometheusConfig(url=prom.url), max_batch_chars=400)
    spec = MetricSpec(name="latency_p99", query=AGGREGATE_PACK["latency_p99"], threshold=0.5)
    rollouts = [state(), state("other")]
    assert tiny.queries_per_tick(spec, rollouts) == 6  # each scope's query alone passes 400 characters
    sent = tiny.client.queries_sent
    got = tiny.fetch(spec, rollouts, T)
    assert tiny.client.queries_sent - sent == 6
    assert values(got, rollouts[0].ref) == values(PrometheusMetricSource(PrometheusConfig(url=prom.url)).fetch(
        pack["latency_p99"], [state()], T))


class SizeLimitingProxy:
    """A proxy in front of the real Prometheus that answers 413 to request bodies over `limit` bytes (as an ingress
    with a body size limit does) and forwards the rest."""

    def __init__(self, upstream: str, limit: int) -> None:
        self.refused = 0
        self.forwarded = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if len(body) > limit:
                    proxy.refused += 1
                    self.send_response(413)
                    self.end_headers()
                    self.wfile.write(b"request entity too large")
                    return
                proxy.forwarded += 1
                answer = requests.post(upstream + self.path, data=body, timeout=10,
                                       headers={"Content-Type": self.headers.get("Content-Type", "")})
                self.send_response(answer.status_code)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_refused_batch_is_halved_until_accepted(prom: PrometheusServer, pack: dict[str, MetricSpec]) -> None:
    spec = MetricSpec(name="latency_p99", query=AGGREGATE_PACK["latency_p99"], threshold=0.5)
    rollouts = [state(), state("other")]
    proxy = SizeLimitingProxy(prom.url, limit=1200)  # three scopes' queries, not six
    try:
        got = PrometheusMetricSource(PrometheusConfig(url=proxy.url)).fetch(spec, rollouts, T)
    finally:
        proxy.close()
    assert (proxy.refused, proxy.forwarded) == (1, 2)
    expected = values(PrometheusMetricSource(PrometheusConfig(url=prom.url)).fetch(pack["latency_p99"], [state()], T))
    assert values(got, rollouts[0].ref) == {s: pytest.approx(v, rel=1e-9) for s, v in expected.items()}


def test_dead_prometheus_port_gives_unknowns_and_offline(pack: dict[str, MetricSpec]) -> None:
    dead = PrometheusMetricSource(PrometheusConfig(url=f"http://127.0.0.1:{free_port()}",
                                                   tls=TLSConfig(timeout_seconds=2.0)))
    started = time.monotonic()
    observations = dead.fetch(pack["error_ratio"], [state()], T)
    assert time.monotonic() - started < 2.0
    assert [o.value for o in observations] == [None, None, None]
    assert all((o.error or "").startswith("error_ratio: query failed: cannot connect to http://127.0.0.1:")
               for o in observations)
    assert dead.is_online() is False
    with pytest.raises(QueryError, match="cannot connect"):
        dead.fetch_range("up", T - 60, T, 15)


def test_is_online_against_a_real_prometheus(source: PrometheusMetricSource) -> None:
    assert source.is_online() is True


def test_fetch_range_returns_series_and_splits_long_ranges(
    source: PrometheusMetricSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    query = f'plain_gauge{{namespace="{NS}", pod="api.v2-h4sh-xxxxx"}}'
    [(labels, ts, vs)] = source.fetch_range(query, T - 300, T, 15)
    assert labels["pod"] == "api.v2-h4sh-xxxxx"
    assert ts.tolist() == [float(t) for t in range(T - 300, T + 1, 15)] and np.all(vs == 7.0)
    monkeypatch.setattr("predictor.sources.prometheus.MAX_POINTS_PER_RANGE_QUERY", 4)  # 3 steps per request
    [(_, chunked_ts, chunked_vs)] = source.fetch_range(query, T - 300, T, 15)
    assert chunked_ts.tolist() == ts.tolist() and chunked_vs.tolist() == vs.tolist()


# --- a live Prometheus scraping an exporter --------------------------------------------------------------------


def test_live_samples_scraped_from_an_exporter(live_prometheus: LivePrometheus) -> None:
    pod = "live-app-l1v3-aaaaa"
    live_prometheus.exporter.set(key("live_queue_depth", namespace="livens", pod=pod), 42.0)
    live_prometheus.wait_for('live_queue_depth{namespace="livens"}', lambda result: len(result) == 1)
    source = PrometheusMetricSource(PrometheusConfig(url=live_prometheus.url))
    spec = MetricSpec(name="queue", threshold=100.0,
                      query='max by (namespace, pod) (live_queue_depth{namespace=~"{namespace}", pod=~"{pods}"})')
    rollout = RolloutState(ref=DeploymentRef("livens", "live-app"), revision=1, new_hash="l1v3", old_hashes=(),
                           desired_replicas=1, updated_replicas=1, ready_new_replicas=1, old_replicas=0,
                           started_at=time.time() - 60)
    assert values(source.fetch(spec, [rollout], time.time()))[Scope.NEW] == 42.0


# --- stub servers: timeouts, garbage, HTTP errors, token rotation ----------------------------------------------


class Stub:
    """A real HTTP server answering every request with `reply()`, recording method, path and Authorization."""

    def __init__(self) -> None:
        self.reply: Callable[[], tuple[int, bytes, float]] = lambda: (200, b"", 0.0)
        self.seen: list[tuple[str, str, str | None]] = []
        self.bodies: list[bytes] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                owner.bodies.append(self.rfile.read(length) if length else b"")
                owner.seen.append((self.command, self.path, self.headers.get("Authorization")))
                status, body, delay = owner.reply()
                time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = _handle

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def stub() -> Iterator[Stub]:
    server = Stub()
    yield server
    server.close()


def vector(*items: tuple[dict[str, str], str]) -> bytes:
    result = [{"metric": m, "value": [T, v]} for m, v in items]
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()


@pytest.mark.parametrize(
    ("status", "body", "delay", "error"),
    [
        (200, b"<html>not json</html>", 0.0, "malformed response"),
        (200, b'{"status": "success"}', 0.0, "malformed response"),
        (200, b'{"status":"success","data":{"resultType":"scalar","result":[1, "1"]}}', 0.0,
         "expected an instant vector"),
        (200, b'{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"x"]}]}}', 0.0,
         "bad sample value"),
        (503, b"<html>Service Unavailable</html>", 0.0, "HTTP 503: b'<html>Service Unavailable</html>'"),
        (422, b'{"status":"error","errorType":"execution","error":"many-to-many matching not allowed"}', 0.0,
         "HTTP 422: execution: many-to-many matching not allowed"),
        (200, vector(({"namespace": NS, "pod": POD_NEW_A}, "1")), 1.0, "timed out after 0.3s"),
    ],
    ids=["not-json", "no-data", "scalar", "bad-value", "503-html", "422-prometheus-error", "timeout"],
)
def test_failures_become_unknown_observations(
    stub: Stub, status: int, body: bytes, delay: float, error: str, pack: dict[str, MetricSpec]
) -> None:
    stub.reply = lambda: (status, body, delay)
    source = PrometheusMetricSource(PrometheusConfig(url=stub.url, tls=TLSConfig(timeout_seconds=0.3)))
    observations = source.fetch(pack["memory_limit_ratio"], [state()], T)
    assert [o.value for o in observations] == [None, None, None]
    assert all(o.error is not None and o.error.startswith("memory_limit_ratio: query failed: ") for o in observations)
    assert error in (observations[0].error or "")
    assert len(stub.seen) == 1  # a query that reached the server is never retried


def test_denominator_failure_names_the_denominator(stub: Stub, pack: dict[str, MetricSpec]) -> None:
    replies = iter([(200, vector(({"namespace": NS, "pod": POD_NEW_A}, "1")), 0.0), (500, b"boom", 0.0)])
    stub.reply = lambda: next(replies)
    source = PrometheusMetricSource(PrometheusConfig(url=stub.url))
    observations = source.fetch(pack["error_ratio"], [state()], T)
    assert all((o.error or "").startswith("error_ratio: denominator failed: HTTP 500") for o in observations)


def test_posts_at_the_given_time_and_rereads_a_rotated_token(
    stub: Stub, tmp_path: Path, pack: dict[str, MetricSpec]
) -> None:
    token = tmp_path / "token"
    token.write_text("first\n", encoding="utf-8")
    stub.reply = lambda: (200, vector(({"namespace": NS, "pod": POD_NEW_A}, "0.5")), 0.0)
    source = PrometheusMetricSource(PrometheusConfig(url=stub.url, tls=TLSConfig(bearer_token_file=token)))
    assert values(source.fetch(pack["memory_limit_ratio"], [state()], T))[Scope.NEW] == 0.5
    token.write_text("second-and-longer\n", encoding="utf-8")
    source.fetch(pack["memory_limit_ratio"], [state()], T + 15)
    assert source.is_online() is True
    assert [(method, auth) for method, _, auth in stub.seen] == [
        ("POST", "Bearer first"), ("POST", "Bearer second-and-longer"), ("GET", "Bearer second-and-longer")
    ]
    # The parameters travel in the form body, not the URL (long pod regexes would break URL limits).
    assert stub.seen[0][1] == "/api/v1/query" and b"query=" in stub.bodies[0]
    assert f"time={T}.000".encode() in stub.bodies[0] and f"time={T + 15}.000".encode() in stub.bodies[1]
    token.unlink()
    observations = source.fetch(pack["memory_limit_ratio"], [state()], T)
    assert all("cannot read bearer token file" in (o.error or "") for o in observations)


def test_no_rollouts_no_query(stub: Stub, pack: dict[str, MetricSpec]) -> None:
    source = PrometheusMetricSource(PrometheusConfig(url=stub.url))
    assert source.fetch(pack["error_ratio"], [], T) == []
    assert stub.seen == []
