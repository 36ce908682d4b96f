"""KubeStateMetricsRolloutSource against a real Prometheus holding backfilled kube-state-metrics series.

The scenario: Deployment `shop-web` runs v1 (ReplicaSet created a day before the data starts) with 4 replicas;
at R the v2 ReplicaSet is created and scaled up one pod a minute while v1 is scaled down one step behind; the
rollout completes at R + 240 s. Namespace `replay-b` holds the same history up to R + 100 s and a rollback
after it; `replay-c` exports the revision annotation and undoes a rollout.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping

import pytest

from predictor.config import PrometheusConfig, Target
from predictor.domain import DeploymentRef, RolloutState
from predictor.rollouts.replay import KubeStateMetricsRolloutSource, ReplayError, parse_selector
from tests.fixtures.prometheus import PrometheusServer, history_start, key

pytestmark = pytest.mark.prometheus

B = history_start()
STEP = 15
END = B + 3600
R = B + 600
"""The v2 ReplicaSet is created (the rollout starts)."""
DIVERGE = R + 100
NAME = "shop-web"
V1, V2 = "aaa111", "bbb222"
RS1, RS2 = f"{NAME}-{V1}", f"{NAME}-{V2}"
V1_CREATED = B - 86400

Schedule = Mapping[int, float]
SeriesMap = dict[str, list[tuple[float, float]]]


def steps(schedule: Schedule, start: int = B, end: int = END) -> list[tuple[float, float]]:
    """A gauge sampled every 15 s from `start` to `end` that takes each value of `schedule` from its time on."""
    points = []
    for t in range(start, end + 1, STEP):
        current = [v for at, v in sorted(schedule.items()) if at <= t]
        if current:
            points.append((float(t), current[-1]))
    return points


def cut(schedule: Schedule, until: int, later: Schedule) -> Schedule:
    """`schedule` up to `until`, then `later`'s changes (the value at `until` carries on until the first one)."""
    kept = {t: v for t, v in schedule.items() if t <= until}
    return {**kept, **later}


def rollout_history(ns: str, *, rollback_after: int | None = None) -> SeriesMap:
    new_spec: Schedule = {R: 1, R + 60: 2, R + 120: 3, R + 180: 4}
    old_spec: Schedule = {B: 4, R + 60: 3, R + 120: 2, R + 180: 1, R + 240: 0}
    new_ready: Schedule = {R: 0, R + 30: 1, R + 90: 2, R + 150: 3, R + 210: 4}
    updated: Schedule = {B: 4, R: 1, R + 60: 2, R + 120: 3, R + 180: 4}
    generation: Schedule = {B: 1, R: 2}
    observed: Schedule = {B: 1, R + 15: 2}
    if rollback_after is not None:  # later data only: v2 is abandoned, v1 scaled back up
        back = rollback_after + 20
        new_spec = cut(new_spec, rollback_after, {back: 0})
        old_spec = cut(old_spec, rollback_after, {back: 4})
        new_ready = cut(new_ready, rollback_after, {back: 0})
        updated = cut(updated, rollback_after, {back: 4})
        generation = cut(generation, rollback_after, {back: 3})
        observed = cut(observed, rollback_after, {back + 15: 3})
    dep = {"namespace": ns, "deployment": NAME}
    series: SeriesMap = {
        key("kube_deployment_spec_replicas", **dep): steps({B: 4}),
        key("kube_deployment_status_replicas_updated", **dep): steps(updated),
        key("kube_deployment_metadata_generation", **dep): steps(generation),
        key("kube_deployment_status_observed_generation", **dep): steps(observed),
        key("kube_deployment_spec_paused", **dep): steps({B: 0}),
        key("kube_deployment_status_condition", **dep, condition="Progressing", status="false"): steps({B: 0}),
        key("kube_deployment_labels", **dep, label_app="shop", label_app_kubernetes_io_part_of="store"): steps({B: 1}),
    }
    for rs, spec, ready, created, start in (
        (RS1, old_spec, old_spec, V1_CREATED, B),
        (RS2, new_spec, new_ready, R, R),
    ):
        labels = {"namespace": ns, "replicaset": rs}
        series[key("kube_replicaset_owner", **labels, owner_kind="Deployment", owner_name=NAME,
                   owner_is_controller="true")] = steps({B: 1}, start)
        series[key("kube_replicaset_spec_replicas", **labels)] = steps(spec, start)
        series[key("kube_replicaset_status_ready_replicas", **labels)] = steps(ready, start)
        series[key("kube_replicaset_created", **labels)] = steps({B: created}, start)
    # Pods: v1's pods go one a minute from R + 60 s; v2's come one a minute from R (until a rollback).
    for i in range(4):
        gone = R + 60 * (i + 1)
        if rollback_after is not None and gone > rollback_after:
            gone = END
        series[key("kube_pod_owner", namespace=ns, pod=f"{RS1}-old{i}", owner_kind="ReplicaSet", owner_name=RS1,
                   owner_is_controller="true")] = steps({B: 1}, B, gone - STEP)
        born = R + 60 * i
        if rollback_after is not None and born > rollback_after:
            continue
        series[key("kube_pod_owner", namespace=ns, pod=f"{RS2}-new{i}", owner_kind="ReplicaSet", owner_name=RS2,
                   owner_is_controller="true")] = steps({B: 1}, born, END)
    return series


