"""The widened generator of the decisions benchmark (issue 15, point 1): every family appears, each drawn setting
covers its range, the rolling update keeps Kubernetes' bounds, and the series are valid counters and gauges."""

from __future__ import annotations

import itertools
import math
import re
from collections import defaultdict

import pytest

from benchmarks.split import BAD_FAMILIES, FAMILIES, HEALTHY_FAMILIES, SPLITS, scenario_seed
from predictor.domain import DeploymentRef
from predictor.scenarios import (
    BAD_KINDS,
    HEALTHY_KINDS,
    NOISE_SHAPES,
    RATE_WINDOWS,
    ScenarioRollout,
    SeriesMap,
    random_scenario,
    resolve_strategy,
    scenario_series,
)

REF = DeploymentRef("shop", "web")
START = 1_700_000_000.0
_KEY = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\{(?P<labels>.*)\}$')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse(key: str) -> tuple[str, dict[str, str]]:
    match = _KEY.match(key)
    assert match is not None, key
    return match["name"], dict(_LABEL.findall(match["labels"]))


@pytest.fixture(scope="module")
def drawn() -> dict[str, list[ScenarioRollout]]:
    return {family: [random_scenario(family, REF, START, seed=seed) for seed in range(40)] for family in FAMILIES}


def test_the_frozen_splits_hold_every_family_of_the_generator() -> None:
    assert set(BAD_FAMILIES) == set(BAD_KINDS) and set(HEALTHY_FAMILIES) == set(HEALTHY_KINDS)
    assert SPLITS["dev"].seed != SPLITS["test"].seed
    dev = {scenario_seed(SPLITS["dev"].seed, f, i) for f in FAMILIES for i in range(SPLITS["dev"].count)}
    test = {scenario_seed(SPLITS["test"].seed, f, i) for f in FAMILIES for i in range(SPLITS["test"].count)}
    assert not dev & test and len(test) == len(FAMILIES) * SPLITS["test"].count
    # frozen: a seed depends on (split seed, family, index) alone, and does not move when the code does
    assert scenario_seed(15_907, "memory_leak", 0) == scenario_seed(15_907, "memory_leak", 0)
    assert scenario_seed(15_907, "memory_leak", 0) != scenario_seed(15_907, "memory_leak", 1)


def test_every_setting_covers_its_range(drawn: dict[str, list[ScenarioRollout]]) -> None:
    rollouts = [r for group in drawn.values() for r in group]
    replicas = [r.replicas for r in rollouts]
    assert min(replicas) == 2 and 40 <= max(replicas) <= 50
    assert {r.scrape_seconds for r in rollouts} == {10.0, 15.0, 20.0, 30.0, 60.0}
    assert {r.rate_window for r in rollouts} == set(RATE_WINDOWS)
    assert all(float(r.rate_window[:-1]) * 60 >= 2 * r.scrape_seconds for r in rollouts)
    readiness = [r.readiness_seconds for r in rollouts]
    assert 5.0 <= min(readiness) < 8.0 and 150.0 < max(readiness) <= 180.0
    rps = [r.requests_per_second for r in rollouts]
    assert 0.2 <= min(rps) < 0.5 and 1000.0 < max(rps) <= 2000.0
    assert {r.noise_shape for r in rollouts} == set(NOISE_SHAPES)
    assert {None if r.season is None else r.season.shape for r in rollouts} == {None, "daily", "steps"}
    assert all(r.count_noise for r in rollouts)  # counts drawn at random by default
    assert any(r.wave_pods == 1 for r in rollouts)  # one pod at a time ...
    assert any(r.max_surge == r.replicas and r.replicas > 2 for r in rollouts)  # ... to 100 % surge
    assert any(r.max_unavailable == r.replicas and r.replicas > 2 for r in rollouts)  # ... and 100 % unavailable
    assert all(r.label == family for family, group in drawn.items() for r in group)


def test_the_bad_families_have_their_shapes(drawn: dict[str, list[ScenarioRollout]]) -> None:
    for leak in drawn["late_leak"]:
        assert leak.kind == "memory_leak" and leak.completed_at(START + 3600) is not None
        assert leak.completed_at(START + 3600) - START <= 60.0  # a quick rollout
        breach = leak.breach_time("memory_limit_ratio", 0.9, START + 3600, step=15.0)
        assert breach is not None and 18 * 60 <= breach - START <= 41 * 60
    for mild in drawn["mild_regression"]:
        assert mild.kind in ("error_regression", "latency_regression")
        threshold = {"error_regression": 0.05, "latency_regression": 0.5}[mild.kind]
        base = mild.baseline.error_ratio if mild.kind == "error_regression" else mild.baseline.latency_p99
        assert mild.magnitude is not None and base < mild.magnitude < 0.9 * threshold
    assert all(c.stalls and 5 <= (c.crash_run_seconds or 0) <= 60 for c in drawn["crash_loop"])


