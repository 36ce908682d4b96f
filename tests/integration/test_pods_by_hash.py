"""A Deployment with a 55-character name, whose pod names Kubernetes cuts into the pod-template-hash: its pods
are found by their `pod-template-hash` label, live (the Pod watch, over real HTTP against the fake API server,
which names pods as the API server does) and in replay (kube-state-metrics' `kube_pod_*` series in a real
Prometheus), and their samples go to the new and old pods they are."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest

from predictor.config import MetricSpec, PrometheusConfig, Target, default_metric_pack
from predictor.domain import DeploymentRef, Observation, RolloutState, Scope
from predictor.rollouts.kubernetes import KubernetesRolloutSource
from predictor.rollouts.replay import KubeStateMetricsRolloutSource
from predictor.sources.prometheus import PrometheusMetricSource
from predictor.sources.split import (
    PodSample,
    parse_pod_name,
    pods_regex,
    scope_pods_regex,
    split_observations,
)
from tests.fakes.kubeapi import FakeKubeAPI, make_deployment
from tests.fixtures.prometheus import PrometheusServer, history_start, key
from tests.integration.test_kube_rollouts import eventually, replicaset_hash, set_image

LONG = "checkout-payments-reconciliation-worker-eu-west-primary"
assert len(LONG) == 55


def by_scope(observations: list[Observation]) -> dict[Scope, float | None]:
    return {o.scope: o.value for o in observations}


# --- live ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def source(fake_kube: FakeKubeAPI) -> Iterator[KubernetesRolloutSource]:
    made = KubernetesRolloutSource(fake_kube.api_client(), [Target("default")], backoff_seconds=0.05,
                                   max_backoff_seconds=0.2)
    yield made
    made.close()


def halfway(state: RolloutState) -> bool:
    return bool(state.new_pods) and bool(state.old_pods)


def test_live_pods_of_a_long_named_deployment_are_found_by_their_hash(
    fake_kube: FakeKubeAPI, source: KubernetesRolloutSource
) -> None:
    fake_kube.create(make_deployment(LONG, image="app:v1", replicas=2))
    fake_kube.controller.settle()
    set_image(fake_kube, LONG, "app:v2")
    fake_kube.controller.step()  # one new pod up, the old ones still there
    new_hash, old_hash = replicaset_hash(fake_kube, LONG, 2), replicaset_hash(fake_kube, LONG, 1)
    source.sync()
    state = eventually(lambda: source.list_rollouts(0.0)[0], halfway)
    assert (state.new_hash, state.old_hashes) == (new_hash, (old_hash,))
    pods = {pod["metadata"]["name"]: pod for pod in fake_kube.list("v1", "Pod", "default")}
    assert {p.name for p in state.pods} == set(pods)
    for pod in state.pods:
        # the API server cut `<deployment>-<hash>-` to 58 characters: the name keeps 2 of the hash's characters
        assert len(pod.name) == 63 and pod.name.startswith(LONG + "-")
        assert parse_pod_name(pod.name) is None or parse_pod_name(pod.name)[0] != LONG
        assert pod.template_hash == pods[pod.name]["metadata"]["labels"]["pod-template-hash"]
        assert pod.ready and pod.restarts == 0 and pod.waiting_reason is None and pod.created_at is not None
    assert [p.template_hash for p in state.new_pods] == [new_hash]

    # what the kubelet reports is read: a new pod crash-looping
    crashing = state.new_pods[0].name
    fake_kube.patch("v1", "Pod", "default", crashing, {"status": {
        "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [{"name": "app", "image": "app:v2", "imageID": "", "ready": False, "restartCount": 4,
                               "state": {"waiting": {"reason": "CrashLoopBackOff"}}}],
    }}, patch_type="merge", subresource="status")
    seen = eventually(lambda: source.list_rollouts(0.0)[0].new_pods[0], lambda p: p.restarts == 4)
    assert (seen.ready, seen.waiting_reason) == (False, "CrashLoopBackOff")

    # per-pod samples split by hash; the rendered regexes select exactly the scopes' pods
    values = {p.name: (10.0 if p.template_hash == new_hash else 1.0) for p in state.pods}
    samples = [PodSample("default", name, value) for name, value in values.items()]
    spec = MetricSpec(name="m", query='max by (namespace, pod) (m{pod=~"{pods}"})', threshold=5.0)
    assert by_scope(split_observations(spec, [state], samples, 0.0)) == {
        Scope.DEPLOYMENT: 10.0, Scope.NEW: 10.0, Scope.OLD: 1.0}
    assert all(re.fullmatch(pods_regex([state]), name) for name in values)
    for scope, pods_in in ((Scope.NEW, state.new_pods), (Scope.OLD, state.old_pods)):
        matched = {name for name in values if re.fullmatch(scope_pods_regex(state, scope), name)}
        assert matched == {p.name for p in pods_in}, scope


def test_without_known_pods_the_cut_prefix_still_tells_hashes_apart_when_it_can() -> None:
    new_hash, old_hash = "7c9f8d6b5a", "5d4c3b2a19"  # the cut keeps "7c" and "5d": distinguishable
    state = RolloutState(ref=DeploymentRef("default", LONG), revision=2, new_hash=new_hash, old_hashes=(old_hash,),
                         desired_replicas=2, updated_replicas=1, ready_new_replicas=1, old_replicas=1, started_at=0.0)
    new_pod, old_pod = f"{LONG}-7cabcde", f"{LONG}-5dvwxyz"
    spec = MetricSpec(name="m", query='max by (namespace, pod) (m{pod=~"{pods}"})', threshold=5.0)
    samples = [PodSample("default", new_pod, 10.0), PodSample("default", old_pod, 1.0)]
    assert by_scope(split_observations(spec, [state], samples, 0.0)) == {
        Scope.DEPLOYMENT: 10.0, Scope.NEW: 10.0, Scope.OLD: 1.0}
    assert re.fullmatch(scope_pods_regex(state, Scope.NEW), new_pod)
    assert not re.fullmatch(scope_pods_regex(state, Scope.NEW), old_pod)


# --- replay -------------------------------------------------------------------------------------------------------

B = history_start()
STEP = 15
END = B + 1800
R = B + 600
"""The new ReplicaSet is created; at T one pod of each revision runs."""
T = R + 300
NS = "longnames"
NEW_HASH, OLD_HASH = "7c9f8d6b5a", "7c4c3b2a19"  # the cut keeps "7c" of both: only the labels tell them apart
RS_NEW, RS_OLD = f"{LONG}-{NEW_HASH}", f"{LONG}-{OLD_HASH}"
POD_NEW, POD_OLD = (f"{LONG}-{NEW_HASH}-"[:58] + "abcde"), (f"{LONG}-{OLD_HASH}-"[:58] + "vwxyz")


def gauge(value: float, start: int = B) -> list[tuple[float, float]]:
    return [(float(t), value) for t in range(start, END + 1, STEP)]


def counter(rate: float) -> list[tuple[float, float]]:
    return [(float(t), rate * (t - B)) for t in range(B, END + 1, STEP)]


def history() -> dict[str, list[tuple[float, float]]]:
    dep = {"namespace": NS, "deployment": LONG}
    series = {
        key("kube_deployment_spec_replicas", **dep): gauge(2),
        key("kube_deployment_status_replicas_updated", **dep): gauge(1),
        key("kube_deployment_metadata_generation", **dep): gauge(2),
        key("kube_deployment_status_observed_generation", **dep): gauge(2),
    }
    for rs, created, pod, template_hash in ((RS_OLD, B - 86400, POD_OLD, OLD_HASH), (RS_NEW, R, POD_NEW, NEW_HASH)):
        start = B if rs == RS_OLD else R
        labels = {"namespace": NS, "replicaset": rs}
        series[key("kube_replicaset_owner", **labels, owner_kind="Deployment", owner_name=LONG,
                   owner_is_controller="true")] = gauge(1, start)
        series[key("kube_replicaset_spec_replicas", **labels)] = gauge(1, start)
        series[key("kube_replicaset_status_ready_replicas", **labels)] = gauge(1, start)
        series[key("kube_replicaset_created", **labels)] = gauge(created, start)
        series[key("kube_pod_owner", namespace=NS, pod=pod, owner_kind="ReplicaSet", owner_name=rs,
                   owner_is_controller="true")] = gauge(1, start)
        series[key("kube_pod_labels", namespace=NS, pod=pod, label_pod_template_hash=template_hash)] = gauge(1, start)
        series[key("kube_pod_status_ready", namespace=NS, pod=pod, condition="true")] = gauge(1, start)
        series[key("kube_pod_created", namespace=NS, pod=pod)] = gauge(created if rs == RS_NEW else B, start)
        series[key("kube_pod_container_status_restarts_total", namespace=NS, pod=pod, container="app")] = gauge(
            3 if rs == RS_NEW else 0, start)
        series[key("http_requests_total", namespace=NS, pod=pod, code="200")] = counter(9.0 if rs == RS_NEW else 10)
        series[key("http_requests_total", namespace=NS, pod=pod, code="500")] = counter(1.0 if rs == RS_NEW else 0)
    series[key("kube_pod_container_status_waiting_reason", namespace=NS, pod=POD_NEW, container="app",
               reason="CrashLoopBackOff")] = gauge(1, R)
    return series


@pytest.fixture(scope="module")
def prom(start_prometheus: Callable[..., PrometheusServer]) -> Iterator[PrometheusServer]:
    server = start_prometheus(history())
    yield server
    server.stop()


@pytest.mark.prometheus
def test_replayed_pods_of_a_long_named_deployment_are_found_by_their_hash(prom: PrometheusServer) -> None:
    config = PrometheusConfig(url=prom.url)
    [state] = KubeStateMetricsRolloutSource(config, [Target(NS)]).list_rollouts(T)
    assert (state.new_hash, state.old_hashes) == (NEW_HASH, (OLD_HASH,))
    assert [(p.name, p.template_hash) for p in state.new_pods] == [(POD_NEW, NEW_HASH)]
    assert [(p.name, p.template_hash) for p in state.old_pods] == [(POD_OLD, OLD_HASH)]
    new_pod = state.new_pods[0]
    assert (new_pod.ready, new_pod.restarts, new_pod.waiting_reason, new_pod.created_at) == (
        True, 3, "CrashLoopBackOff", float(R))
    assert state.old_pods[0].waiting_reason is None

    # the error ratio, per pod and aggregate, sees the new pod's 10 % and the old pod's 0 %
    source = PrometheusMetricSource(config)
    per_pod = {spec.name: spec for spec in default_metric_pack()}["error_ratio"]
    sel = 'namespace="{namespace}", pod=~"{pods}"'
    aggregate = MetricSpec(name="error_ratio", threshold=0.05, query=(
        f'sum(rate(http_requests_total{{{sel}, code=~"5.."}}[1m])) / sum(rate(http_requests_total{{{sel}}}[1m]))'))
    expected = {Scope.DEPLOYMENT: pytest.approx(1 / 20), Scope.NEW: pytest.approx(0.1), Scope.OLD: 0.0}
    assert by_scope(source.fetch(per_pod, [state], T)) == expected
    assert by_scope(source.fetch(aggregate, [state], T)) == expected
