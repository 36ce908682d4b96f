"""Argo Rollouts: a Rollout's RolloutState from its objects (pure), and `kind: Rollout` targets."""

from __future__ import annotations

from predictor.config import parse_config
from predictor.rollouts.argo import rollout_state_from_argo


def _rs(hash_: str, revision: int, replicas: int, created: str) -> dict:
    return {"metadata": {"name": f"web-{hash_}", "namespace": "shop", "creationTimestamp": created,
                         "labels": {"rollouts-pod-template-hash": hash_},
                         "annotations": {"rollout.argoproj.io/revision": str(revision)},
                         "ownerReferences": [{"kind": "Rollout", "name": "web", "controller": True}]},
            "spec": {"replicas": replicas}, "status": {"replicas": replicas, "readyReplicas": replicas}}


def _rollout(status: dict, paused: bool = False) -> dict:
    return {"metadata": {"name": "web", "namespace": "shop", "generation": 3},
            "spec": {"replicas": 4, "paused": paused}, "status": {"observedGeneration": "3", **status}}


def test_canary_mid_way() -> None:
    state = rollout_state_from_argo(
        _rollout({"currentPodHash": "bbb", "stableRS": "aaa", "phase": "Paused"}),
        [_rs("aaa", 1, 3, "2026-12-02T10:00:00Z"), _rs("bbb", 2, 1, "2026-12-02T11:00:00Z")])
    assert (state.revision, state.new_hash, state.old_hashes, state.previous_revision) == (2, "bbb", ("aaa",), 1)
    assert state.completed_at is None and not state.paused and not state.is_rollback


def test_promoted_is_complete_and_aborted_is_out_of_scope() -> None:
    healthy = _rollout({"currentPodHash": "bbb", "stableRS": "bbb", "phase": "Healthy", "conditions": [
        {"type": "Progressing", "reason": "NewReplicaSetAvailable", "lastUpdateTime": "2026-12-02T11:05:00Z"}]})
    replicasets = [_rs("aaa", 1, 0, "2026-12-02T10:00:00Z"), _rs("bbb", 2, 4, "2026-12-02T11:00:00Z")]
    state = rollout_state_from_argo(healthy, replicasets)
    assert state.completed_at is not None and state.old_hashes == ()
    aborted = _rollout({"currentPodHash": "bbb", "stableRS": "aaa", "abort": True, "phase": "Degraded"}, paused=True)
    state = rollout_state_from_argo(aborted, replicasets)
    assert state.new_hash is None and state.paused  # policy.in_scope: not watched


def test_targets_of_kind_rollout() -> None:
    config = parse_config({"targets": [{"namespace": "shop", "kind": "Rollout"}, {"namespace": "shop"}]})
    assert [t.kind for t in config.targets] == ["Rollout", "Deployment"]
