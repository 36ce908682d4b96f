"""`predictor backtest` end to end on a real Prometheus holding a simulated cluster's history.

Namespace `shop` holds two Deployments, backfilled from `predictor.scenarios.scenario_series` (kube-state-metrics,
cAdvisor and app series scraped every 15 s for 30 minutes): `checkout` rolls out an error regression at R (its new
pods answer 11 % 5xx), `catalog` a healthy release at R + 60 s. The CLI runs in process, as a user would call it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from predictor.cli import main
from predictor.config import format_time, parse_time
from predictor.domain import DeploymentRef, Scope
from predictor.scenarios import scenario_series
from predictor.simulate import SimulatedRollout
from tests.fixtures.prometheus import PrometheusServer, history_start

pytestmark = pytest.mark.prometheus

B = history_start()
R = B + 600
"""The bad rollout starts 10 minutes into the data; the healthy one a minute later."""
END = B + 1800
STEP = 15
NAMESPACE = "shop"
FIELDS = {"time", "namespace", "deployment", "revision", "action", "risk", "metric", "predicted_breach", "reason"}
BAD = SimulatedRollout(DeploymentRef(NAMESPACE, "checkout"), "error_regression", float(R), seed=11)
HEALTHY = SimulatedRollout(DeploymentRef(NAMESPACE, "catalog"), "healthy", float(R + 60), seed=12)


@pytest.fixture(scope="module")
def prom(start_prometheus: Callable[..., PrometheusServer]) -> Iterator[PrometheusServer]:
    server = start_prometheus(scenario_series([BAD, HEALTHY], float(B), float(END)))
    yield server
    server.stop()


def write_config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "predictor.yaml"
    path.write_text(
        f"prometheus:\n  url: {url}\n"
        f"targets:\n  - namespace: {NAMESPACE}\n"
        "policy:\n  action: undo\n"
        "logging:\n  level: WARNING\n",
        encoding="utf-8",
    )
    return path


def run_backtest(
    tmp_path: Path, prom: PrometheusServer, start: float, end: float, name: str
) -> list[dict[str, object]]:
    output = tmp_path / f"{name}.jsonl"
    code = main(["backtest", "--config", str(write_config(tmp_path, prom.url)), "--start", format_time(start) or "",
                 "--end", str(end), "--step", "15s", "--output", str(output)])
    assert code == 0
    return [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]


def error_ratio_crossing(prom: PrometheusServer, deployment: str, threshold: float = 0.05) -> float | None:
    """The first 15 s step at which the Deployment-level error ratio (as the default pack computes it) crossed."""
    sel = f'namespace="{NAMESPACE}", pod=~"{deployment}-[a-z0-9]+-[a-z0-9]+"'
    query = (f'sum(rate(http_requests_total{{{sel}, code=~"5.."}}[1m])) / '
             f"sum(rate(http_requests_total{{{sel}}}[1m]))")
    for t in range(R, END + 1, STEP):
        result = prom.query(query, t)
        if result and float(result[0]["value"][1]) >= threshold:
            return float(t)
    return None


def test_backtest_acts_on_the_bad_release_before_its_breach(
    tmp_path: Path, prom: PrometheusServer, restore_logging: None
) -> None:
    records = run_backtest(tmp_path, prom, float(B + 300), float(END), "full")

    assert records, "no action at all"
    for record in records:
        assert set(record) == FIELDS, record
    bad = [r for r in records if r["deployment"] == "checkout"]
    # an undo, or (when the first ticks' risk is below undo_threshold) a pause escalated once to an undo
    assert [r["action"] for r in bad] in (["undo"], ["pause", "undo"]), bad
    for record in bad:
        assert (record["namespace"], record["revision"], record["metric"]) == (NAMESPACE, 2, "error_ratio")
        assert isinstance(record["risk"], float) and 0.7 <= record["risk"] <= 1.0
        reason = record["reason"]
        assert isinstance(reason, str) and reason.startswith(str(record["action"]))
        assert "error_ratio: new pods" in reason
        assert isinstance(record["predicted_breach"], str)
    first = bad[0]

    crossed = error_ratio_crossing(prom, "checkout")
    assert crossed is not None, "the error regression must breach 5 % in the data"
    acted = _seconds(first["time"])
    assert R <= acted < crossed, (format_time(acted), format_time(crossed))


def test_backtest_leaves_the_healthy_release_alone(
    tmp_path: Path, prom: PrometheusServer, restore_logging: None
) -> None:
    records = run_backtest(tmp_path, prom, float(B + 300), float(END), "full")
    assert [r for r in records if r["deployment"] == "catalog"] == []


def test_no_look_ahead_a_shorter_backtest_decides_the_same_up_to_its_end(
    tmp_path: Path, prom: PrometheusServer, restore_logging: None
) -> None:
    full = run_backtest(tmp_path, prom, float(B + 300), float(END), "full")
    cut = _seconds(full[0]["time"]) + 45
    short = run_backtest(tmp_path, prom, float(B + 300), cut, "short")
    assert short == [r for r in full if _seconds(r["time"]) <= cut]
    assert short, "the first action lies within the shorter run"


def test_the_default_pack_reads_the_simulated_values_back(prom: PrometheusServer) -> None:
    """The series behind the backtest say what the simulator says, through the default pack's own queries."""
    t = R + 240  # four new pods of eight
    sel = 'namespace="shop", pod=~"checkout-.+"'
    errors = prom.query(f'sum(rate(http_requests_total{{{sel}, code=~"5.."}}[1m])) / '
                        f"sum(rate(http_requests_total{{{sel}}}[1m]))", t)
    window = [BAD.scope_value("error_ratio", Scope.DEPLOYMENT, float(s))[0] or 0.0 for s in range(t - 45, t + 1, 15)]
    assert math.isclose(float(errors[0]["value"][1]), sum(window) / len(window), rel_tol=0.1, abs_tol=0.004)
    latency = prom.query(
        f"histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{{{sel}}}[1m])))", t)
    assert 0.1 < float(latency[0]["value"][1]) < 0.3  # every pod's p99 is near 0.18 s
    memory = prom.query(
        f'max(container_memory_working_set_bytes{{{sel}, container!=""}} / on (namespace, pod, container) '
        f'kube_pod_container_resource_limits{{{sel}, resource="memory"}})', t)
    assert 0.3 < float(memory[0]["value"][1]) < 0.7
    pods = prom.query('count(kube_pod_owner{namespace="shop", owner_name=~"checkout-.+"})', R - 60)
    assert float(pods[0]["value"][1]) == 8