def annotated_rollback_history(ns: str) -> SeriesMap:
    """v1 -> v2 completed early on; at K the user undoes it: v1's ReplicaSet becomes revision 3 and scales up."""
    k = R + 300
    dep = {"namespace": ns, "deployment": NAME}
    series: SeriesMap = {
        key("kube_deployment_spec_replicas", **dep): steps({B: 2}),
        key("kube_deployment_status_replicas_updated", **dep): steps({B: 2, k: 1, k + 60: 2}),
        key("kube_deployment_metadata_generation", **dep): steps({B: 2, k: 3}),
        key("kube_deployment_status_observed_generation", **dep): steps({B: 2, k: 3}),
    }
    for rs, created, spec, revision in (
        (RS1, V1_CREATED, {B: 0, k: 1, k + 60: 2}, {B: 1, k: 3}),
        (RS2, R - 3600, {B: 2, k + 60: 1, k + 120: 0}, {B: 2}),
    ):
        labels = {"namespace": ns, "replicaset": rs}
        series[key("kube_replicaset_owner", **labels, owner_kind="Deployment", owner_name=NAME)] = steps({B: 1})
        series[key("kube_replicaset_spec_replicas", **labels)] = steps(spec)
        series[key("kube_replicaset_status_ready_replicas", **labels)] = steps(spec)
        series[key("kube_replicaset_created", **labels)] = steps({B: created})
        for at, value in revision.items():
            until = min([t for t in revision if t > at], default=END + STEP) - STEP
            series[key("kube_replicaset_annotations", **labels,
                       annotation_deployment_kubernetes_io_revision=str(int(value)))] = steps({B: 1}, at, until)
    return series


@pytest.fixture(scope="module")
def prom(start_prometheus: Callable[..., PrometheusServer]) -> Iterator[PrometheusServer]:
    series = {
        **rollout_history("replay-a"),
        **rollout_history("replay-b", rollback_after=DIVERGE),
        **annotated_rollback_history("replay-c"),
    }
    server = start_prometheus(series)
    yield server
    server.stop()


def replay(prom: PrometheusServer, *targets: Target, **kwargs: float) -> KubeStateMetricsRolloutSource:
    return KubeStateMetricsRolloutSource(PrometheusConfig(url=prom.url), targets or [Target("replay-a")], **kwargs)


def only(states: list[RolloutState]) -> RolloutState:
    assert len(states) == 1, states
    return states[0]


def test_rollout_state_step_by_step(prom: PrometheusServer) -> None:
    source = replay(prom)
    before = only(source.list_rollouts(R - 60))
    assert (before.ref, before.revision, before.new_hash, before.old_hashes) == (DeploymentRef("replay-a", NAME), 1,
                                                                                V1, ())
    assert (before.desired_replicas, before.updated_replicas, before.ready_new_replicas) == (4, 4, 4)
    assert before.started_at == V1_CREATED and before.progress == 1.0 and before.previous_revision is None
    assert before.completed_at == B  # complete since the data begins (within the lookback)

    during = only(source.list_rollouts(R + 90))
    assert (during.revision, during.new_hash, during.old_hashes, during.previous_revision) == (2, V2, (V1,), 1)
    assert (during.updated_replicas, during.ready_new_replicas, during.old_replicas) == (2, 2, 3)
    assert during.progress == 0.5 and during.started_at == R and during.completed_at is None
    assert not during.is_rollback and not during.paused and not during.progress_deadline_exceeded

    almost = only(source.list_rollouts(R + 200))
    assert (almost.updated_replicas, almost.old_replicas, almost.progress, almost.completed_at) == (4, 1, 1.0, None)

    done = only(source.list_rollouts(R + 250))
    assert (done.revision, done.new_hash, done.old_replicas, done.completed_at) == (2, V2, 0, R + 240)

    settled = only(source.list_rollouts(R + 600))
    assert settled.old_hashes == ()  # v1's last pod series ended > 5 min before
    assert settled.completed_at == R + 240


