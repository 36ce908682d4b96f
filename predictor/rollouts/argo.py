"""Argo Rollouts as a host: `Rollout` objects (argoproj.io/v1alpha1) watched like Deployments.

The daemon builds an `ArgoRolloutSource` for the targets of `kind: Rollout` and calls it as it calls the
Deployment source; `rollout_state_from_argo` (pure) turns a Rollout and its ReplicaSets into the same
`RolloutState`, read as Argo's controller and `kubectl argo rollouts get` read them:

1. the canary (new) ReplicaSet is the owned one whose `rollouts-pod-template-hash` label is
   `status.currentPodHash`; the stable one is `status.stableRS`; every other owned ReplicaSet with pods is old;
2. the revision is the `rollout.argoproj.io/revision` annotation (of the canary ReplicaSet, else the Rollout);
   Argo's pods are named `<rollout>-<hash>-<suffix>`, so the per-pod split is the Deployments' one;
3. the rollout is complete when the canary is the stable ReplicaSet, no old pod is left and (with a current
   `observedGeneration`) `status.phase` is Healthy; `paused` is `spec.paused` (a canary step's own pause is
   Argo's plan, not a hold); an aborted Rollout (`status.abort`) is out of scope: its canary is scaled away.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kubernetes import client

from predictor.config import Target
from predictor.domain import DeploymentRef, RolloutState
from predictor.kube import call_json
from predictor.rollouts.kubernetes import InformerSet
from predictor.rollouts.state import parse_time

Obj = Mapping[str, Any]

GROUP, VERSION, PLURAL = "argoproj.io", "v1alpha1", "rollouts"
ROLLOUT_HASH_LABEL = "rollouts-pod-template-hash"
ROLLOUT_REVISION_ANNOTATION = "rollout.argoproj.io/revision"
ROLLOUT_KIND = "rollout"


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def _int(value: Any) -> int:
    try:
        return int(str(value)) if value is not None and not isinstance(value, bool) else 0
    except ValueError:
        return 0


def argo_revision(obj: Obj) -> int | None:
    raw = (_meta(obj).get("annotations") or {}).get(ROLLOUT_REVISION_ANNOTATION)
    try:
        return int(str(raw)) if raw is not None else None
    except ValueError:
        return None


def rollout_hash(rs: Obj) -> str | None:
    value = (_meta(rs).get("labels") or {}).get(ROLLOUT_HASH_LABEL)
    return str(value) if value is not None else None


def owned_by_rollout(rs: Obj, rollout: Obj) -> bool:
    """A controller ownerReference to the Rollout (by uid; by kind and name when the objects carry no uid)."""
    meta = _meta(rollout)
    for ref in _meta(rs).get("ownerReferences") or []:
        if not ref.get("controller"):
            continue
        if meta.get("uid") and ref.get("uid"):
            if ref["uid"] == meta["uid"]:
                return True
        elif ref.get("kind") == "Rollout" and ref.get("name") == meta.get("name"):
            return True
    return False


def _created(obj: Obj) -> float | None:
    return parse_time(_meta(obj).get("creationTimestamp"))


def rollout_state_from_argo(rollout: Obj, replicasets: Sequence[Obj]) -> RolloutState:
    """The RolloutState of one Argo Rollout from it and the ReplicaSets of its namespace (others ignored)."""
    meta, spec, status = _meta(rollout), rollout.get("spec") or {}, rollout.get("status") or {}
    ref = DeploymentRef(str(meta.get("namespace", "default")), str(meta.get("name", "")), ROLLOUT_KIND)
    owned = [rs for rs in replicasets if owned_by_rollout(rs, rollout)]
    current_hash = status.get("currentPodHash")
    stable_hash = status.get("stableRS")
    new_rs = next((rs for rs in owned if rollout_hash(rs) == current_hash), None) if current_hash else None

    def replicas(rs: Obj) -> int:
        return max(_int((rs.get("spec") or {}).get("replicas")), _int((rs.get("status") or {}).get("replicas")))

    old = [rs for rs in owned if rs is not new_rs and replicas(rs) > 0]
    old.sort(key=lambda rs: (rollout_hash(rs) != stable_hash, -(argo_revision(rs) or 0)))  # stable first
    old_hashes = tuple(h for h in (rollout_hash(rs) for rs in old) if h)
    old_replicas = sum(_int((rs.get("status") or {}).get("replicas")) for rs in old)
    revision = (argo_revision(new_rs) if new_rs is not None else None) or argo_revision(rollout) or 0
    new_status = (new_rs.get("status") or {}) if new_rs is not None else {}
    observed_current = str(status.get("observedGeneration", "")) in ("", str(meta.get("generation", "")))
    complete = (new_rs is not None and current_hash == stable_hash and old_replicas == 0
                and (not observed_current or status.get("phase", "Healthy") == "Healthy"))
    completed_at = None
    if complete:
        conditions = {c.get("type"): c for c in status.get("conditions") or []}
        stamp = (conditions.get("Progressing") or {}).get("lastUpdateTime")
        completed_at = parse_time(stamp) or _created(new_rs) or 0.0
    below = [r for r in (argo_revision(rs) for rs in owned) if r is not None and r < revision]
    new_created = _created(new_rs) if new_rs is not None else None
    reused = new_created is not None and any(
        (created := _created(rs)) is not None and new_created < created for rs in owned if rs is not new_rs)
    progressing = next((c for c in status.get("conditions") or [] if c.get("type") == "Progressing"), {})
    return RolloutState(
        ref=ref,
        revision=revision,
        new_hash=None if status.get("abort") else (str(current_hash) if new_rs is not None else None),
        old_hashes=old_hashes,
        desired_replicas=_int(spec.get("replicas", 1)),
        updated_replicas=_int(new_status.get("replicas")),
        ready_new_replicas=_int(new_status.get("readyReplicas")),
        old_replicas=old_replicas,
        started_at=new_created or _created(rollout) or 0.0,
        completed_at=completed_at,
        paused=bool(spec.get("paused", False)),
        progress_deadline_exceeded=progressing.get("reason") == "ProgressDeadlineExceeded",
        is_rollback=reused,
        previous_revision=max(below) if below else None,
        annotations={str(k): str(v) for k, v in (meta.get("annotations") or {}).items()},
    )


class ArgoRolloutSource:
    """RolloutSource over the Kubernetes API for the Argo Rollouts that `targets` (of kind Rollout) select: a
    Rollout informer and a ReplicaSet informer per distinct (namespace, selector), as for Deployments."""

    def __init__(self, api_client: client.ApiClient, targets: Sequence[Target], *,
                 watch_timeout_seconds: float = 300.0, backoff_seconds: float = 1.0,
                 max_backoff_seconds: float = 60.0) -> None:
        self._targets = tuple(targets)
        custom = client.CustomObjectsApi(api_client)
        apps = client.AppsV1Api(api_client)

        def list_rollouts(namespace: str, **kwargs: Any) -> Any:
            """List (or, with watch=True, watch) the Rollouts of a namespace."""
            return custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, **kwargs)

        self._informers = InformerSet(
            (("Rollout", list_rollouts), ("ReplicaSet", apps.list_namespaced_replica_set)), self._targets,
            watch_timeout_seconds=watch_timeout_seconds, backoff_seconds=backoff_seconds,
            max_backoff_seconds=max_backoff_seconds,
        )

    def sync(self) -> None:
        """List every watched collection now and start the watches. Raises ApiException on a failed LIST."""
        self._informers.sync()

    def list_rollouts(self, at: float) -> list[RolloutState]:
        seen: set[tuple[str, str]] = set()
        states: list[RolloutState] = []
        for target in self._targets:
            rollouts = self._informers.snapshot("Rollout", target)
            replicasets = self._informers.snapshot("ReplicaSet", target)
            for rollout in rollouts:
                name = str(rollout["metadata"]["name"])
                if (target.names and name not in target.names) or (target.namespace, name) in seen:
                    continue
                seen.add((target.namespace, name))
                states.append(rollout_state_from_argo(rollout, replicasets))
        states.sort(key=lambda state: state.ref)
        return states

    def is_online(self) -> bool:
        return self._informers.is_online()

    def close(self, timeout_seconds: float = 5.0) -> None:
        self._informers.close(timeout_seconds)


def read_rollout(api_client: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    """GET one Rollout as a dict. Raises ApiException."""
    return call_json(client.CustomObjectsApi(api_client).get_namespaced_custom_object, GROUP, VERSION, namespace,
                     PLURAL, name)
