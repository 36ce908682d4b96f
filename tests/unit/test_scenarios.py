"""The scenario generator: its series say what the simulator says, name things as Kubernetes does, and each
confounder of a healthy release has the shape it is meant to have."""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest

from predictor.domain import DeploymentRef, Scope
from predictor.scenarios import (
    BAD_KINDS,
    BUCKETS,
    HEALTHY_KINDS,
    REQUESTS_PER_SECOND,
    CachePlateau,
    CounterReset,
    NoisyPod,
    ScenarioRollout,
    ScrapeGap,
    SeriesMap,
    TrafficSurge,
    bucket_shares,
    le_label,
    pod_name,
    random_scenario,
    scenario_series,
    series_key,
)
from predictor.simulate import SCENARIO_KINDS, SimulatedRollout
from predictor.sources.split import bucket_quantile

T0 = 1_700_000_000.0
START = T0 + 300.0
"""Rollouts start 5 minutes into the data."""
END = START + 900.0
REF = DeploymentRef("shop", "web")
_KEY = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\{(?P<labels>.*)\}$')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def labels_of(key: str) -> tuple[str, dict[str, str]]:
    match = _KEY.match(key)
    assert match is not None, key
    return match["name"], dict(_LABEL.findall(match["labels"]))


def find(series: SeriesMap, name: str, **wanted: str) -> dict[str, list[tuple[float, float]]]:
    found = {}
    for key, points in series.items():
        metric, labels = labels_of(key)
        if metric == name and all(labels.get(k) == v for k, v in wanted.items()):
            found[key] = points
    return found


def one(series: SeriesMap, name: str, **wanted: str) -> dict[float, float]:
    found = find(series, name, **wanted)
    assert len(found) == 1, (name, wanted, list(found))
    return dict(next(iter(found.values())))


def pods_of(series: SeriesMap, replica_set: str) -> dict[str, dict[float, float]]:
    return {labels_of(k)[1]["pod"]: dict(v) for k, v in find(series, "kube_pod_owner", owner_name=replica_set).items()}


def window_mean(rollout: SimulatedRollout, metric: str, new: bool, index: int, t: float) -> float:
    """The mean of the four values whose scrape intervals make up the minute ending at `t`."""
    pod = index if new else 100 + index
    values = []
    for back in (45.0, 30.0, 15.0, 0.0):
        age = t - back - rollout.pod_started(index) if new else 3600.0
        values.append(rollout.pod_value(metric, new, age, t - back, pod))
    return float(np.mean(values))


@pytest.fixture(scope="module")
def regression() -> tuple[SimulatedRollout, SeriesMap]:
    rollout = SimulatedRollout(REF, "error_regression", START, replicas=4, seed=3)
    return rollout, scenario_series([rollout], T0, END)


# --- the simulator's values, read back from the series -----------------------------------------------------------


@pytest.mark.parametrize(
    ("new", "index", "times"), [(True, 0, (120.0, 240.0, 600.0)), (False, 0, (-60.0, 60.0, 165.0))]
)
def test_error_ratio_of_the_counters_is_the_pods_error_ratio(
    regression: tuple[SimulatedRollout, SeriesMap], new: bool, index: int, times: tuple[float, ...]
) -> None:
    rollout, series = regression
    name = pod_name(rollout, new, index)
    ok, errors = one(series, "http_requests_total", pod=name, code="200"), one(series, "http_requests_total",
                                                                               pod=name, code="500")
    for t in (START + offset for offset in times):
        total = ok[t] + errors[t] - ok[t - 60] - errors[t - 60]
        ratio = (errors[t] - errors[t - 60]) / total
        assert total == pytest.approx(20.0 * 60, abs=2)  # 20 requests a second, counted in whole requests
        assert ratio == pytest.approx(window_mean(rollout, "error_ratio", new, index, t), abs=0.002)
        assert all(float(v).is_integer() for v in (ok[t], errors[t]))