def _seconds(value: object) -> float:
    assert isinstance(value, str)
    return parse_time(value, 0.0)


def test_the_report_writes_a_page_per_rollout_replayed_and_an_index(
    tmp_path: Path, prom: PrometheusServer, restore_logging: None
) -> None:
    """`--report DIR`: the status pages of every rollout replayed, the action marked, the index with its lead."""
    output, report = tmp_path / "actions.jsonl", tmp_path / "report"
    code = main(["backtest", "--config", str(write_config(tmp_path, prom.url)), "--start", str(B + 300),
                 "--end", str(END), "--step", "15s", "--output", str(output), "--report", str(report)])
    assert code == 0
    actions = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    pages = sorted(p.relative_to(report).as_posix() for p in report.rglob("*.html"))
    assert "index.html" in pages
    assert {"rollouts/shop/checkout-r2.html", "rollouts/shop/catalog-r2.html"} <= set(pages)
    checkout = (report / "rollouts/shop/checkout-r2.html").read_text(encoding="utf-8")
    assert f'class="action action-{actions[0]["action"]}"' in checkout
    assert checkout.count('<svg class="chart"') >= 4
    index = (report / "index.html").read_text(encoding="utf-8")
    assert 'href="rollouts/shop/checkout-r2.html"' in index and 'href="rollouts/shop/catalog-r2.html"' in index
    row = index[index.index('href="rollouts/shop/checkout-r2.html"'):].split("</tr>", 1)[0]
    assert error_ratio_crossing(prom, "checkout") is not None, "the history breaches"
    assert "error_ratio at" in row and "before" in row, "the lead before the breach the replay saw"
