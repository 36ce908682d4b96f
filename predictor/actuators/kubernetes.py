"""The Kubernetes Actuator: pauses or undoes a Deployment's rollout, or records an alert, and says why in
annotations on the Deployment and in a Warning Event.

The engine calls `apply()` once per decision that asks for an action. Every attempt starts from a fresh read,
and every write carries the resourceVersion it read, so the API server refuses (409) a write based on a stale
read; a conflict is retried on a new read a few times. The annotations make the action happen once per
revision, across restarts and replicas of the daemon.

An action is two writes: the PATCH (which carries the annotations) and then a Warning Event. A daemon killed
between them leaves an action without its Event, so the Event's name is derived from the Deployment's uid, the
revision and the action: `ensure_recorded` (called by the engine for every Deployment whose annotations record
an action) creates it when it is missing, and a second create of the same Event is refused (409) instead of
duplicated.

Test hook: `crash_at` (the daemon passes `$PREDICTOR_CRASH_AT`, read once at start) kills the process with
SIGKILL at one step of the action path: `after_decision` (before any write), `after_patch` (before the
Event), `after_event` (before the engine queues the alert). The fault-injection suite restarts the daemon
after each and checks that the action happened once, with one Event and its alert.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from predictor.domain import (
    ACTION_SEVERITY,
    ANNOTATION_ACTED_AT,
    ANNOTATION_ACTED_REVISION,
    ANNOTATION_ACTION,
    ANNOTATION_DRY_RUN,
    ANNOTATION_REASON,
    ANNOTATION_STATUS_URL,
    REVISION_ANNOTATION,
    Action,
    Decision,
    DeploymentRef,
    DryRunRecord,
    RolloutState,
    parse_dry_run_record,
)
from predictor.kube import call_json
from predictor.ports import ActionResult, Clock, SystemClock
from predictor.rollouts.state import (
    action_record,
    format_time,
    owned_replicasets,
    previous_revision_below,
    replicaset_of_revision,
    revision_of,
    selector_string,
    template_without_hash,
    templates_equal,
)

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
HTTP_NOT_FOUND = 404
HTTP_CONFLICT = 409
EVENT_REASONS: Mapping[Action, str] = {
    Action.PAUSE: "PredictorPaused",
    Action.UNDO: "PredictorRolledBack",
    Action.ALERT: "PredictorAlert",
}
EVENT_REASON_DRY_RUN = "PredictorDryRun"
ROLLBACK_ANNOTATIONS_TO_SKIP = frozenset({
    # Kept from the Deployment, never copied from the ReplicaSet (kubectl's `annotationsToSkip`).
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION_ANNOTATION,
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
})
MAX_MESSAGE_CHARS = 1024
HTTP_ALREADY_EXISTS = 409
CRASH_AT_ENV = "PREDICTOR_CRASH_AT"
CRASH_POINTS = ("after_decision", "after_patch", "after_event")
"""Where `crash_at` may kill the process (a test hook; see the module docstring)."""


class ActuatorError(RuntimeError):
    """An action could not be carried out; the message names the Deployment, the revision and the cause."""



class KubernetesActuator:
    """Actuator over the Kubernetes API.

    `component` names this daemon in Events (source.component, reportingComponent). A 409 Conflict is
    retried on a fresh read up to `max_attempts` times in all (default 5), sleeping
    `conflict_backoff_seconds` (default 0.05), doubled each time, in between.
    """

    def __init__(
        self,
        api_client: client.ApiClient,
        component: str = "predictor",
        clock: Clock | None = None,
        *,
        max_attempts: int = 5,
        conflict_backoff_seconds: float = 0.05,
        crash_at: str | None = None,
        page_url: Callable[[DeploymentRef], str] | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts: expected at least 1, got {max_attempts}")
        if crash_at is not None and crash_at not in CRASH_POINTS:
            raise ValueError(f"crash_at: expected one of {', '.join(CRASH_POINTS)}, got {crash_at!r}")
        self._crash_at = crash_at
        self._apps = client.AppsV1Api(api_client)
        self._core = client.CoreV1Api(api_client)
        self._component = component
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._max_attempts = max_attempts
        self._backoff_seconds = conflict_backoff_seconds
        self._page_url = page_url
        """The rollout's status page (`ServerConfig.page_url`), recorded as `predictor.io/status-url`."""
        self._instance = socket.gethostname()[:128]

    def apply(self, decision: Decision, rollout: RolloutState) -> ActionResult:
        """Carry out `decision` on its Deployment (see the module docstring). Raises ActuatorError when the
        API fails, when conflicts outlast `max_attempts`, or when an undo finds no earlier revision."""
        if decision.action == Action.NONE:
            return ActionResult(applied=False, detail="no action asked")
        what = f"{decision.action.value} of {decision.ref} revision {decision.revision}"
        self._crash_if("after_decision")
        for attempt in range(1, self._max_attempts + 1):
            try:
                return self._attempt(decision, rollout, attempt)
            except ApiException as exc:
                if exc.status == HTTP_NOT_FOUND:
                    return ActionResult(applied=False, detail="deployment gone")
                if exc.status != HTTP_CONFLICT:
                    raise ActuatorError(f"{what} failed: {_api_error(exc)}") from exc
                if attempt == self._max_attempts:
                    raise ActuatorError(
                        f"{what} failed: the Deployment kept changing under us (409 Conflict on all "
                        f"{self._max_attempts} attempts)"
                    ) from exc
                log.info("%s: 409 Conflict on attempt %d of %d, re-reading",
                         what, attempt, self._max_attempts)
                time.sleep(self._backoff_seconds * 2 ** (attempt - 1))
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise ActuatorError(f"{what} failed: cannot reach the API server: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempt(self, decision: Decision, rollout: RolloutState, attempt: int) -> ActionResult:
        ref = decision.ref
        deployment = call_json(self._apps.read_namespaced_deployment, ref.name, ref.namespace)
        metadata = deployment.get("metadata") or {}
        annotations = metadata.get("annotations") or {}

        # Once per revision: a recorded action at least as strong as this one means done (an alert may still
        # be followed by a pause, a pause by an undo).
        if annotations.get(ANNOTATION_ACTED_REVISION) == str(decision.revision):
            recorded = annotations.get(ANNOTATION_ACTION, "")
            try:
                recorded_action = Action(recorded)
            except ValueError:
                recorded_action = Action.NONE
            if ACTION_SEVERITY[recorded_action] >= ACTION_SEVERITY[decision.action]:
                return ActionResult(applied=False, detail=f"already acted on revision {decision.revision} "
                                                          f"({recorded})")
        current = revision_of(deployment)
        if current != decision.revision:
            return ActionResult(
                applied=False,
                detail=f"deployment is at revision {current}, not {decision.revision}: left alone",
            )

        if decision.dry_run:
            return self._record_dry_run(deployment, decision)

        ours = self._annotations(decision)
        version = metadata.get("resourceVersion")
        changed = True  # False when the Deployment already was in the asked state (only annotations written)
        if decision.action == Action.UNDO:
            outcome = self._undo(deployment, decision, rollout, ours)
            if isinstance(outcome, ActionResult):
                return outcome
            deployment, detail = outcome
        elif decision.action == Action.PAUSE:
            was_paused = bool((deployment.get("spec") or {}).get("paused"))
            body = {"spec": {"paused": True}, "metadata": {"annotations": ours, "resourceVersion": version}}
            deployment = self._merge_patch(ref.name, ref.namespace, body)
            detail = f"paused at revision {decision.revision}"
            if was_paused:
                changed, detail = False, f"already paused at revision {decision.revision}; reason recorded"
        else:
            body = {"metadata": {"annotations": ours, "resourceVersion": version}}
            deployment = self._merge_patch(ref.name, ref.namespace, body)
            detail = f"alert recorded on revision {decision.revision}"
        if attempt > 1:
            detail += f" (attempt {attempt})"
        self._crash_if("after_patch")
        self._emit_event(deployment, EVENT_REASONS[decision.action], decision.revision, decision.action.value,
                         decision.reason)
        self._crash_if("after_event")
        # INFO, not WARNING: the engine logs the one WARNING per action, with this result's detail.
        log.info("deployment %s: %s (risk %.2f): %s", ref, detail, decision.risk, decision.reason)
        return ActionResult(applied=changed, detail=detail)

    def _record_dry_run(self, deployment: dict[str, Any], decision: Decision) -> ActionResult:
        """Dry run: record what would have been done on the Deployment (`predictor.io/dry-run`), then the Event;
        a record of this revision with an action as strong means it was done already (by us before a restart,
        or by another replica): no second Event."""
        ref = decision.ref
        metadata = deployment.get("metadata") or {}
        recorded = parse_dry_run_record((metadata.get("annotations") or {}).get(ANNOTATION_DRY_RUN))
        if (recorded is not None and recorded.revision == decision.revision
                and ACTION_SEVERITY[recorded.action] >= ACTION_SEVERITY[decision.action]):
            return ActionResult(applied=False, detail=f"dry run: already recorded ({recorded})")
        record = DryRunRecord(decision.action, decision.revision, format_time(self._clock.now()) or "")
        body = {"metadata": {"annotations": {ANNOTATION_DRY_RUN: str(record)},
                             "resourceVersion": metadata.get("resourceVersion")}}
        patched = self._merge_patch(ref.name, ref.namespace, body)
        self._emit_event(patched, EVENT_REASON_DRY_RUN, decision.revision, f"dry-run-{decision.action.value}",
                         decision.reason)
        log.info("dry run: would %s deployment %s at revision %d (risk %.2f): %s",
                 decision.action.value, ref, decision.revision, decision.risk, decision.reason)
        return ActionResult(applied=False, detail=f"dry run: would {decision.action.value} (recorded)")

    def _undo(
        self, deployment: dict[str, Any], decision: Decision, rollout: RolloutState, ours: Mapping[str, str],
    ) -> ActionResult | tuple[dict[str, Any], str]:
        """Patch the template back as `kubectl rollout undo` does: (the patched Deployment, a detail), or a
        result when there is nothing to patch."""
        ref = decision.ref
        spec = deployment.get("spec") or {}
        listed = call_json(self._apps.list_namespaced_replica_set, ref.namespace,
                           label_selector=selector_string(spec.get("selector")))
        owned = owned_replicasets(deployment, listed.get("items") or [])
        target = None
        if rollout.previous_revision is not None and rollout.previous_revision != decision.revision:
            target = replicaset_of_revision(owned, rollout.previous_revision)
        if target is None:
            below = previous_revision_below(decision.revision, owned)
            target = replicaset_of_revision(owned, below) if below is not None else None
        if target is None:
            raise ActuatorError(f"undo of {ref} revision {decision.revision} failed: no ReplicaSet of an "
                                "earlier revision is left to roll back to")
        target_revision = revision_of(target)
        template = template_without_hash((target.get("spec") or {}).get("template") or {})
        if templates_equal(template, spec.get("template")):
            return ActionResult(applied=False, detail=f"already at template of revision {target_revision}")

        current = (deployment.get("metadata") or {}).get("annotations") or {}
        annotations = {k: v for k, v in current.items() if k in ROLLBACK_ANNOTATIONS_TO_SKIP}
        replicaset_annotations = (target.get("metadata") or {}).get("annotations") or {}
        annotations.update(
            {k: v for k, v in replicaset_annotations.items() if k not in ROLLBACK_ANNOTATIONS_TO_SKIP}
        )
        annotations.update(ours)
        version = (deployment.get("metadata") or {}).get("resourceVersion")
        operations = [
            # Replacing resourceVersion with the one read makes it a precondition: a stale write gets 409.
            {"op": "replace", "path": "/metadata/resourceVersion", "value": version},
            {"op": "replace", "path": "/spec/template", "value": template},
            {"op": "add", "path": "/metadata/annotations", "value": annotations},
            # A paused Deployment does not roll back: resume it in the same write.
            {"op": "add", "path": "/spec/paused", "value": False},
        ]
        patched = call_json(self._apps.patch_namespaced_deployment, ref.name, ref.namespace, operations,
                            _content_type=JSON_PATCH)
        rs_name = (target.get("metadata") or {}).get("name")
        return patched, (f"rolled back from revision {decision.revision} to the template of revision "
                         f"{target_revision} (ReplicaSet {rs_name})")

    def _merge_patch(self, name: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return call_json(self._apps.patch_namespaced_deployment, name, namespace, body,
                         _content_type=MERGE_PATCH)

    def _annotations(self, decision: Decision) -> dict[str, str]:
        page = self._page_url(decision.ref) if self._page_url else ""
        return ({ANNOTATION_STATUS_URL: page} if page else {}) | action_record(decision, self._clock.now())

    def ensure_recorded(self, rollout: RolloutState) -> bool:
        """Create the Event of the action recorded in `rollout`'s annotations if it is missing (see the module
        docstring). True when the Event exists now (or there is none to have), False when the API failed."""
        annotations = rollout.annotations
        revision, recorded = rollout.acted_revision, annotations.get(ANNOTATION_ACTION, "")
        if revision is None or recorded not in {a.value for a in EVENT_REASONS} or (
                annotations.get(ANNOTATION_DRY_RUN) == "true"):
            return True
        ref = rollout.ref
        try:
            deployment = call_json(self._apps.read_namespaced_deployment, ref.name, ref.namespace)
        except ApiException as exc:
            if exc.status == HTTP_NOT_FOUND:
                return True
            log.warning("cannot check the Event of %s revision %d: %s", ref, revision, _api_error(exc))
            return False
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            log.warning("cannot check the Event of %s revision %d: %s", ref, revision, exc)
            return False
        message = annotations.get(ANNOTATION_REASON, "") or f"{recorded} recorded on revision {revision}"
        return self._emit_event(deployment, EVENT_REASONS[Action(recorded)], revision, recorded, message,
                                at=annotations.get(ANNOTATION_ACTED_AT))

    def _crash_if(self, point: str) -> None:
        if self._crash_at == point:
            log.critical("test hook: PREDICTOR_CRASH_AT=%s, killing this process with SIGKILL", point)
            os.kill(os.getpid(), signal.SIGKILL)

    def _emit_event(self, deployment: Mapping[str, Any], reason: str, revision: int, tag: str, message: str,
                    *, at: str | None = None) -> bool:
        """Create the Warning Event of one action on the Deployment; its name is unique to (uid, revision, tag),
        so an Event already there is refused with 409 and counts as created. A failure is logged, never raised;
        returns whether the Event exists now."""
        metadata = deployment.get("metadata") or {}
        name, namespace = str(metadata.get("name", "")), str(metadata.get("namespace", ""))
        stamp = at or format_time(self._clock.now())
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": event_name(name, str(metadata.get("uid") or ""), revision, tag),
                         "namespace": namespace},
            "involvedObject": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": name,
                "namespace": namespace,
                "uid": metadata.get("uid"),
                "resourceVersion": metadata.get("resourceVersion"),
            },
            "reason": reason,
            "message": message[:MAX_MESSAGE_CHARS],
            "type": "Warning",
            "source": {"component": self._component},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "reportingComponent": self._component,
            "reportingInstance": self._instance,
        }
        try:
            call_json(self._core.create_namespaced_event, namespace, body)
        except ApiException as exc:
            if exc.status == HTTP_ALREADY_EXISTS:
                log.debug("Event %s of %s/%s revision %d already exists", reason, namespace, name, revision)
                return True
            log.error("could not create Event %s on deployment %s/%s: %s", reason, namespace, name, _api_error(exc))
            return False
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            log.error("could not create Event %s on deployment %s/%s: %s", reason, namespace, name, exc)
            return False
        log.info("Event %s created on deployment %s/%s revision %d", reason, namespace, name, revision)
        return True


def event_name(deployment: str, uid: str, revision: int, tag: str) -> str:
    """`<deployment>.predictor-<uid prefix>-r<revision>-<tag>`: one name per action, at most 253 characters."""
    suffix = f".predictor-{uid[:8]}-r{revision}-{tag}".replace("--", "-")
    return deployment[: 253 - len(suffix)] + suffix


def _api_error(exc: ApiException) -> str:
    """`HTTP 422 Unprocessable Entity: <the server's message>`."""
    message = ""
    body = exc.body
    if body:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
        try:
            message = str(json.loads(text).get("message") or "")
        except (ValueError, AttributeError):
            message = text[:300]
    return f"HTTP {exc.status} {exc.reason}" + (f": {message}" if message else "")