def test_the_histogram_gives_back_the_pods_p99_through_histogram_quantile() -> None:
    rollout = SimulatedRollout(REF, "latency_regression", START, replicas=4, seed=5)
    series = scenario_series([rollout], T0, END)
    for new, index, t in ((True, 0, START + 240.0), (False, 1, START + 60.0)):
        name = pod_name(rollout, new, index)
        buckets = [one(series, "http_request_duration_seconds_bucket", pod=name, le=le_label(b)) for b in BUCKETS]
        rates = [(b, (points[t] - points[t - 60]) / 60.0) for b, points in zip(BUCKETS, buckets, strict=True)]
        assert bucket_quantile(0.99, rates) == pytest.approx(
            window_mean(rollout, "latency_p99", new, index, t), rel=0.03)


def test_memory_cpu_and_restarts_against_the_limits() -> None:
    rollout = SimulatedRollout(REF, "crash_loop", START, replicas=2, seed=9)
    series = scenario_series([rollout], T0, END)
    name = pod_name(rollout, True, 0)
    memory = one(series, "container_memory_working_set_bytes", pod=name, container="app")
    memory_limit = one(series, "kube_pod_container_resource_limits", pod=name, resource="memory", unit="byte")
    cpu = one(series, "container_cpu_usage_seconds_total", pod=name, container="app")
    cpu_limit = one(series, "kube_pod_container_resource_limits", pod=name, resource="cpu", unit="core")
    restarts = one(series, "kube_pod_container_status_restarts_total", pod=name, container="app")
    assert find(series, "container_memory_working_set_bytes", pod=name, container="")  # the pod's cgroup too
    t = START + 420.0
    assert memory[t] / memory_limit[t] == pytest.approx(rollout.pod_value("memory_limit_ratio", True, 420.0, t, 0),
                                                        abs=1e-6)
    # The crash loop restarts the container every minute: the CPU counter starts again from zero each time.
    assert cpu[t] < cpu[t - 15]
    steady = START + 435.0
    assert (cpu[steady] - cpu[steady - 15]) / 15 / cpu_limit[steady] == pytest.approx(
        rollout.pod_value("cpu_limit_ratio", True, 435.0, steady, 0), abs=1e-6)
    assert restarts[t] - restarts[t - 300] == pytest.approx(rollout.pod_value("restarts_5m", True, 420.0, t, 0))


def test_with_its_defaults_a_scenario_rollout_is_the_simulator() -> None:
    for kind in SCENARIO_KINDS:
        plain = SimulatedRollout(REF, kind, START, seed=4)
        scenario = ScenarioRollout(REF, kind, START, seed=4)
        for metric in ("error_ratio", "latency_p99", "memory_limit_ratio", "cpu_limit_ratio", "restarts_5m"):
            for t in (START + 10.0, START + 200.0, START + 700.0):
                for scope in Scope:
                    assert scenario.scope_value(metric, scope, t) == plain.scope_value(metric, scope, t)
        assert scenario.breach_time("error_ratio", 0.05, END) == plain.breach_time("error_ratio", 0.05, END)


def test_count_noise_draws_the_counters_as_real_ones_grow() -> None:
    """Poisson requests, binomial errors, multinomial buckets: whole counts whose increments scatter as counts do
    around the expected values the noiseless counters follow, reproducibly."""
    noisy = ScenarioRollout(REF, "healthy", START, replicas=3, seed=8, requests_per_second=2.0, count_noise=True)
    plain = replace(noisy, count_noise=False)
    series = scenario_series([noisy], T0, END)
    assert series == scenario_series([noisy], T0, END)
    name = pod_name(noisy, False, 0)
    ok = one(series, "http_requests_total", pod=name, code="200")
    errors = one(series, "http_requests_total", pod=name, code="500")
    expected_ok = one(scenario_series([plain], T0, END), "http_requests_total", pod=name, code="200")
    times = sorted(ok)
    served = np.diff([ok[t] + errors[t] for t in times])
    assert all(float(v).is_integer() for v in (*ok.values(), *errors.values()))
    assert served.mean() == pytest.approx(2.0 * 15, rel=0.1)  # 2 requests a second, 15 s scrapes
    assert served.var() == pytest.approx(served.mean(), rel=0.35)  # Poisson: the variance is the mean
    assert ok[times[-1]] - ok[times[0]] == pytest.approx(expected_ok[times[-1]] - expected_ok[times[0]], rel=0.05)
    total_errors = errors[times[-1]] - errors[times[0]]
    assert 0 < total_errors < 0.05 * served.sum()
    buckets = [one(series, "http_request_duration_seconds_bucket", pod=name, le=le_label(b)) for b in BUCKETS]
    for t in times:
        counts = [b[t] for b in buckets]
        assert counts == sorted(counts) and counts[-1] == ok[t] + errors[t]