def test_state_at_t_does_not_depend_on_later_data_nor_on_earlier_calls(prom: PrometheusServer) -> None:
    times = [R - 60, R, R + 30, R + 61, R + 90, DIVERGE]
    stepping = replay(prom, Target("replay-a"), Target("replay-b"))
    for t in times:
        a, b = stepping.list_rollouts(t)
        fresh_a, fresh_b = replay(prom, Target("replay-a"), Target("replay-b")).list_rollouts(t)
        assert dataclasses.replace(b, ref=a.ref) == a, t
        assert (fresh_a, fresh_b) == (a, b), t
    a, b = stepping.list_rollouts(R + 250)
    assert (a.revision, a.new_hash, a.completed_at) == (2, V2, R + 240)
    assert (b.revision, b.new_hash) == (1, V1)  # the later data differs: v2 was abandoned


def test_completion_is_searched_once_and_queries_do_not_grow_with_deployments(prom: PrometheusServer) -> None:
    source = replay(prom, Target("replay-a"), Target("replay-b"), Target("replay-c"))
    counts = []
    for t in (R + 90, R + 250, R + 265, R + 280):
        before = (prom.http_requests("/api/v1/query"), prom.http_requests("/api/v1/query_range"))
        source.list_rollouts(t)
        after = (prom.http_requests("/api/v1/query"), prom.http_requests("/api/v1/query_range"))
        counts.append((after[0] - before[0], after[1] - before[1]))
    # 17 instant queries a tick for three Deployments (6 of them for the pods: owner, hash label, ready, created,
    # waiting reason, restarts); 5 range queries when some completion is new.
    assert counts == [(17, 5), (17, 5), (17, 0), (17, 0)]


def test_lookback_bounds_the_completion_search(prom: PrometheusServer) -> None:
    state = only(replay(prom, lookback_seconds=120).list_rollouts(R + 600))
    assert state.completed_at == R + 480


def test_revision_annotation_gives_real_revisions_and_rollbacks(prom: PrometheusServer) -> None:
    source = replay(prom, Target("replay-c"))
    before = only(source.list_rollouts(R + 200))
    assert (before.revision, before.new_hash, before.old_hashes, before.is_rollback) == (2, V2, (), False)
    undo = only(source.list_rollouts(R + 330))
    assert (undo.revision, undo.new_hash, undo.old_hashes) == (3, V1, (V2,))
    assert undo.is_rollback and undo.previous_revision == 2 and undo.completed_at is None
    assert undo.started_at == V1_CREATED  # the reused ReplicaSet's creation: kube-state-metrics knows no better
    done = only(source.list_rollouts(R + 450))
    assert done.completed_at == R + 420 and done.old_replicas == 0


@pytest.mark.parametrize(
    ("target", "found"),
    [
        (Target("replay-a", selector="app=shop"), True),
        (Target("replay-a", selector="app in (shop, other),app.kubernetes.io/part-of=store"), True),
        (Target("replay-a", selector="app!=shop"), False),
        (Target("replay-a", selector="!app"), False),
        (Target("replay-a", names=(NAME,)), True),
        (Target("replay-a", names=("other",)), False),
        (Target("elsewhere"), False),
    ],
)
def test_targets_are_honoured(prom: PrometheusServer, target: Target, found: bool) -> None:
    assert bool(replay(prom, target).list_rollouts(R + 90)) is found


def test_a_selector_on_an_unexported_label_is_an_error(prom: PrometheusServer) -> None:
    with pytest.raises(ReplayError, match=r"no Deployment in namespace 'replay-a' has 'label_team'.*allowlist"):
        replay(prom, Target("replay-a", selector="team=payments")).list_rollouts(R + 90)
    with pytest.raises(ValueError, match=r"targets\[0\].selector"):
        replay(prom, Target("replay-a", selector="app=shop,(("))


def test_parse_selector() -> None:
    terms = parse_selector("app=web, tier in (a, b),!canary,env!=prod,track")
    assert [(r.key, r.op, r.values) for r in terms] == [
        ("app", "=", ("web",)), ("tier", "in", ("a", "b")), ("canary", "!exists", ()), ("env", "!=", ("prod",)),
        ("track", "exists", ()),
    ]


def test_failed_query_raises_replay_error() -> None:
    source = KubeStateMetricsRolloutSource(PrometheusConfig(url="http://127.0.0.1:9"), [Target("replay-a")])
    with pytest.raises(ReplayError, match="kube-state-metrics query failed"):
        source.list_rollouts(R)
    assert source.is_online() is False
