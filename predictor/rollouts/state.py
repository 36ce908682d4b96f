"""Pure functions from Kubernetes Deployment and ReplicaSet objects (dict form, as the API serves them) to a
RolloutState, and the ReplicaSet helpers the Kubernetes actuator needs for an undo.

Called by the live Kubernetes rollout source on every tick, by the actuator, and usable by any replay that
can rebuild the same dicts (kube-state-metrics carries revisions, replicas, owners and creation times).
No I/O here.

The rules follow the deployment controller (`pkg/controller/deployment/util/deployment_util.go`):
1. a ReplicaSet belongs to a Deployment through a controller ownerReference (by uid, or by kind and name when
   the objects carry no uid, as in a replay);
2. the new ReplicaSet is the oldest owned one whose pod template equals the Deployment's, ignoring the
   pod-template-hash label; without a template (a replay), the one whose revision is the Deployment's;
3. a rollback brings an old template back: the controller reuses its ReplicaSet, bumps its revision and
   records the former ones in `deployment.kubernetes.io/revision-history`; so the new ReplicaSet has that
   annotation, or (in a replay, which lacks it) was created before another owned one.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from predictor.domain import (
    ANNOTATION_ACTED_AT,
    ANNOTATION_ACTED_REVISION,
    ANNOTATION_ACTION,
    ANNOTATION_DRY_RUN,
    ANNOTATION_METRIC,
    ANNOTATION_PREDICTED_BREACH,
    ANNOTATION_REASON,
    ANNOTATION_RISK,
    POD_TEMPLATE_HASH_LABEL,
    REVISION_ANNOTATION,
    Decision,
    DeploymentRef,
    PodState,
    RolloutState,
)

Obj = Mapping[str, Any]

REVISION_HISTORY_ANNOTATION = "deployment.kubernetes.io/revision-history"
PROGRESSING = "Progressing"
REASON_NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
REASON_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
START_SLACK_SECONDS = 120.0
"""Scheduling, pulling the image and starting the containers, before any probe runs: part of the readiness
allowance."""
PROBE_PERIOD_DEFAULT, PROBE_FAILURE_THRESHOLD_DEFAULT = 10, 3
"""The API server's defaults for a probe's periodSeconds and failureThreshold."""


def parse_time(text: str | None) -> float | None:
    """RFC3339 (fractional seconds optional, `Z` or an offset) -> POSIX seconds; None if absent/invalid."""
    if not text or not isinstance(text, str):
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def format_time(seconds: float) -> str:
    """POSIX seconds -> RFC3339 in UTC with a `Z`, whole seconds (as Kubernetes writes metav1.Time)."""
    return datetime.fromtimestamp(int(seconds), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def action_record(decision: Decision, acted_at: float, reason_chars: int | None = None) -> dict[str, str]:
    """What every host writes on the workload it acted on (annotations, or a Swarm service's labels): a restarted
    daemon reads its action, revision and metric back from them (`policy.recall`, the action budget)."""
    breach = decision.predicted_breach
    return {
        ANNOTATION_ACTED_REVISION: str(decision.revision),
        ANNOTATION_ACTION: decision.action.value,
        ANNOTATION_ACTED_AT: format_time(acted_at),
        ANNOTATION_REASON: decision.reason[:reason_chars] if reason_chars else decision.reason,
        ANNOTATION_RISK: f"{decision.risk:.3f}",
        ANNOTATION_PREDICTED_BREACH: format_time(breach) if breach is not None else "",
        ANNOTATION_DRY_RUN: "true" if decision.dry_run else "false",
        ANNOTATION_METRIC: decision.metric or "",
    }


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def _int(value: Any, default: int = 0) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return default


def revision_of(obj: Obj) -> int | None:
    """The `deployment.kubernetes.io/revision` annotation as an int; None when missing or not a number."""
    raw = (_meta(obj).get("annotations") or {}).get(REVISION_ANNOTATION)
    if raw is None:
        return None
    try:
        return int(str(raw))
    except ValueError:
        return None


def pod_template_hash(rs: Obj) -> str | None:
    labels = _meta(rs).get("labels") or {}
    value = labels.get(POD_TEMPLATE_HASH_LABEL)
    if value is None:
        template = (rs.get("spec") or {}).get("template") or {}
        value = ((template.get("metadata") or {}).get("labels") or {}).get(POD_TEMPLATE_HASH_LABEL)
    return str(value) if value is not None else None


def is_owned_by(rs: Obj, deployment: Obj) -> bool:
    """True when `rs` has a controller ownerReference to `deployment` (uid match; kind+name without uids)."""
    dep_meta = _meta(deployment)
    dep_uid = dep_meta.get("uid")
    for ref in _meta(rs).get("ownerReferences") or []:
        if not ref.get("controller"):
            continue
        if dep_uid and ref.get("uid"):
            if ref["uid"] == dep_uid:
                return True
        elif ref.get("kind") == "Deployment" and ref.get("name") == dep_meta.get("name"):
            return True
    return False


def owned_replicasets(deployment: Obj, replicasets: Sequence[Obj]) -> list[Obj]:
    """The ReplicaSets the Deployment controls, in the Deployment's namespace."""
    namespace = _meta(deployment).get("namespace")
    return [
        rs for rs in replicasets
        if _meta(rs).get("namespace", namespace) == namespace and is_owned_by(rs, deployment)
    ]


def _prune(value: Any) -> Any:
    """Drop None, empty maps and empty lists, as the API's semantic equality treats them as absent."""
    if isinstance(value, Mapping):
        out = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not None and v != {} and v != []}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def template_without_hash(template: Obj) -> dict[str, Any]:
    """A deep copy of a pod template without the pod-template-hash label (what kubectl patches back)."""
    result = copy.deepcopy(dict(template))
    labels = (result.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(POD_TEMPLATE_HASH_LABEL, None)
    return result


def templates_equal(a: Obj | None, b: Obj | None) -> bool:
    """Pod templates equal ignoring pod-template-hash (kubectl's and the controller's `EqualIgnoreHash`)."""
    if a is None or b is None:
        return False
    return bool(_prune(template_without_hash(a)) == _prune(template_without_hash(b)))


def _created(obj: Obj) -> float | None:
    return parse_time(_meta(obj).get("creationTimestamp"))


def _sort_key(rs: Obj) -> tuple[float, str]:
    created = _created(rs)
    return (created if created is not None else float("inf"), str(_meta(rs).get("name", "")))


def find_new_replicaset(deployment: Obj, owned: Sequence[Obj]) -> Obj | None:
    """The ReplicaSet of the Deployment's current template (rule 2 of the module docstring)."""
    template = (deployment.get("spec") or {}).get("template")
    if template and any((rs.get("spec") or {}).get("template") for rs in owned):
        matching = sorted(
            (rs for rs in owned if templates_equal((rs.get("spec") or {}).get("template"), template)),
            key=_sort_key,
        )
        return matching[0] if matching else None
    current = revision_of(deployment)
    if current is None:
        return None
    matching = sorted((rs for rs in owned if revision_of(rs) == current), key=_sort_key)
    return matching[0] if matching else None


def previous_revision_below(revision: int, owned: Sequence[Obj]) -> int | None:
    """The highest ReplicaSet revision strictly below `revision`, or None."""
    below = [r for r in (revision_of(rs) for rs in owned) if r is not None and r < revision]
    return max(below) if below else None


def replicaset_of_revision(owned: Sequence[Obj], revision: int) -> Obj | None:
    matching = [rs for rs in owned if revision_of(rs) == revision]
    return sorted(matching, key=_sort_key)[0] if matching else None


def _replicas(rs: Obj) -> tuple[int, int]:
    """(spec.replicas, status.replicas) of a ReplicaSet."""
    return _int((rs.get("spec") or {}).get("replicas")), _int((rs.get("status") or {}).get("replicas"))


def _progressing(deployment: Obj) -> Obj:
    for condition in (deployment.get("status") or {}).get("conditions") or []:
        if condition.get("type") == PROGRESSING:
            return condition
    return {}


def _is_reused(new_rs: Obj, owned: Sequence[Obj]) -> bool:
    """Rule 3: the new ReplicaSet served an earlier revision (creation times have 1 s resolution: both)."""
    if (_meta(new_rs).get("annotations") or {}).get(REVISION_HISTORY_ANNOTATION):
        return True
    new_created = _created(new_rs)
    return new_created is not None and any(
        (created := _created(rs)) is not None and new_created < created for rs in owned if rs is not new_rs
    )


def _probe_allowance(probe: Obj | None) -> float:
    """How long a probe may fail before the kubelet gives up on it: its initial delay and every allowed failure."""
    if not isinstance(probe, Mapping):
        return 0.0
    period = _int(probe.get("periodSeconds"), PROBE_PERIOD_DEFAULT) or PROBE_PERIOD_DEFAULT
    failures = _int(probe.get("failureThreshold"), PROBE_FAILURE_THRESHOLD_DEFAULT) or PROBE_FAILURE_THRESHOLD_DEFAULT
    return max(0, _int(probe.get("initialDelaySeconds"))) + period * failures


def ready_allowance(deployment: Obj) -> float | None:
    """How long a new pod of the Deployment may take to become ready: START_SLACK_SECONDS, the slowest container's
    startup and readiness probes at their failure thresholds, and `minReadySeconds`. None without a pod template
    (a replay) or without any probe (readiness is then the containers' start, whose time the template does not
    tell)."""
    spec = deployment.get("spec") or {}
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    probed = [c for c in containers if isinstance(c, Mapping) and (c.get("startupProbe") or c.get("readinessProbe"))]
    if not probed:
        return None
    slowest = max(_probe_allowance(c.get("startupProbe")) + _probe_allowance(c.get("readinessProbe")) for c in probed)
    return START_SLACK_SECONDS + slowest + max(0, _int(spec.get("minReadySeconds")))


def pod_state(pod: Obj) -> PodState:
    """A Pod (dict form) as the rollout state keeps it: its `pod-template-hash` label, readiness (the Ready
    condition), restarts summed over its containers, the first waiting container's reason, its creation time."""
    meta = _meta(pod)
    status = pod.get("status") or {}
    containers = list(status.get("containerStatuses") or [])
    waiting = [((c.get("state") or {}).get("waiting") or {}).get("reason")
               for c in [*containers, *(status.get("initContainerStatuses") or [])]]
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    return PodState(
        name=str(meta.get("name", "")),
        template_hash=str((meta.get("labels") or {}).get(POD_TEMPLATE_HASH_LABEL, "")),
        ready=ready,
        restarts=sum(_int(c.get("restartCount")) for c in containers),
        waiting_reason=next((str(reason) for reason in waiting if reason), None),
        created_at=_created(pod),
    )


def pods_of(replicasets: Sequence[Obj], pods: Sequence[Obj]) -> tuple[PodState, ...]:
    """The pods `replicasets` control (controller ownerReference, by uid; by name without uids) that carry a
    `pod-template-hash` label, sorted by name."""
    uids = {str(_meta(rs).get("uid")) for rs in replicasets if _meta(rs).get("uid")}
    names = {str(_meta(rs).get("name")) for rs in replicasets}
    found = []
    for pod in pods:
        for ref in _meta(pod).get("ownerReferences") or []:
            if not ref.get("controller") or ref.get("kind", "ReplicaSet") != "ReplicaSet":
                continue
            if (ref.get("uid") and ref["uid"] in uids) or (not ref.get("uid") and ref.get("name") in names):
                state = pod_state(pod)
                if state.template_hash:
                    found.append(state)
                break
    return tuple(sorted(found, key=lambda p: p.name))


def rollout_state_from_objects(
    deployment: Obj, replicasets: Sequence[Obj], pods: Sequence[Obj] | None = None
) -> RolloutState:
    """Build the RolloutState of one Deployment from it and the ReplicaSets of its namespace (others ignored),
    and, when `pods` (its namespace's Pods) are given, the pods of its new and old ReplicaSets.

    Replica counts come from the ReplicaSets (the pods as they are), completion from the Deployment's status
    as `kubectl rollout status` reads it. A Deployment whose new template has no ReplicaSet yet (just changed,
    or changed while paused) has `new_hash` None and zero updated replicas.
    """
    meta = _meta(deployment)
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    ref = DeploymentRef(str(meta.get("namespace", "default")), str(meta.get("name", "")))

    owned = owned_replicasets(deployment, replicasets)
    new_rs = find_new_replicaset(deployment, owned)
    dep_revision = revision_of(deployment)
    new_revision = revision_of(new_rs) if new_rs is not None else None
    revision = new_revision if new_revision is not None else (dep_revision or 0)

    old = [rs for rs in owned if rs is not new_rs and max(_replicas(rs)) > 0]
    old.sort(key=lambda rs: (-(revision_of(rs) or 0), str(_meta(rs).get("name", ""))))
    old_hashes = tuple(h for h in (pod_template_hash(rs) for rs in old) if h is not None)
    old_replicas = sum(_replicas(rs)[1] for rs in old)

    desired = _int(spec.get("replicas", 1), 1)
    if new_rs is not None:
        new_status = new_rs.get("status") or {}
        updated = _int(new_status.get("replicas"))
        ready_new = _int(new_status.get("readyReplicas"))
    else:
        updated = ready_new = 0

    started_at = _created(new_rs) if new_rs is not None else None
    if started_at is None:
        started_at = _created(deployment) or 0.0

    available = status.get("availableReplicas", status.get("readyReplicas"))
    generation, observed = meta.get("generation"), status.get("observedGeneration")
    observed_current = generation is None or observed is None or _int(observed) >= _int(generation)
    complete = (
        observed_current
        and _int(status.get("updatedReplicas")) == desired
        and _int(status.get("replicas")) == desired
        and _int(available) == desired
        and old_replicas == 0
    )
    progressing = _progressing(deployment)
    completed_at = None
    if complete and progressing.get("reason") == REASON_NEW_RS_AVAILABLE:
        completed_at = parse_time(progressing.get("lastUpdateTime"))

    is_rollback = new_rs is not None and _is_reused(new_rs, owned)

    return RolloutState(
        ref=ref,
        revision=revision,
        new_hash=pod_template_hash(new_rs) if new_rs is not None else None,
        old_hashes=old_hashes,
        desired_replicas=desired,
        updated_replicas=updated,
        ready_new_replicas=ready_new,
        old_replicas=old_replicas,
        started_at=started_at,
        completed_at=completed_at,
        paused=bool(spec.get("paused", False)),
        progress_deadline_exceeded=progressing.get("reason") == REASON_DEADLINE_EXCEEDED,
        is_rollback=is_rollback,
        previous_revision=previous_revision_below(revision, owned),
        annotations={str(k): str(v) for k, v in (meta.get("annotations") or {}).items()},
        pods=pods_of([rs for rs in owned if rs is new_rs or rs in old], pods) if pods else (),
        ready_allowance_seconds=ready_allowance(deployment),
    )


def selector_string(selector: Obj | None) -> str:
    """A LabelSelector object (matchLabels, matchExpressions) -> the query form `a=b,c in (d,e),!f`."""
    if not selector:
        return ""
    terms = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, operator, values = expr.get("key"), expr.get("operator"), sorted(expr.get("values") or [])
        if operator == "In":
            terms.append(f"{key} in ({','.join(values)})")
        elif operator == "NotIn":
            terms.append(f"{key} notin ({','.join(values)})")
        elif operator == "Exists":
            terms.append(str(key))
        elif operator == "DoesNotExist":
            terms.append(f"!{key}")
        else:
            raise ValueError(f"selector.matchExpressions: unknown operator {operator!r} for key {key!r}")
    return ",".join(terms)