# --- Kubernetes' names and the life of pods ------------------------------------------------------------------------


def test_replica_sets_and_pods_are_named_and_owned_as_kubernetes_does(
    regression: tuple[SimulatedRollout, SeriesMap],
) -> None:
    rollout, series = regression
    owners = find(series, "kube_replicaset_owner")
    assert {labels_of(k)[1]["replicaset"] for k in owners} == {"web-5d8f7c6b9a", "web-7b9c4d2e1f"}
    for key in owners:
        assert labels_of(key)[1] == {**labels_of(key)[1], "owner_kind": "Deployment", "owner_name": "web",
                                     "owner_is_controller": "true", "namespace": "shop"}
    for replica_set in ("web-5d8f7c6b9a", "web-7b9c4d2e1f"):
        for pod in pods_of(series, replica_set):
            assert re.fullmatch(rf"{replica_set}-[a-z0-9]{{5}}", pod), pod
    assert len({labels_of(k)[1]["uid"] for k in find(series, "kube_pod_owner")}) == 8
    assert one(series, "kube_replicaset_created", replicaset="web-7b9c4d2e1f")[START] == START
    revisions = find(series, "kube_replicaset_annotations")
    assert {labels_of(k)[1]["annotation_deployment_kubernetes_io_revision"] for k in revisions} == {"1", "2"}
    assert not find(scenario_series([rollout], T0, START, revision_annotation=False), "kube_replicaset_annotations")


def test_pods_come_and_go_with_the_rollout(regression: tuple[SimulatedRollout, SeriesMap]) -> None:
    rollout, series = regression
    old, new = pods_of(series, "web-5d8f7c6b9a"), pods_of(series, "web-7b9c4d2e1f")
    for t in (T0, START - 15, START, START + 45, START + 60, START + 195, END):
        assert sum(1 for points in new.values() if t in points) == rollout.new_pods(t), t
        assert sum(1 for points in old.values() if t in points) == rollout.replicas - rollout.new_pods(t), t
    for i in range(rollout.replicas):
        born = min(new[pod_name(rollout, True, i)])
        assert born == rollout.pod_started(i)
        gone = max(old[pod_name(rollout, False, i)])  # old pods go from the highest index down
        assert gone == rollout.pod_started(rollout.replicas - 1 - i) - 15
    app = one(series, "http_requests_total", pod=pod_name(rollout, True, 1), code="200")
    assert min(app) == rollout.pod_started(1) + 15  # first scraped after it started
    spec = one(series, "kube_replicaset_spec_replicas", replicaset="web-7b9c4d2e1f")
    updated = one(series, "kube_deployment_status_replicas_updated", deployment="web")
    generation = one(series, "kube_deployment_metadata_generation", deployment="web")
    assert (spec[START], spec[START + 60], spec[END], updated[START - 15], updated[START + 60]) == (1, 2, 4, 4, 2)
    assert (generation[START - 15], generation[START]) == (1, 2)


def test_an_undone_rollout_brings_old_pods_back_under_new_names() -> None:
    rollout = SimulatedRollout(REF, "healthy", START, replicas=2, seed=1, undone_at=START + 90)
    series = scenario_series([rollout], T0, END)
    old = pods_of(series, "web-5d8f7c6b9a")
    assert len(old) == 4  # both old pods were replaced by the rollout; both come back, under new names
    assert all(max(points) == END for name, points in old.items() if min(points) > START)
    assert one(series, "kube_replicaset_spec_replicas", replicaset="web-7b9c4d2e1f")[END] == 0
    revisions = {labels_of(k)[1]["annotation_deployment_kubernetes_io_revision"]: dict(v)
                 for k, v in find(series, "kube_replicaset_annotations", replicaset="web-5d8f7c6b9a").items()}
    assert max(revisions["1"]) < START + 90 <= min(revisions["3"])


