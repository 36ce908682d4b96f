"""What a tick costs Prometheus in each query form (issue 10, point 1): queries per tick and Prometheus's own time.

A real Prometheus is backfilled (promtool) with the default pack's series for the largest number of Deployments
asked, each rolling out (2 new pods, 2 old pods). For each number of Deployments and each form, the Prometheus
source fetches every metric of the pack for that many rollouts, `--ticks` times, at the same evaluation time:

- per-pod: the default pack (`predictor.config.default_metric_pack`), one query per metric per tick (two with a
  denominator) for all Deployments;
- aggregate: the same pack as SLO queries are usually written (`aggregate_metric_pack`), rendered once per scope
  (Deployment, new pods, old pods) of each rollout and batched into queries of at most 32,768 characters.

Figures per tick: queries sent (counted by the client), Prometheus's engine time (the growth of its own
`prometheus_engine_query_duration_seconds_sum`, every slice: queue, prepare, evaluation, sort), the wall time of the
fetches, and the characters sent. The two forms' values are compared: they must agree scope by scope.

Usage (from the repository root; needs `prometheus` and `promtool` on PATH or /usr/bin):

    python benchmarks/query_cost.py [--deployments 10,100,400] [--ticks 5]
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from predictor.config import (  # noqa: E402
    MetricSpec,
    PrometheusConfig,
    TLSConfig,
    aggregate_metric_pack,
    default_metric_pack,
)
from predictor.domain import DeploymentRef, RolloutState  # noqa: E402
from predictor.scenarios import series_key  # noqa: E402
from predictor.sources.prometheus import PrometheusMetricSource, batches  # noqa: E402
from predictor.sources.split import (  # noqa: E402
    batch_query,
    needed_scopes,
    render_query,
    render_scope_query,
    scope_key,
)
from tests.fixtures.prometheus import PrometheusServer, backfill, free_port, history_start  # noqa: E402

STEP = 15
NAMESPACE = "cost"
NEW, OLD = "5d8f7c6b9a", "7b9c4d2e1f"
LES = ("0.1", "0.25", "0.5", "1", "+Inf")


def pods(index: int) -> list[tuple[str, bool]]:
    name = f"svc-{index:04d}"
    return [(f"{name}-{NEW}-n{k}xyz", True) for k in range(2)] + [(f"{name}-{OLD}-o{k}xyz", False) for k in range(2)]


def series(count: int, start: int, end: int) -> dict[str, list[tuple[float, float]]]:
    """The default pack's series for `count` Deployments, 4 pods each, every 15 s over [start, end]."""
    out: dict[str, list[tuple[float, float]]] = {}
    times = range(start, end + 1, STEP)
    for i in range(count):
        for pod, new in pods(i):
            labels = {"namespace": NAMESPACE, "pod": pod}
            rate, errors = 10.0 + i % 7, (0.5 if new and i % 3 == 0 else 0.02)
            out[series_key("http_requests_total", **labels, code="200")] = [(t, rate * (t - start)) for t in times]
            out[series_key("http_requests_total", **labels, code="500")] = [(t, errors * (t - start)) for t in times]
            for k, le in enumerate(LES):
                share = min(1.0, (k + 1) / 4) if new else min(1.0, (k + 2) / 4)
                out[series_key("http_request_duration_seconds_bucket", **labels, le=le)] = [
                    (t, share * rate * (t - start)) for t in times]
            container = {**labels, "container": "app"}
            out[series_key("container_memory_working_set_bytes", **container)] = [
                (t, 4e8 + (1e5 * (t - start) if new else 0.0)) for t in times]
            out[series_key("container_cpu_usage_seconds_total", **container)] = [(t, 0.2 * (t - start)) for t in times]
            for resource, value in (("memory", 1e9), ("cpu", 0.5)):
                out[series_key("kube_pod_container_resource_limits", **container, resource=resource)] = [
                    (t, value) for t in times]
            out[series_key("kube_pod_container_status_restarts_total", **container)] = [(t, 0.0) for t in times]
    return out