@pytest.mark.parametrize(("surge", "unavailable", "replicas", "pods"), [
    ("25%", "25%", 10, (3, 2)), ("0", "0", 4, (0, 1)), ("100%", "0", 7, (7, 0)), ("1", "100%", 3, (1, 3)),
    ("50%", "25%", 3, (2, 0)),
])
def test_the_strategy_resolves_as_kubernetes_does(surge: str, unavailable: str, replicas: int,
                                                  pods: tuple[int, int]) -> None:
    assert resolve_strategy(surge, unavailable, replicas) == pods


def test_a_rolling_update_keeps_its_surge_and_availability_bounds(drawn: dict[str, list[ScenarioRollout]]) -> None:
    for rollout in (r for family in ("error_regression", "healthy_warmup", "late_leak") for r in drawn[family]):
        surge, unavailable = rollout.max_surge or 0, rollout.max_unavailable or 0
        done = rollout.completed_at(START + 10 * 3600)
        assert done is not None
        for t in (START + k * 5.0 for k in range(int((done - START) / 5.0) + 2)):
            new, old = rollout.new_pods(t), rollout.old_pods(t)
            ready = sum(rollout.ready(True, i, t) for i in range(new))
            assert new + old <= rollout.replicas + surge, (rollout, t)
            assert ready + old >= rollout.replicas - unavailable, (rollout, t)
        assert (rollout.new_pods(done), rollout.old_pods(done)) == (rollout.replicas, 0)


def _check_series(rollout: ScenarioRollout, series: SeriesMap) -> None:
    counters = ("http_requests_total", "http_request_duration_seconds_bucket", "container_cpu_usage_seconds_total",
                "kube_pod_container_status_restarts_total")
    restarts_at: dict[str, set[float]] = defaultdict(set)
    for key, points in series.items():
        name, labels = parse(key)
        if name == "kube_pod_container_status_restarts_total":
            restarts_at[labels["pod"]] |= {t for (_, a), (t, b) in itertools.pairwise(points) if b > a}
    ready: dict[str, dict[float, float]] = defaultdict(dict)
    for key, points in series.items():
        name, labels = parse(key)
        times = [t for t, _ in points]
        assert times == sorted(set(times)), key
        assert all(math.isfinite(v) and v >= 0 for _, v in points), key
        if name in counters:
            for (_, a), (t, b) in itertools.pairwise(points):
                assert b >= a or t in restarts_at[labels["pod"]] or any(
                    t - rollout.scrape_seconds * 2 <= r.at <= t for r in rollout.resets), (key, t)
        if name == "kube_pod_status_ready":
            assert {v for _, v in points} <= {0.0, 1.0}
            if labels["condition"] != "unknown":
                for t, v in points:
                    ready[labels["pod"]][t] = ready[labels["pod"]].get(t, 0.0) + v
        if name == "kube_pod_container_status_waiting_reason":
            assert labels["reason"] == "CrashLoopBackOff" and rollout.stalls and set(dict(points).values()) == {1.0}
        if name == "kube_pod_labels":
            assert labels["label_pod_template_hash"] in (rollout.old_hash, rollout.new_hash)
    assert ready and all(set(v.values()) == {1.0} for v in ready.values())  # exactly one of true/false


@pytest.mark.parametrize("family", ["crash_loop", "healthy_counter_resets", "healthy_seasonal", "slow_burn"])
def test_the_series_are_valid_counters_and_gauges(family: str) -> None:
    rollout = next(r for r in (random_scenario(family, REF, START, seed=s) for s in range(100)) if r.replicas <= 6)
    series = scenario_series([rollout], START - 300, START + 900, rollout.scrape_seconds)
    _check_series(rollout, series)
    if family == "crash_loop":
        waiting = [k for k in series if k.startswith("kube_pod_container_status_waiting_reason")]
        assert waiting and all(rollout.new_hash in k for k in waiting)
        not_ready = [k for k in series if k.startswith("kube_pod_status_ready") and 'condition="false"' in k
                     and rollout.new_hash in k]
        assert not_ready and all(set(dict(series[k]).values()) == {1.0} for k in not_ready)