def test_several_deployments_and_bad_input() -> None:
    a = SimulatedRollout(REF, "healthy", START, replicas=1)
    b = SimulatedRollout(DeploymentRef("shop", "cart"), "healthy", START, replicas=1)
    series = scenario_series([a, b], T0, START)
    assert {labels_of(k)[1]["deployment"] for k in find(series, "kube_deployment_spec_replicas")} == {"web", "cart"}
    with pytest.raises(ValueError, match="once"):
        scenario_series([a, a], T0, END)
    with pytest.raises(ValueError, match="start <= end"):
        scenario_series([a], END, T0)
    with pytest.raises(ValueError, match="unknown scenario kind"):
        ScenarioRollout(REF, "meltdown", START)
    assert series_key("up", job='a"b\\c') == 'up{job="a\\"b\\\\c"}'


def test_bucket_shares_round_trip_and_average_within_a_bucket() -> None:
    for p99 in (0.025, 0.07, 0.18, 0.25, 0.43, 0.5, 0.72, 1.3, 4.0):
        shares = bucket_shares(p99)
        assert all(a <= b for a, b in itertools.pairwise(shares))
        assert bucket_quantile(0.99, list(zip(BUCKETS, shares, strict=True))) == pytest.approx(p99, rel=1e-9)
    mixed = [a + b for a, b in zip(bucket_shares(0.12), bucket_shares(0.22), strict=True)]
    assert bucket_quantile(0.99, list(zip(BUCKETS, mixed, strict=True))) == pytest.approx(0.17)
    with pytest.raises(ValueError, match="bounds"):
        bucket_shares(0.2, (0.1, 0.5))
    # Below 99 % of the first bound a histogram cannot tell: PromQL interpolates that bucket from zero.
    assert bucket_quantile(0.99, list(zip(BUCKETS, bucket_shares(0.01), strict=True))) == pytest.approx(0.02475)


# --- bad kinds of this module ---------------------------------------------------------------------------------------


def test_slow_burn_raises_the_new_pods_error_ratio_with_their_age() -> None:
    rollout = ScenarioRollout(REF, "slow_burn", START, replicas=2, magnitude=0.006, seed=2)
    young = rollout.pod_value("error_ratio", True, 60.0, START + 60, 0)
    old = rollout.pod_value("error_ratio", True, 600.0, START + 600, 0)
    assert old - young == pytest.approx(0.006 * 9, abs=0.003)
    assert rollout.pod_value("error_ratio", False, 3600.0, START + 600, 100) < 0.01
    breach = rollout.breach_time("error_ratio", 0.05, START + 3600)
    assert breach is not None and breach - START > 360  # a slowly developing breach


def test_a_kubelet_crash_loop_stalls_the_rollout_with_unready_pods() -> None:
    rollout = ScenarioRollout(REF, "crash_loop", START, replicas=8, crash_run_seconds=20.0, seed=2)
    series = scenario_series([rollout], T0, START + 900)
    assert rollout.new_pods(START + 900) == 2 and rollout.state(START + 900).ready_new_replicas == 0
    assert one(series, "kube_replicaset_status_ready_replicas", replicaset="web-7b9c4d2e1f")[START + 300] == 0
    stuck = one(series, "kube_deployment_status_condition", condition="Progressing", status="false")
    assert stuck[START + 600] == 0 and stuck[START + 900] == 1  # the progress deadline passed
    restarts = one(series, "kube_pod_container_status_restarts_total", pod=pod_name(rollout, True, 0))
    assert [restarts[START + s] for s in (15, 30, 75, 150, 300)] == [0, 1, 2, 3, 4]  # 30s, 70s, 130s, 230s
    requests = one(series, "http_requests_total", pod=pod_name(rollout, True, 0), code="200")
    assert set(requests.values()) == {0.0}  # an unready pod gets no traffic