def rollouts(count: int, started: float) -> list[RolloutState]:
    return [RolloutState(ref=DeploymentRef(NAMESPACE, f"svc-{i:04d}"), revision=2, new_hash=NEW, old_hashes=(OLD,),
                         desired_replicas=4, updated_replicas=2, ready_new_replicas=2, old_replicas=2,
                         started_at=started) for i in range(count)]


def engine_seconds(url: str) -> float:
    """Prometheus's own query time so far, every slice."""
    text = requests.get(url + "/metrics", timeout=10).text
    return math.fsum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                     if line.startswith("prometheus_engine_query_duration_seconds_sum"))


def characters(spec: MetricSpec, states: Sequence[RolloutState], source: PrometheusMetricSource) -> int:
    """What the form sends per tick, in characters of PromQL (before form encoding)."""
    total = 0
    for template in (spec.query, spec.denominator):
        if template is None:
            continue
        if spec.form == "aggregate":
            parts = [(scope_key(r.ref, s), render_scope_query(template, r, s)) for r in states
                     for s in needed_scopes(r)]
            total += sum(len(batch_query(b)) for b in batches(parts, source.max_batch_chars))
        else:
            total += len(render_query(template, states))
    return total


def measure(url: str, pack: Sequence[MetricSpec], states: Sequence[RolloutState], at: float,
            ticks: int) -> tuple[dict[str, float], list[list[float | None]]]:
    source = PrometheusMetricSource(PrometheusConfig(url=url, tls=TLSConfig(timeout_seconds=120.0)))
    values: list[list[float | None]] = []
    sent, engine_before, wall = source.client.queries_sent, engine_seconds(url), 0.0
    for _ in range(ticks):
        clock = time.perf_counter()
        values = [[o.value for o in source.fetch(spec, states, at)] for spec in pack]
        wall += time.perf_counter() - clock
    engine = engine_seconds(url) - engine_before
    return {
        "queries": (source.client.queries_sent - sent) / ticks,
        "engine_s": engine / ticks,
        "wall_s": wall / ticks,
        "chars": float(sum(characters(spec, states, source) for spec in pack)),
    }, values


def agree(a: list[list[float | None]], b: list[list[float | None]]) -> tuple[int, int]:
    """(scopes whose values agree within 1e-9 relative, scopes compared)."""
    same = total = 0
    for row_a, row_b in zip(a, b, strict=True):
        for x, y in zip(row_a, row_b, strict=True):
            total += 1
            same += int((x is None and y is None) or (x is not None and y is not None and math.isclose(
                x, y, rel_tol=1e-9, abs_tol=1e-12)))
    return same, total


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deployments", default="10,100,400", help="numbers of rolling-out Deployments")
    parser.add_argument("--ticks", type=int, default=5, help="ticks measured per number and form (default 5)")
    args = parser.parse_args(argv)
    counts = sorted({int(n) for n in args.deployments.split(",")})
    prometheus = shutil.which("prometheus") or "/usr/bin/prometheus"
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    start = history_start()
    end = start + 1800
    at = float(end - 300)
    workdir = Path(tempfile.mkdtemp(prefix="query-cost-"))
    server: PrometheusServer | None = None
    try:
        clock = time.monotonic()
        backfill(promtool, series(max(counts), start, end), workdir / "data")
        print(f"backfilled {max(counts)} Deployments x 4 pods in {time.monotonic() - clock:.0f} s", file=sys.stderr)
        server = PrometheusServer(prometheus, workdir, workdir / "data", free_port(), None)
        server.wait_ready()
        packs = {"per-pod": default_metric_pack(), "aggregate": aggregate_metric_pack()}
        print("| Deployments rolling out | form | queries per tick | Prometheus time per tick | wall time per tick "
              "| PromQL characters per tick | scopes agreeing |")
        print("|---|---|---|---|---|---|---|")
        for count in counts:
            states = rollouts(count, float(start + 600))
            measured = {form: measure(server.url, pack, states, at, args.ticks) for form, pack in packs.items()}
            same, total = agree(measured["per-pod"][1], measured["aggregate"][1])
            for form, (figures, _) in measured.items():
                print(f"| {count} | {form} | {figures['queries']:.0f} | {figures['engine_s'] * 1000:.0f} ms | "
                      f"{figures['wall_s'] * 1000:.0f} ms | {figures['chars']:,.0f} | {same}/{total} |")
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
