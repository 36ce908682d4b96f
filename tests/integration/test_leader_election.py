"""Two replicas of the daemon against the fake API server: one Lease, one leader, one action per revision.

Each replica is a LeaderElector plus the real KubernetesActuator, acting only while `is_leader()`, as the
daemon wires them. The clock is driven by hand (1 s ticks), so take-over times are exact. The actuator
re-reads the Deployment and skips a revision whose `predictor.io/acted-revision` annotation says it was acted
on; the test shows that a hand-over does not pause the Deployment a second time by counting PATCH requests
in the fake server's request log.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest
from kubernetes import client

from predictor.actuators.kubernetes import KubernetesActuator
from predictor.domain import (
    ANNOTATION_ACTED_REVISION,
    REVISION_ANNOTATION,
    Action,
    Decision,
    DeploymentRef,
    RolloutState,
)
from predictor.leader import LeaderElectionConfig, LeaderElector
from predictor.ports import ActionResult
from tests.fakes.kubeapi import FakeKubeAPI

NAMESPACE = "shop"
LEASE_NAMESPACE = "predictor"
LEASE = "predictor"
T0 = 1_700_000_000.0
DEPLOYMENT_PATH = rf"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/checkout"
ALREADY_ACTED = ActionResult(applied=False, detail="already acted on revision 2 (pause)")


class FakeClock:
    def __init__(self) -> None:
        self.t = T0

    def now(self) -> float:
        return self.t


@dataclass
class Replica:
    """One daemon replica: an elector and the real actuator; it acts only while leader."""

    name: str
    elector: LeaderElector
    actuator: KubernetesActuator
    alive: bool = True

    def tick(self, decision: Decision, rollout: RolloutState) -> ActionResult | None:
        if not self.alive:
            return None
        self.elector.step()
        if not self.elector.is_leader():
            return None
        return self.actuator.apply(decision, rollout)


def _replica(fake_kube: FakeKubeAPI, clock: FakeClock, name: str) -> Replica:
    api_client = fake_kube.api_client()
    config = LeaderElectionConfig(namespace=LEASE_NAMESPACE, lease_name=LEASE, identity=name)
    return Replica(
        name=name,
        elector=LeaderElector(client.CoordinationV1Api(api_client), config, clock=clock),
        actuator=KubernetesActuator(api_client, clock=clock, conflict_backoff_seconds=0.0),
    )


def _rolling_out(fake_kube: FakeKubeAPI) -> tuple[Decision, RolloutState]:
    """Deployment shop/checkout in the middle of its rollout to revision 2, and a decision to pause it."""
    fake_kube.ensure_namespace(LEASE_NAMESPACE)
    fake_kube.create(fake_kube.make_deployment("checkout", NAMESPACE, image="app:v1", replicas=4))
    fake_kube.controller.settle()
    fake_kube.patch("apps/v1", "Deployment", NAMESPACE, "checkout",
                    {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app:v2"}]}}}},
                    patch_type="strategic")
    fake_kube.controller.step()
    deployment = fake_kube.get("apps/v1", "Deployment", NAMESPACE, "checkout")
    revision = int(deployment["metadata"]["annotations"][REVISION_ANNOTATION])
    assert revision == 2
    ref = DeploymentRef(NAMESPACE, "checkout")
    rollout = RolloutState(ref=ref, revision=revision, new_hash=None, old_hashes=(), desired_replicas=4,
                           updated_replicas=1, ready_new_replicas=1, old_replicas=3, started_at=T0 - 60,
                           previous_revision=1)
    decision = Decision(ref=ref, revision=revision, time=T0, action=Action.PAUSE, risk=0.93,
                        reason="error_ratio of the new pods predicted to reach 0.05 in 4m",
                        metric="error_ratio", predicted_breach=T0 + 240)
    return decision, rollout


def _lease_spec(fake_kube: FakeKubeAPI) -> dict[str, object]:
    return fake_kube.get("coordination.k8s.io/v1", "Lease", LEASE_NAMESPACE, LEASE)["spec"]


def _deployment_patches(fake_kube: FakeKubeAPI) -> int:
    return len(fake_kube.requests_matching(method="PATCH", path=DEPLOYMENT_PATH))


@pytest.mark.parametrize("graceful", [False, True], ids=["leader-crashes", "leader-releases"])
def test_one_leader_acts_once_and_the_follower_takes_over_within_a_lease_period(
    fake_kube: FakeKubeAPI, graceful: bool
) -> None:
    decision, rollout = _rolling_out(fake_kube)
    clock = FakeClock()
    a = _replica(fake_kube, clock, "predictor-7f9c4-aaaaa")
    b = _replica(fake_kube, clock, "predictor-7f9c4-bbbbb")
    fake_kube.clear_requests()

    results = {a.name: a.tick(decision, rollout), b.name: b.tick(decision, rollout)}
    assert [a.elector.is_leader(), b.elector.is_leader()] == [True, False]
    assert results[a.name] is not None and results[a.name].applied
    assert results[b.name] is None, "the follower scores but takes no action"
    assert _deployment_patches(fake_kube) == 1
    deployment = fake_kube.get("apps/v1", "Deployment", NAMESPACE, "checkout")
    assert deployment["spec"]["paused"] is True
    assert deployment["metadata"]["annotations"][ANNOTATION_ACTED_REVISION] == "2"

    # A few healthy periods: the leader renews, re-reads, sees its own annotation and does nothing more.
    for _ in range(5):
        clock.t += 2
        assert a.tick(decision, rollout) == ALREADY_ACTED
        assert b.tick(decision, rollout) is None
    assert _deployment_patches(fake_kube) == 1

    # The leader goes away: released on a graceful stop, or just silent after a crash.
    if graceful:
        assert a.elector.release() is True
        assert _lease_spec(fake_kube)["holderIdentity"] == ""
    a.alive = False
    stopped_at = clock.t
    taken_over_at = None
    while clock.t - stopped_at <= 20:
        clock.t += 1
        result = b.tick(decision, rollout)
        both = a.elector.is_leader() and b.elector.is_leader()
        assert not both, f"two leaders at +{clock.t - stopped_at:g}s"
        if b.elector.is_leader():
            taken_over_at = clock.t - stopped_at
            assert result == ALREADY_ACTED
            break
    assert taken_over_at is not None
    assert taken_over_at <= 15, "within one lease duration of the leader's last renewal"
    if graceful:
        assert taken_over_at == 1, "a released Lease is taken on the follower's next try"
    else:
        assert taken_over_at >= 15 - 2, "a crashed leader's Lease is respected until it expires"

    spec = _lease_spec(fake_kube)
    assert spec["holderIdentity"] == b.name
    assert spec["leaseTransitions"] == 1
    assert _deployment_patches(fake_kube) == 1, "the hand-over did not pause the Deployment a second time"
    events = fake_kube.requests_matching(method="POST", path=rf"/api/v1/namespaces/{NAMESPACE}/events")
    assert len(events) == 1, "one PredictorPaused Event"


def test_a_stalled_leader_stops_acting_before_the_follower_may_start(fake_kube: FakeKubeAPI) -> None:
    clock = FakeClock()
    a, b = _replica(fake_kube, clock, "predictor-a"), _replica(fake_kube, clock, "predictor-b")
    fake_kube.ensure_namespace(LEASE_NAMESPACE)
    a.elector.step()
    b.elector.step()
    leaders_per_second = []
    for _ in range(20):  # a hangs (no step at all); b keeps trying every second
        clock.t += 1
        b.elector.step()
        leaders_per_second.append(sum((a.elector.is_leader(), b.elector.is_leader())))
    assert max(leaders_per_second) == 1
    assert leaders_per_second[:9] == [1] * 9, "a acts for its renew deadline (10 s)"
    assert leaders_per_second[9:14] == [0] * 5, "nobody acts from a's renew deadline to the Lease's expiry"
    assert b.elector.is_leader()


def test_runner_threads_elect_one_leader_and_hand_over_on_stop(fake_kube: FakeKubeAPI) -> None:
    """The background runners on real time, with short timings, over real HTTP."""
    fake_kube.ensure_namespace(LEASE_NAMESPACE)
    started: dict[str, threading.Event] = {}
    electors = {}
    for name in ("predictor-a", "predictor-b"):
        config = LeaderElectionConfig(namespace=LEASE_NAMESPACE, lease_name=LEASE, identity=name,
                                      lease_duration_seconds=3.0, renew_deadline_seconds=2.0,
                                      retry_period_seconds=0.1)
        electors[name] = LeaderElector(client.CoordinationV1Api(fake_kube.api_client()), config)
        started[name] = threading.Event()
    for name, elector in electors.items():
        elector.start(on_started_leading=started[name].set)
    try:
        deadline = time.monotonic() + 5
        while not any(event.is_set() for event in started.values()) and time.monotonic() < deadline:
            time.sleep(0.02)
        first = next(name for name, event in started.items() if event.is_set())
        second = next(name for name in electors if name != first)
        assert electors[first].is_leader() and not electors[second].is_leader()
        stopped_at = time.monotonic()
        electors[first].stop(timeout_seconds=5)
        assert started[second].wait(5)
        assert time.monotonic() - stopped_at < 1.5, "released, so taken well before the 3 s lease expired"
        assert _lease_spec(fake_kube)["holderIdentity"] == second
    finally:
        for elector in electors.values():
            elector.stop(timeout_seconds=5)
    assert _lease_spec(fake_kube)["holderIdentity"] == ""