# --- confounders ------------------------------------------------------------------------------------------------


def healthy(**changes: object) -> ScenarioRollout:
    return replace(ScenarioRollout(REF, "healthy", START, replicas=4, seed=8), **changes)  # type: ignore[arg-type]


def test_warm_up_of_new_pods_fades() -> None:
    rollout = healthy(warmup_seconds=120.0, warmup_latency=0.5, warmup_cpu=0.4, warmup_errors=0.04)
    for metric, extra in (("latency_p99", 0.5), ("cpu_limit_ratio", 0.4), ("error_ratio", 0.04)):
        start = rollout.pod_value(metric, True, 0.0, START, 0)
        settled = rollout.pod_value(metric, True, 150.0, START + 150, 0)
        assert start - settled == pytest.approx(extra, abs=0.1 * extra + 0.05 * settled)
        assert rollout.pod_value(metric, False, 3600.0, START, 100) < start


def test_cache_fills_up_to_a_plateau_below_the_threshold() -> None:
    rollout = healthy(cache=CachePlateau(plateau=0.8, tau_seconds=120.0))
    values = [rollout.pod_value("memory_limit_ratio", True, age, START + age, 0) for age in range(0, 1800, 15)]
    assert values[0] < 0.55 and values[8] > 0.65  # two minutes: most of the way up
    assert max(values) < 0.83 and np.mean(values[-20:]) == pytest.approx(0.8, abs=0.01)


def test_a_traffic_surge_is_felt_by_old_and_new_pods_alike() -> None:
    surge = TrafficSurge(at=START + 120, seconds=300, factor=3.0, latency_gain=1.0, error_gain=0.01)
    rollout = healthy(surge=surge, step_seconds=300.0)
    series = scenario_series([rollout], T0, END)
    peak, calm = START + 270, START + 600
    for new, index in ((True, 0), (False, 0)):
        counter = one(series, "http_requests_total", pod=pod_name(rollout, new, index), code="200")
        assert (counter[peak] - counter[peak - 60]) / (counter[calm] - counter[calm - 60]) == pytest.approx(3, rel=0.1)
        age = peak - START if new else 3600.0
        pod = index if new else 100
        assert rollout.pod_value("latency_p99", new, age, peak, pod) > 2 * rollout.baseline.latency_p99 * 0.85
        assert rollout.pod_value("cpu_limit_ratio", new, age, peak, pod) > 2.4 * 0.35 * 0.85
    assert rollout.load(START + 150) == pytest.approx(1 + 2 * 0.5)  # ramping up over a minute
    # the in-memory observations carry the error ratio's denominator, as the Prometheus source does
    peak_traffic, calm_traffic = (rollout.traffic("error_ratio", 4, t) for t in (peak, calm))
    assert peak_traffic == pytest.approx(3 * calm_traffic) and calm_traffic == pytest.approx(4 * REQUESTS_PER_SECOND)
    assert rollout.traffic("latency_p99", 4, peak) is None and rollout.traffic("error_ratio", 0, peak) is None


def test_one_noisy_old_pod() -> None:
    rollout = healthy(noisy=NoisyPod(index=2, probability=0.2))
    times = [START - 300 + 15 * k for k in range(200)]

    def errors(new: bool, pod: int) -> list[float]:
        return [rollout.pod_value("error_ratio", new, 3600.0, t, pod) for t in times]

    noisy, sibling = errors(False, 102), errors(False, 101)
    assert np.std(noisy) > 5 * np.std(sibling)
    assert 0.1 < np.mean([v > 0.02 for v in noisy]) < 0.3
    assert max(sibling) < 0.01 and max(errors(True, 2)) < 0.01  # the new pod in its slot is fine


