"""`predictor backtest` with SLO queries as users write them (the aggregate form: one value for the pods in
{pods}) on a real Prometheus holding a simulated cluster's history: it acts before each breach exactly where the
same metrics in the per-pod form act, and leaves the healthy release alone as that form does.

Namespace `agg` holds an error regression, a latency regression, a memory leak and a healthy release, backfilled
from `predictor.scenarios.scenario_series`. The CLI runs in process, as a user would call it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from predictor.cli import main
from predictor.config import default_metric_pack, format_time, parse_time
from predictor.domain import DeploymentRef
from predictor.scenarios import scenario_series
from predictor.simulate import SimulatedRollout
from tests.fixtures.prometheus import PrometheusServer, history_start

pytestmark = pytest.mark.prometheus

B = history_start()
R = B + 600
END = B + 1800
STEP = 15
NAMESPACE = "agg"
ROLLOUTS = {
    "checkout": ("error_regression", "error_ratio"),
    "search": ("latency_regression", "latency_p99"),
    "cache": ("memory_leak", "memory_limit_ratio"),
    "catalog": ("healthy", None),
}
SEL = 'namespace="{namespace}",pod=~"{pods}"'
ISSUE_QUERIES = {
    "error_ratio": (f'sum(rate(http_requests_total{{{SEL},code=~"5.."}}[1m])) '
                    f"/ sum(rate(http_requests_total{{{SEL}}}[1m]))", 0.05),
    "latency_p99": (f"histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{{{SEL}}}[1m])))",
                    0.5),
    "memory_limit_ratio": (f'max(container_memory_working_set_bytes{{{SEL},container!=""}} / on(namespace,pod,'
                           f'container) kube_pod_container_resource_limits{{{SEL},resource="memory"}})', 0.9),
}
"""The issue's three queries, word for word but for the metric names."""


@pytest.fixture(scope="module")
def prom(start_prometheus: Callable[..., PrometheusServer]) -> Iterator[PrometheusServer]:
    rollouts = [SimulatedRollout(DeploymentRef(NAMESPACE, name), kind, float(R + 20 * i), seed=40 + i)
                for i, (name, (kind, _)) in enumerate(ROLLOUTS.items())]
    server = start_prometheus(scenario_series(rollouts, float(B), float(END)))
    yield server
    server.stop()


def metrics(form: str) -> list[dict[str, object]]:
    if form == "aggregate":
        return [{"name": name, "query": query, "threshold": threshold}
                for name, (query, threshold) in ISSUE_QUERIES.items()]
    pack = {spec.name: spec for spec in default_metric_pack()}
    out: list[dict[str, object]] = []
    for name in ISSUE_QUERIES:
        spec = pack[name]
        item: dict[str, object] = {"name": name, "query": spec.query, "threshold": spec.threshold}
        if spec.denominator:
            item.update(denominator=spec.denominator, min_denominator=spec.min_denominator)
        if spec.quantile is not None:
            item["quantile"] = spec.quantile
        out.append(item)
    return out


def backtest(tmp_path: Path, prom: PrometheusServer, form: str, capsys: pytest.CaptureFixture[str]) -> list[dict]:
    config = tmp_path / f"{form}.yaml"
    config.write_text(yaml.safe_dump({
        "prometheus": {"url": prom.url}, "targets": [{"namespace": NAMESPACE}], "policy": {"action": "undo"},
        "metrics": metrics(form),
    }), encoding="utf-8")
    output = tmp_path / f"{form}.jsonl"
    code = main(["backtest", "--config", str(config), "--start", format_time(float(B + 300)) or "",
                 "--end", str(float(END)), "--step", "15s", "--output", str(output)])
    assert code == 0
    # one INFO line per metric at start: its form and what it costs
    forms = [line for line in capsys.readouterr().err.splitlines() if "predictor.preflight: metric " in line]
    assert len(forms) == 3 and all(f"{form} form" in line for line in forms), forms
    return [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]


def breach(prom: PrometheusServer, deployment: str, metric: str) -> float | None:
    """The first step at which the Deployment's value (the aggregate query over all its pods) crossed."""
    query, threshold = ISSUE_QUERIES[metric]
    promql = (query.replace("{namespace}", NAMESPACE)
              .replace("{pods}", f"{deployment}-[a-z0-9]+-[a-z0-9]+"))
    for t in range(R, END + 1, STEP):
        result = prom.query(promql, t)
        if result and float(result[0]["value"][1]) >= threshold:
            return float(t)
    return None


def first_actions(records: list[dict]) -> dict[str, tuple[str, float]]:
    first: dict[str, tuple[str, float]] = {}
    for record in records:
        if record["action"] in ("pause", "undo"):
            first.setdefault(str(record["deployment"]), (str(record["metric"]), parse_time(record["time"], 0.0)))
    return first


def test_aggregate_queries_act_before_the_breach_where_the_per_pod_form_acts(
    tmp_path: Path, prom: PrometheusServer, restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    per_pod = first_actions(backtest(tmp_path, prom, "per-pod", capsys))
    aggregate = first_actions(backtest(tmp_path, prom, "aggregate", capsys))
    bad = {name for name, (_, metric) in ROLLOUTS.items() if metric}
    assert set(aggregate) == set(per_pod) == bad, (aggregate, per_pod)
    for name in bad:
        metric = ROLLOUTS[name][1]
        assert metric is not None
        crossed = breach(prom, name, metric)
        assert crossed is not None, f"{name} must breach {metric} in the data"
        for form, acted in (("per-pod", per_pod), ("aggregate", aggregate)):
            assert acted[name][0] == metric, (form, name, acted[name])
            assert R <= acted[name][1] < crossed, (form, name, format_time(acted[name][1]), format_time(crossed))
