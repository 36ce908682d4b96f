"""Argo Rollouts as a workload, over real HTTP against the fake API server (which serves the Rollout kind of
argoproj.io/v1alpha1 with its status subresource, as the CRD does). The test plays Argo's controller: it
writes the Rollout's status and its ReplicaSets as Argo does mid-canary.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from predictor.actuators.argo import ArgoActuator
from predictor.config import Target
from predictor.domain import Action, Decision
from predictor.hosts import ActuatorByKind, CombinedRolloutSource
from predictor.rollouts.argo import ArgoRolloutSource
from predictor.rollouts.kubernetes import KubernetesRolloutSource
from tests.fakes.kubeapi import FakeKubeAPI, make_deployment
from tests.integration.test_kube_rollouts import eventually

NAMESPACE = "shop"
TEMPLATE = {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": "web:v2"}]}}


def make_rollout(fake: FakeKubeAPI, *, stable: str, canary: str) -> dict[str, Any]:
    """A canary Rollout at revision 2, its canary ReplicaSet (1 pod) beside the stable one (3 pods)."""
    rollout = fake.create({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "web", "namespace": NAMESPACE, "labels": {"app": "web"},
                     "annotations": {"rollout.argoproj.io/revision": "2"}},
        "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}}, "template": TEMPLATE,
                 "strategy": {"canary": {"steps": [{"setWeight": 25}, {"pause": {"duration": "10m"}}]}}},
        "status": {"currentPodHash": canary, "stableRS": stable, "phase": "Progressing", "currentStepIndex": 1,
                   "replicas": 4, "updatedReplicas": 1, "readyReplicas": 4},
    })
    owner = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "web", "controller": True,
             "blockOwnerDeletion": True, "uid": rollout["metadata"]["uid"]}
    for hash_, revision, replicas, image in ((stable, 1, 3, "web:v1"), (canary, 2, 1, "web:v2")):
        fake.create({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": f"web-{hash_}", "namespace": NAMESPACE, "ownerReferences": [owner],
                         "labels": {"app": "web", "rollouts-pod-template-hash": hash_},
                         "annotations": {"rollout.argoproj.io/revision": str(revision)}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web",
                                                                        "rollouts-pod-template-hash": hash_}},
                     "template": {"metadata": {"labels": {"app": "web", "rollouts-pod-template-hash": hash_}},
                                  "spec": {"containers": [{"name": "app", "image": image}]}}},
            "status": {"replicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas},
        })
        time.sleep(1.01)  # creation times have 1 s resolution: the canary is the younger one
    return rollout


def test_a_canary_rollout_is_watched_and_aborted_once(fake_kube: FakeKubeAPI) -> None:
    make_rollout(fake_kube, stable="5d8f7c6b9a", canary="7b9c4d2e1f")
    source = ArgoRolloutSource(fake_kube.api_client(), [Target(NAMESPACE, kind="Rollout")])
    try:
        state = eventually(lambda: source.list_rollouts(0.0), lambda s: len(s) == 1)[0]
        assert (state.ref.kind, state.ref.name, state.revision) == ("rollout", "web", 2)
        assert state.new_hash == "7b9c4d2e1f" and state.old_hashes == ("5d8f7c6b9a",)
        assert (state.updated_replicas, state.old_replicas, state.desired_replicas) == (1, 3, 4)
        assert state.completed_at is None and not state.paused and state.previous_revision == 1
        assert source.is_online()
    finally:
        source.close()

    actuator = ActuatorByKind({"rollout": ArgoActuator(fake_kube.api_client())})
    decision = Decision(ref=state.ref, revision=2, time=0.0, action=Action.UNDO, risk=0.95,
                        reason="undo: error_ratio: new pods 0.1 vs old pods 0.005", metric="error_ratio")
    result = actuator.apply(decision, state)
    assert result.applied, result.detail
    rollout = fake_kube.get("argoproj.io/v1alpha1", "Rollout", NAMESPACE, "web")
    assert rollout["status"]["abort"] is True  # what `kubectl argo rollouts abort` sets
    assert rollout["spec"]["template"]["spec"]["containers"][0]["image"] == "web:v2"  # template untouched
    annotations = rollout["metadata"]["annotations"]
    assert annotations["predictor.io/acted-revision"] == "2" and annotations["predictor.io/action"] == "undo"
    path = f"/apis/argoproj.io/v1alpha1/namespaces/{NAMESPACE}/rollouts/web/status"
    status_patches = fake_kube.requests_matching(method="PATCH", path=path, content_type="application/merge-patch")
    assert len(status_patches) == 1
    events = [e for e in fake_kube.list("v1", "Event", NAMESPACE) if e["reason"] == "PredictorRolledBack"]
    assert [e["involvedObject"]["kind"] for e in events] == ["Rollout"]

    writes = len(fake_kube.requests_matching(method="PATCH"))
    again = actuator.apply(decision, state)  # a restarted daemon deciding again
    assert not again.applied and "already acted" in again.detail
    assert len(fake_kube.requests_matching(method="PATCH")) == writes


def test_pause_sets_spec_paused_and_conflicts_are_retried(fake_kube: FakeKubeAPI) -> None:
    make_rollout(fake_kube, stable="5d8f7c6b9a", canary="7b9c4d2e1f")
    actuator = ArgoActuator(fake_kube.api_client())
    source = ArgoRolloutSource(fake_kube.api_client(), [Target(NAMESPACE, kind="Rollout")])
    try:
        state = eventually(lambda: source.list_rollouts(0.0), lambda s: len(s) == 1)[0]
    finally:
        source.close()
    fake_kube.inject_conflicts("Rollout", NAMESPACE, "web", count=1)
    decision = Decision(ref=state.ref, revision=2, time=0.0, action=Action.PAUSE, risk=0.8, reason="pause: test")
    assert actuator.apply(decision, state).applied
    rollout = fake_kube.get("argoproj.io/v1alpha1", "Rollout", NAMESPACE, "web")
    assert rollout["spec"]["paused"] is True and "abort" not in rollout["status"]
    assert rollout["metadata"]["annotations"]["predictor.io/action"] == "pause"


def test_deployments_and_rollouts_side_by_side(fake_kube: FakeKubeAPI) -> None:
    make_rollout(fake_kube, stable="5d8f7c6b9a", canary="7b9c4d2e1f")
    fake_kube.create(make_deployment("cart", NAMESPACE, image="cart:v1", replicas=2))
    fake_kube.controller.settle()
    api = fake_kube.api_client()
    combined = CombinedRolloutSource([KubernetesRolloutSource(api, [Target(NAMESPACE)]),
                                      ArgoRolloutSource(api, [Target(NAMESPACE, kind="Rollout")])])
    try:
        states = eventually(lambda: combined.list_rollouts(0.0), lambda s: len(s) == 2)
        assert [(s.ref.kind, s.ref.name) for s in states] == [("deployment", "cart"), ("rollout", "web")]
        assert combined.is_online()
    finally:
        combined.close()


def test_custom_resources_refuse_strategic_merge_patch(fake_kube: FakeKubeAPI) -> None:
    make_rollout(fake_kube, stable="5d8f7c6b9a", canary="7b9c4d2e1f")
    custom = client.CustomObjectsApi(fake_kube.api_client())
    with pytest.raises(ApiException) as info:
        custom.patch_namespaced_custom_object("argoproj.io", "v1alpha1", NAMESPACE, "rollouts", "web",
                                              {"spec": {"paused": True}},
                                              _content_type="application/strategic-merge-patch+json")
    assert info.value.status == 415