def test_scrape_gaps_drop_samples_of_what_was_missed() -> None:
    gaps = (ScrapeGap(START + 60, START + 180, "app"), ScrapeGap(START + 300, START + 360, "all"),
            ScrapeGap(START + 400, START + 460, "kubelet", pod=(True, 0)))
    rollout = healthy(gaps=gaps, step_seconds=300.0)
    series = scenario_series([rollout], T0, END)
    app = one(series, "http_requests_total", pod=pod_name(rollout, False, 0), code="200")
    owner = one(series, "kube_pod_owner", pod=pod_name(rollout, False, 0))
    spec = one(series, "kube_deployment_spec_replicas")
    assert not [t for t in app if START + 60 <= t < START + 180] and START + 45 in app and START + 180 in app
    assert START + 120 in owner and START + 120 in spec  # kube-state-metrics was scraped
    assert START + 315 not in owner and START + 315 not in spec and START + 315 not in app
    memory0 = one(series, "container_memory_working_set_bytes", pod=pod_name(rollout, True, 0), container="app")
    memory1 = one(series, "container_memory_working_set_bytes", pod=pod_name(rollout, True, 1), container="app")
    assert START + 420 not in memory0 and START + 420 in memory1
    counter = one(series, "http_requests_total", pod=pod_name(rollout, True, 0), code="200")
    assert counter[START + 420] > counter[START + 390]  # requests were counted through the gap


def test_counter_resets_restart_the_counters_once() -> None:
    rollout = healthy(resets=(CounterReset(START + 120, False, 0),))
    series = scenario_series([rollout], T0, END)
    name = pod_name(rollout, False, 0)
    counter = one(series, "http_requests_total", pod=name, code="200")
    restarts = one(series, "kube_pod_container_status_restarts_total", pod=name)
    assert counter[START + 120] < counter[START + 105]
    assert all(counter[t] <= counter[t + 15] for t in counter if START + 120 <= t < max(counter))
    assert (restarts[START + 105], restarts[START + 120], restarts[max(restarts)]) == (0, 1, 1)
    assert rollout.pod_value("restarts_5m", False, 3600.0, START + 200, 100) == 1.0
    assert rollout.pod_value("restarts_5m", False, 3600.0, START + 500, 100) == 0.0


# --- random scenarios for the benchmark -------------------------------------------------------------------------


def test_random_scenarios_are_reproducible_and_varied() -> None:
    kinds: Sequence[str] = BAD_KINDS + HEALTHY_KINDS
    first = [random_scenario(k, REF, START, seed=1) for k in kinds]
    assert first == [random_scenario(k, REF, START, seed=1) for k in kinds]
    assert len({(r.replicas, r.step_seconds, r.baseline) for r in first}) > len(kinds) // 2
    others = [random_scenario("memory_leak", REF, START, seed=s) for s in range(20)]
    assert len({r.magnitude for r in others}) == 20
    assert all(re.fullmatch(r"[bcdfghjklmnpqrstvwxz2456789]{10}", r.new_hash) for r in others)
    labels = {r.label: r for r in first}
    assert labels["healthy_traffic_surge"].surge is not None and labels["healthy_noisy_old_pod"].noisy is not None
    assert labels["healthy_scrape_gaps"].gaps and labels["healthy_counter_resets"].resets
    assert labels["healthy_cache_plateau"].cache is not None and labels["crash_loop"].stalls
    with pytest.raises(ValueError, match="unknown benchmark kind"):
        random_scenario("healthy_meltdown", REF, START, seed=1)


def test_every_bad_kind_breaches_and_no_confounder_is_a_release_regression() -> None:
    thresholds = {"error_ratio": 0.05, "latency_p99": 0.5, "memory_limit_ratio": 0.9, "cpu_limit_ratio": 0.9,
                  "restarts_5m": 3.0}
    for seed in range(3):
        for kind in (k for k in BAD_KINDS if k != "mild_regression"):
            rollout = random_scenario(kind, REF, START, seed=seed)
            breaches = [rollout.breach_time(m, v, START + 3600, step=15.0) for m, v in thresholds.items()]
            assert any(b is not None for b in breaches), (kind, seed)
        for kind in ("healthy_warmup", "healthy_cache_plateau", "healthy_counter_resets"):
            rollout = random_scenario(kind, REF, START, seed=seed)
            late = START + 1800
            assert all((rollout.scope_value(m, Scope.DEPLOYMENT, late)[0] or 0) < v
                       for m, v in thresholds.items()), (kind, seed)
