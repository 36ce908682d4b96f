"""The Argo Rollouts Actuator: aborts or pauses a `Rollout` as `kubectl argo rollouts` does, and says why in
annotations on the Rollout and a Warning Event.

1. undo is `kubectl argo rollouts abort`: a merge patch `{"status":{"abort":true}}` on the status subresource
   (Argo scales the canary away and sends all traffic to the stable ReplicaSet; the template is untouched, and
   clearing abort retries it). Setting abort twice changes nothing, so it goes first, then the annotations;
2. pause is `{"spec":{"paused":true}}`, in the same write as the annotations;
3. every annotation write carries the resourceVersion read; a 409 is retried on a fresh read, and a fresh read
   that shows the revision already acted on (or moved on) stops.
"""

from __future__ import annotations

import logging
import secrets
import socket
import time
from collections.abc import Mapping
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from predictor.actuators.kubernetes import EVENT_REASON_DRY_RUN, EVENT_REASONS, MAX_MESSAGE_CHARS, ActuatorError
from predictor.domain import (
    ACTION_SEVERITY,
    ANNOTATION_ACTED_REVISION,
    ANNOTATION_ACTION,
    Action,
    Decision,
    RolloutState,
)
from predictor.kube import call_json
from predictor.ports import ActionResult, Clock, SystemClock
from predictor.rollouts.argo import GROUP, PLURAL, VERSION, argo_revision
from predictor.rollouts.state import action_record, format_time

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
HTTP_NOT_FOUND = 404
HTTP_CONFLICT = 409


class ArgoActuator:
    """Actuator over the Kubernetes API for Argo Rollouts; 409s retried up to `max_attempts` times in all."""

    def __init__(self, api_client: client.ApiClient, component: str = "predictor", clock: Clock | None = None, *,
                 max_attempts: int = 5, conflict_backoff_seconds: float = 0.05) -> None:
        self._custom = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)
        self._component = component
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._max_attempts = max_attempts
        self._backoff_seconds = conflict_backoff_seconds
        self._instance = socket.gethostname()[:128]

    def ensure_recorded(self, rollout: RolloutState) -> bool:
        """The Rollout's Event is best effort and not re-created after a restart (only Deployments' are); the
        annotations are the record a restarted daemon reads."""
        return True

    def apply(self, decision: Decision, rollout: RolloutState) -> ActionResult:
        """Carry out `decision` on its Rollout. Raises ActuatorError when the API fails or conflicts last."""
        if decision.action is Action.NONE:
            return ActionResult(applied=False, detail="no action asked")
        what = f"{decision.action.value} of rollout {decision.ref} revision {decision.revision}"
        aborted = False
        for attempt in range(1, self._max_attempts + 1):
            try:
                current = self._read(decision)
                done = self._already_done(current, decision)
                if done is not None:
                    return done
                if decision.dry_run:
                    self._emit_event(current, EVENT_REASON_DRY_RUN, decision)
                    return ActionResult(applied=False, detail=f"dry run: would {decision.action.value}")
                if decision.action is Action.UNDO and not aborted:
                    call_json(self._custom.patch_namespaced_custom_object_status, GROUP, VERSION,
                              decision.ref.namespace, PLURAL, decision.ref.name, {"status": {"abort": True}},
                              _content_type=MERGE_PATCH)
                    aborted = True
                    current = self._read(decision)
                body: dict[str, Any] = {"metadata": {"annotations": self._annotations(decision),
                                                     "resourceVersion": (current.get("metadata") or {})
                                                     .get("resourceVersion")}}
                if decision.action is Action.PAUSE:
                    body["spec"] = {"paused": True}
                patched = call_json(self._custom.patch_namespaced_custom_object, GROUP, VERSION,
                                    decision.ref.namespace, PLURAL, decision.ref.name, body,
                                    _content_type=MERGE_PATCH)
            except ApiException as exc:
                if exc.status == HTTP_NOT_FOUND:
                    return ActionResult(applied=False, detail="rollout gone")
                if exc.status != HTTP_CONFLICT or attempt == self._max_attempts:
                    raise ActuatorError(f"{what} failed: HTTP {exc.status} {exc.reason}") from exc
                time.sleep(self._backoff_seconds * 2 ** (attempt - 1))
                continue
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise ActuatorError(f"{what} failed: cannot reach the API server: {exc}") from exc
            detail = {Action.UNDO: f"aborted at revision {decision.revision} (status.abort: the canary is scaled "
                                   "away, traffic back on the stable ReplicaSet)",
                      Action.PAUSE: f"paused at revision {decision.revision}",
                      Action.ALERT: f"alert recorded on revision {decision.revision}"}[decision.action]
            self._emit_event(patched, EVENT_REASONS[decision.action], decision)
            log.info("rollout %s: %s (risk %.2f): %s", decision.ref, detail, decision.risk, decision.reason)
            return ActionResult(applied=decision.action is not Action.ALERT, detail=detail)
        raise AssertionError("unreachable")  # pragma: no cover

    def _read(self, decision: Decision) -> dict[str, Any]:
        return call_json(self._custom.get_namespaced_custom_object, GROUP, VERSION, decision.ref.namespace, PLURAL,
                         decision.ref.name)

    @staticmethod
    def _already_done(current: Mapping[str, Any], decision: Decision) -> ActionResult | None:
        annotations = (current.get("metadata") or {}).get("annotations") or {}
        if annotations.get(ANNOTATION_ACTED_REVISION) == str(decision.revision):
            try:
                recorded = Action(annotations.get(ANNOTATION_ACTION, ""))
            except ValueError:
                recorded = Action.NONE
            if ACTION_SEVERITY[recorded] >= ACTION_SEVERITY[decision.action]:
                return ActionResult(applied=False, detail=f"already acted on revision {decision.revision} "
                                                          f"({recorded.value})")
        revision = argo_revision(current)
        if revision is not None and revision != decision.revision:
            return ActionResult(applied=False, detail=f"rollout is at revision {revision}, not "
                                                      f"{decision.revision}: left alone")
        return None

    def _annotations(self, decision: Decision) -> dict[str, str]:
        return action_record(decision, self._clock.now())

    def _emit_event(self, rollout: Mapping[str, Any], reason: str, decision: Decision) -> None:
        """A Warning Event on the Rollout; a failure is logged, never raised."""
        metadata = rollout.get("metadata") or {}
        name, namespace = str(metadata.get("name", decision.ref.name)), decision.ref.namespace
        now = self._clock.now()
        suffix = f"{int(now * 1e9):x}{secrets.token_hex(3)}"
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{name[: 252 - len(suffix)]}.{suffix}", "namespace": namespace},
            "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Rollout", "name": name,
                               "namespace": namespace, "uid": metadata.get("uid"),
                               "resourceVersion": metadata.get("resourceVersion")},
            "reason": reason, "message": decision.reason[:MAX_MESSAGE_CHARS], "type": "Warning",
            "source": {"component": self._component}, "firstTimestamp": format_time(now),
            "lastTimestamp": format_time(now), "count": 1, "reportingComponent": self._component,
            "reportingInstance": self._instance,
        }
        try:
            call_json(self._core.create_namespaced_event, namespace, body)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            log.error("could not create Event %s on rollout %s: %s", reason, decision.ref, exc)
