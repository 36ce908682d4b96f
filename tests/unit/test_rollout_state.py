"""Deployment and ReplicaSet dicts -> RolloutState: the rules of predictor/rollouts/state.py, a row each."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from predictor.domain import REVISION_ANNOTATION, DeploymentRef
from predictor.rollouts.state import (
    REVISION_HISTORY_ANNOTATION,
    format_time,
    parse_time,
    ready_allowance,
    rollout_state_from_objects,
    selector_string,
    template_without_hash,
    templates_equal,
)

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
UID = "uid-web"


def ts(offset: float) -> str:
    return format_time(T0 + offset)


def template(image: str, pod_hash: str | None = None) -> dict[str, Any]:
    labels = {"app": "web"}
    if pod_hash:
        labels["pod-template-hash"] = pod_hash
    return {
        "metadata": {"labels": labels, "creationTimestamp": None},
        "spec": {"containers": [{"name": "app", "image": image, "resources": {}}], "restartPolicy": "Always"},
    }


def deployment(
    image: str = "app:v2",
    revision: int | None = 2,
    *,
    replicas: int = 4,
    paused: bool = False,
    status: dict[str, Any] | None = None,
    progressing: tuple[str, float] | None = None,
    annotations: dict[str, str] | None = None,
    generation: int = 2,
    observed: int = 2,
) -> dict[str, Any]:
    ann = dict(annotations or {})
    if revision is not None:
        ann[REVISION_ANNOTATION] = str(revision)
    st_ = {"observedGeneration": observed, "replicas": replicas, "updatedReplicas": 0, "readyReplicas": 0,
           "availableReplicas": 0, **(status or {})}
    if progressing:
        reason, at = progressing
        st_["conditions"] = [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
            {"type": "Progressing", "status": "False" if reason == "ProgressDeadlineExceeded" else "True",
             "reason": reason, "lastUpdateTime": ts(at), "lastTransitionTime": ts(at)},
        ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "uid": UID, "generation": generation,
                     "creationTimestamp": ts(-1000), "annotations": ann, "resourceVersion": "10"},
        "spec": {"replicas": replicas, "paused": paused, "selector": {"matchLabels": {"app": "web"}},
                 "template": template(image)},
        "status": st_,
    }


def complete(replicas: int = 4) -> dict[str, int]:
    return {"replicas": replicas, "updatedReplicas": replicas, "readyReplicas": replicas,
            "availableReplicas": replicas}


def replicaset(
    pod_hash: str,
    revision: int | None,
    image: str,
    created: float,
    replicas: int,
    *,
    status_replicas: int | None = None,
    ready: int | None = None,
    owner_uid: str = UID,
    controller: bool = True,
    namespace: str = "shop",
) -> dict[str, Any]:
    ann = {REVISION_ANNOTATION: str(revision)} if revision is not None else {}
    current = replicas if status_replicas is None else status_replicas
    return {
        "metadata": {
            "name": f"web-{pod_hash}", "namespace": namespace, "creationTimestamp": ts(created),
            "labels": {"app": "web", "pod-template-hash": pod_hash}, "annotations": ann,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                                 "uid": owner_uid, "controller": controller, "blockOwnerDeletion": True}],
        },
        "spec": {"replicas": replicas,
                 "selector": {"matchLabels": {"app": "web", "pod-template-hash": pod_hash}},
                 "template": template(image, pod_hash)},
        "status": {"replicas": current, "readyReplicas": current if ready is None else ready,
                   "availableReplicas": current if ready is None else ready},
    }


def with_annotation(obj: dict[str, Any], key: str, value: str) -> dict[str, Any]:
    obj["metadata"]["annotations"][key] = value
    return obj


V1 = ("aaa111", "app:v1")
V2 = ("bbb222", "app:v2")


CASES: list[tuple[str, dict[str, Any], list[dict[str, Any]], dict[str, Any]]] = [
    (
        "steady state: one ReplicaSet, complete",
        deployment("app:v1", 1, status=complete(), progressing=("NewReplicaSetAvailable", 50)),
        [replicaset(*V1[:1], 1, V1[1], 0, 4)],
        dict(revision=1, new_hash="aaa111", old_hashes=(), updated_replicas=4, ready_new_replicas=4,
             old_replicas=0, started_at=T0, completed_at=T0 + 50, previous_revision=None, is_rollback=False),
    ),
    (
        "mid rollout v1 -> v2: new and old pods side by side",
        deployment(status={"replicas": 4, "updatedReplicas": 2, "readyReplicas": 3, "availableReplicas": 3},
                   progressing=("ReplicaSetUpdated", 120)),
        [replicaset("aaa111", 1, "app:v1", 0, 2), replicaset("bbb222", 2, "app:v2", 100, 2, ready=1)],
        dict(revision=2, new_hash="bbb222", old_hashes=("aaa111",), updated_replicas=2, ready_new_replicas=1,
             old_replicas=2, started_at=T0 + 100, completed_at=None, previous_revision=1, is_rollback=False),
    ),
    (
        "just created new ReplicaSet, no pods yet",
        deployment(status={"replicas": 4, "updatedReplicas": 0}, progressing=("NewReplicaSetCreated", 100)),
        [replicaset("aaa111", 1, "app:v1", 0, 4), replicaset("bbb222", 2, "app:v2", 100, 0)],
        dict(revision=2, new_hash="bbb222", old_hashes=("aaa111",), updated_replicas=0, old_replicas=4,
             completed_at=None),
    ),
    (
        "old ReplicaSet scaling down (spec 0, pods still terminating) is still old",
        deployment(status={"replicas": 5, "updatedReplicas": 4, "availableReplicas": 4},
                   progressing=("ReplicaSetUpdated", 130)),
        [replicaset("aaa111", 1, "app:v1", 0, 0, status_replicas=1),
         replicaset("bbb222", 2, "app:v2", 100, 4)],
        dict(old_hashes=("aaa111",), old_replicas=1, updated_replicas=4, completed_at=None),
    ),
    (
        "complete: old ReplicaSet at zero drops out, completed_at from NewReplicaSetAvailable",
        deployment(status=complete(), progressing=("NewReplicaSetAvailable", 200)),
        [replicaset("aaa111", 1, "app:v1", 0, 0), replicaset("bbb222", 2, "app:v2", 100, 4)],
        dict(revision=2, old_hashes=(), old_replicas=0, completed_at=T0 + 200, previous_revision=1),
    ),
    (
        "complete counts but the condition says otherwise: not complete yet",
        deployment(status=complete(), progressing=("ReplicaSetUpdated", 200)),
        [replicaset("aaa111", 1, "app:v1", 0, 0), replicaset("bbb222", 2, "app:v2", 100, 4)],
        dict(completed_at=None),
    ),
    (
        "status not observed for the current generation: not complete",
        deployment(status=complete(), progressing=("NewReplicaSetAvailable", 200), generation=3, observed=2),
        [replicaset("aaa111", 1, "app:v1", 0, 0), replicaset("bbb222", 2, "app:v2", 100, 4)],
        dict(completed_at=None),
    ),
    (
        "rollback: v1's ReplicaSet brought back as revision 3",
        deployment("app:v1", 3, status={"replicas": 4, "updatedReplicas": 1},
                   progressing=("ReplicaSetUpdated", 300)),
        [replicaset("aaa111", 3, "app:v1", 0, 1), replicaset("bbb222", 2, "app:v2", 100, 3)],
        dict(revision=3, new_hash="aaa111", old_hashes=("bbb222",), is_rollback=True, previous_revision=2,
             started_at=T0, updated_replicas=1, old_replicas=3),
    ),
    (
        "rollback within the same second: told by the revision-history annotation",
        deployment("app:v1", 3, status={"replicas": 4, "updatedReplicas": 1}),
        [
            with_annotation(replicaset("aaa111", 3, "app:v1", 0, 1), REVISION_HISTORY_ANNOTATION, "1"),
            replicaset("bbb222", 2, "app:v2", 0, 3),
        ],
        dict(revision=3, new_hash="aaa111", is_rollback=True, previous_revision=2),
    ),
    (
        "same second, no revision-history: not a rollback",
        deployment(status={"replicas": 4, "updatedReplicas": 1}),
        [replicaset("aaa111", 1, "app:v1", 0, 3), replicaset("bbb222", 2, "app:v2", 0, 1)],
        dict(revision=2, new_hash="bbb222", is_rollback=False, previous_revision=1),
    ),
    (
        "paused mid rollout",
        deployment(paused=True, status={"replicas": 4, "updatedReplicas": 1},
                   progressing=("DeploymentPaused", 150)),
        [replicaset("aaa111", 1, "app:v1", 0, 3), replicaset("bbb222", 2, "app:v2", 100, 1)],
        dict(paused=True, revision=2, updated_replicas=1, old_replicas=3, progress_deadline_exceeded=False),
    ),
    (
        "progress deadline exceeded",
        deployment(status={"replicas": 5, "updatedReplicas": 2},
                   progressing=("ProgressDeadlineExceeded", 700)),
        [replicaset("aaa111", 1, "app:v1", 0, 3), replicaset("bbb222", 2, "app:v2", 100, 2, ready=0)],
        dict(progress_deadline_exceeded=True, completed_at=None, ready_new_replicas=0, paused=False),
    ),
    (
        "template changed while paused: no new ReplicaSet yet",
        deployment("app:v2", 1, paused=True, status={"replicas": 4, "updatedReplicas": 0}),
        [replicaset("aaa111", 1, "app:v1", 0, 4)],
        dict(revision=1, new_hash=None, old_hashes=("aaa111",), updated_replicas=0, old_replicas=4,
             started_at=T0 - 1000, previous_revision=None),
    ),
    (
        "missing annotations everywhere: revision 0, no previous",
        deployment("app:v1", None, status=complete(), progressing=("NewReplicaSetAvailable", 10)),
        [replicaset("aaa111", None, "app:v1", 0, 4)],
        dict(revision=0, new_hash="aaa111", previous_revision=None, annotations={}, completed_at=T0 + 10),
    ),
    (
        "ReplicaSets of other owners, non-controller refs and other namespaces are ignored",
        deployment("app:v1", 1, status=complete()),
        [
            replicaset("aaa111", 1, "app:v1", 0, 4),
            replicaset("ccc333", 5, "app:v2", 50, 2, owner_uid="uid-other"),
            replicaset("ddd444", 6, "app:v2", 60, 2, controller=False),
            replicaset("eee555", 7, "app:v2", 70, 2, namespace="other"),
        ],
        dict(revision=1, new_hash="aaa111", old_hashes=(), old_replicas=0, previous_revision=None),
    ),
    (
        "annotations are the Deployment's",
        deployment("app:v1", 1, annotations={"predictor.io/acted-revision": "1", "team": "shop"}),
        [replicaset("aaa111", 1, "app:v1", 0, 4)],
        dict(annotations={"predictor.io/acted-revision": "1", "team": "shop", REVISION_ANNOTATION: "1"}),
    ),
]


@pytest.mark.parametrize(("deployment_obj", "replicasets", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_rollout_state_from_objects(
    deployment_obj: dict[str, Any], replicasets: list[dict[str, Any]], expected: dict[str, Any]
) -> None:
    state = rollout_state_from_objects(deployment_obj, replicasets)
    assert state.ref == DeploymentRef("shop", "web")
    assert {key: getattr(state, key) for key in expected} == expected


def test_inputs_are_not_modified() -> None:
    dep = deployment(status=complete())
    sets = [replicaset("aaa111", 1, "app:v1", 0, 0), replicaset("bbb222", 2, "app:v2", 100, 4)]
    before = copy.deepcopy((dep, sets))
    rollout_state_from_objects(dep, sets)
    assert (dep, sets) == before


def test_replay_form_without_uids_or_templates_matches_by_name_and_revision() -> None:
    """kube-state-metrics knows owners by name and revisions, not uids or templates."""
    dep = deployment(status={"replicas": 4, "updatedReplicas": 1})
    del dep["metadata"]["uid"], dep["spec"]["template"]
    sets = [replicaset("aaa111", 1, "app:v1", 0, 3), replicaset("bbb222", 2, "app:v2", 100, 1)]
    for rs in sets:
        del rs["metadata"]["ownerReferences"][0]["uid"], rs["spec"]["template"]
    state = rollout_state_from_objects(dep, sets)
    assert (state.revision, state.new_hash, state.old_hashes) == (2, "bbb222", ("aaa111",))
    assert (state.updated_replicas, state.old_replicas, state.previous_revision) == (1, 3, 1)


def test_two_replicasets_with_the_current_template_pick_the_oldest() -> None:
    dep = deployment("app:v1", 1)
    sets = [replicaset("zzz999", 1, "app:v1", 50, 0), replicaset("aaa111", 1, "app:v1", 0, 4)]
    assert rollout_state_from_objects(dep, sets).new_hash == "aaa111"


def test_templates_equal_ignores_hash_and_empty_fields() -> None:
    with_hash = template("app:v1", "aaa111")
    without = template("app:v1")
    del without["metadata"]["creationTimestamp"]
    without["spec"]["containers"][0].pop("resources")
    assert templates_equal(with_hash, without)
    assert not templates_equal(with_hash, template("app:v2"))
    assert not templates_equal(None, without)
    stripped = template_without_hash(with_hash)
    assert "pod-template-hash" not in stripped["metadata"]["labels"]
    assert with_hash["metadata"]["labels"]["pod-template-hash"] == "aaa111"  # the input is untouched


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ({"matchLabels": {"app": "web", "tier": "fe"}}, "app=web,tier=fe"),
        ({"matchExpressions": [{"key": "env", "operator": "In", "values": ["b", "a"]},
                               {"key": "x", "operator": "NotIn", "values": ["1"]},
                               {"key": "y", "operator": "Exists"}, {"key": "z", "operator": "DoesNotExist"}]},
         "env in (a,b),x notin (1),y,!z"),
        (None, ""),
    ],
)
def test_selector_string(selector: dict[str, Any] | None, expected: str) -> None:
    assert selector_string(selector) == expected


def test_selector_string_rejects_unknown_operator() -> None:
    with pytest.raises(ValueError, match="unknown operator 'Near'"):
        selector_string({"matchExpressions": [{"key": "a", "operator": "Near"}]})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2023-11-14T22:13:20Z", T0),
        ("2023-11-14T22:13:20.250000Z", T0 + 0.25),
        ("2023-11-14T23:13:20+01:00", T0),
        ("", None),
        (None, None),
        ("yesterday", None),
    ],
)
def test_parse_time(text: str | None, expected: float | None) -> None:
    assert parse_time(text) == expected


@given(
    revisions=st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=6, unique=True),
    replicas=st.lists(st.integers(min_value=0, max_value=5), min_size=6, max_size=6),
)
def test_invariants_over_histories(revisions: list[int], replicas: list[int]) -> None:
    """Whatever the history: the new hash is never among the old ones, the previous revision is below the
    current, progress stays within 0..1."""
    sets = [
        replicaset(f"h{rev:03d}", rev, f"app:v{rev}", float(rev), replicas[i])
        for i, rev in enumerate(revisions)
    ]
    current = max(revisions)
    dep = deployment(f"app:v{current}", current, status={"replicas": sum(replicas[: len(revisions)])})
    state = rollout_state_from_objects(dep, sets)
    assert state.revision == current
    assert state.new_hash == f"h{current:03d}"
    assert state.new_hash not in state.old_hashes
    assert state.previous_revision is None or state.previous_revision < state.revision
    assert 0.0 <= state.progress <= 1.0
    assert not state.is_rollback


def test_the_readiness_allowance_is_read_from_the_pod_template() -> None:
    """120 s to schedule, pull and start, the slowest container's startup and readiness probes at their failure
    thresholds (defaults: every 10 s, 3 failures), and minReadySeconds."""
    dep = deployment()
    assert ready_allowance(dep) is None  # no probe: the template does not say how long a start takes
    assert rollout_state_from_objects(dep, []).ready_allowance_seconds is None
    containers = dep["spec"]["template"]["spec"]["containers"]
    containers[0]["readinessProbe"] = {"httpGet": {"path": "/ready", "port": 8080}, "initialDelaySeconds": 5}
    containers.append({"name": "sidecar", "image": "proxy:1",
                       "startupProbe": {"periodSeconds": 5, "failureThreshold": 30},
                       "readinessProbe": {"periodSeconds": 2, "failureThreshold": 1}})
    dep["spec"]["minReadySeconds"] = 10
    assert ready_allowance(dep) == 120 + max(5 + 10 * 3, 5 * 30 + 2 * 1) + 10
    assert rollout_state_from_objects(dep, []).ready_allowance_seconds == 282
