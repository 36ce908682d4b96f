"""The Docker Swarm Actuator: rolls a service's update back, and records why in the service's labels.

The engine calls `apply()` once per decision that asks for an action. Swarm allows `undo` and `alert` only (the
config refuses `pause`: no API pauses an update in progress, moby #26159):

1. undo is what `docker service rollback` sends: `POST /services/{id}/update?version=V&rollback=previous` with the
   current spec (docker-py has no parameter for it, so it goes through its low-level client). The manager swaps
   `Spec` and `PreviousSpec` and rolls the tasks back under `RollbackConfig`, mid-update too;
2. then the action is recorded in `predictor.io/*` service labels (acted-revision, action, reason, risk...,
   and `predictor.io/undone-to`, the revision rolled back to) so a restarted daemon never acts twice. Swarm
   has no metadata-only write: any spec change resets `UpdateStatus` and makes the current spec the previous
   one, so the rollback goes on as an update to the same (old) template, and `docker service rollback` would
   afterwards be a no-op; that is why the labels are written only after an undo;
3. an alert changes nothing on the service (a label write mid-update would make the bad spec `PreviousSpec`
   and so the target of a later rollback): the alert itself goes to Alertmanager;
4. every write carries the `Version.Index` it read; the manager refuses a stale one ("update out of sequence"),
   which is retried on a fresh read, and a fresh read whose template is no longer the decided revision stops
   (the rollback happened: never twice).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import docker
from docker.errors import APIError, DockerException, NotFound

from predictor.domain import (
    ACTION_SEVERITY,
    ANNOTATION_ACTED_REVISION,
    ANNOTATION_ACTION,
    Action,
    Decision,
    RolloutState,
)
from predictor.ports import ActionResult, Clock, SystemClock
from predictor.rollouts.state import action_record
from predictor.rollouts.swarm import LABEL_UNDONE_TO, revision_of_hash, template_hash

log = logging.getLogger(__name__)

MAX_LABEL_CHARS = 1024


class SwarmActuatorError(RuntimeError):
    """An action could not be carried out; the message names the service, the revision and the cause."""


def _is_conflict(exc: APIError) -> bool:
    return "out of sequence" in str(exc.explanation or exc)


class SwarmActuator:
    """Actuator over a swarm manager's Engine API. A stale version is retried on a fresh read up to
    `max_attempts` times in all (default 5), `conflict_backoff_seconds` (default 0.05) apart, doubled each time."""

    def __init__(self, api: docker.APIClient, clock: Clock | None = None, *, max_attempts: int = 5,
                 conflict_backoff_seconds: float = 0.05) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts: expected at least 1, got {max_attempts}")
        self.api = api
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._max_attempts = max_attempts
        self._backoff_seconds = conflict_backoff_seconds

    def ensure_recorded(self, rollout: RolloutState) -> bool:
        """Swarm has no Events: the service label written with the action is the whole record."""
        return True

    def apply(self, decision: Decision, rollout: RolloutState) -> ActionResult:
        """Carry out `decision` on its service (see the module docstring). Raises SwarmActuatorError when the
        API fails, when conflicts outlast `max_attempts`, or when an undo finds no previous spec."""
        if decision.action is Action.NONE:
            return ActionResult(applied=False, detail="no action asked")
        if decision.action is Action.PAUSE:  # the policy's fallback when there is nothing to undo to
            return ActionResult(applied=False, detail="not paused: Swarm has no API to pause an update in progress "
                                                      "(alert only)")
        what = f"{decision.action.value} of service {decision.ref.name} revision {decision.revision}"
        try:
            service = self.api.inspect_service(decision.ref.name)
        except NotFound:
            return ActionResult(applied=False, detail="service gone")
        except (DockerException, OSError) as exc:
            raise SwarmActuatorError(f"{what} failed: {exc}") from exc
        done = self._already_done(service, decision)
        if done is not None:
            return done
        if decision.dry_run:
            log.info("dry run: would %s service %s at revision %d (risk %.2f): %s", decision.action.value,
                     decision.ref.name, decision.revision, decision.risk, decision.reason)
            return ActionResult(applied=False, detail=f"dry run: would {decision.action.value}")
        if decision.action is Action.ALERT:
            return ActionResult(applied=False, detail="alert only: the service is left as it is")
        return self._undo(service, decision, what)

    def _already_done(self, service: Mapping[str, Any], decision: Decision) -> ActionResult | None:
        """A result when there is nothing to do: acted already, or the service moved on from the revision."""
        spec = service.get("Spec") or {}
        labels = spec.get("Labels") or {}
        if labels.get(ANNOTATION_ACTED_REVISION) == str(decision.revision):
            try:
                recorded = Action(labels.get(ANNOTATION_ACTION, ""))
            except ValueError:
                recorded = Action.NONE
            if ACTION_SEVERITY[recorded] >= ACTION_SEVERITY[decision.action]:
                return ActionResult(applied=False, detail=f"already acted on revision {decision.revision} "
                                                          f"({recorded.value})")
        current = revision_of_hash(template_hash(spec.get("TaskTemplate")))
        if current != decision.revision:
            return ActionResult(applied=False, detail=f"service is at revision {current}, not "
                                                      f"{decision.revision}: left alone")
        return None

    def _undo(self, service: Mapping[str, Any], decision: Decision, what: str) -> ActionResult:
        name = decision.ref.name
        for attempt in range(1, self._max_attempts + 1):
            if service.get("PreviousSpec") is None:
                raise SwarmActuatorError(f"{what} failed: the service has no previous spec to roll back to")
            try:
                self._update(service, rollback=True)
                break
            except APIError as exc:
                if not _is_conflict(exc) or attempt == self._max_attempts:
                    raise SwarmActuatorError(f"{what} failed: {exc.explanation or exc}") from exc
            except (DockerException, OSError) as exc:
                raise SwarmActuatorError(f"{what} failed: {exc}") from exc
            log.info("%s: version moved on attempt %d of %d, re-reading", what, attempt, self._max_attempts)
            time.sleep(self._backoff_seconds * 2 ** (attempt - 1))
            service = self.api.inspect_service(name)
            done = self._already_done(service, decision)
            if done is not None:
                return done
        rolled = self.api.inspect_service(name)
        target = revision_of_hash(template_hash((rolled.get("Spec") or {}).get("TaskTemplate")))
        detail = f"rolled back from revision {decision.revision} to the previous spec (revision {target})"
        if attempt > 1:
            detail += f" (attempt {attempt})"
        recorded = self._record(rolled, decision, target)
        if recorded is not None:
            detail += f"; {recorded}"
        log.info("service %s: %s (risk %.2f): %s", name, detail, decision.risk, decision.reason)
        return ActionResult(applied=True, detail=detail)

    def _record(self, service: Mapping[str, Any], decision: Decision, target: int) -> str | None:
        """Write our labels on the rolled-back spec (rule 2); None when written, else why not (logged)."""
        labels = self._labels(decision, target)
        for attempt in range(1, self._max_attempts + 1):
            spec = dict(service.get("Spec") or {})
            if revision_of_hash(template_hash(spec.get("TaskTemplate"))) != target:
                problem = "not recorded: the service changed again before its labels could be written"
                break
            spec["Labels"] = {**(spec.get("Labels") or {}), **labels}
            try:
                self._update({**service, "Spec": spec}, rollback=False)
                return None
            except APIError as exc:
                problem = f"labels not recorded: {exc.explanation or exc}"
                if not _is_conflict(exc):
                    break
            except (DockerException, OSError) as exc:
                problem = f"labels not recorded: {exc}"
                break
            time.sleep(self._backoff_seconds * 2 ** (attempt - 1))
            service = self.api.inspect_service(decision.ref.name)
        log.error("service %s: %s", decision.ref.name, problem)
        return problem

    def _update(self, service: Mapping[str, Any], *, rollback: bool) -> None:
        """`POST /services/{id}/update?version=V[&rollback=previous]` with the spec; raises APIError."""
        params: dict[str, Any] = {"version": (service.get("Version") or {}).get("Index")}
        if rollback:
            params["rollback"] = "previous"
        url = self.api._url("/services/{0}/update", service["ID"])
        response = self.api._post_json(url, data=service.get("Spec") or {}, params=params)
        self.api._result(response, json=True)  # raises APIError on an error status

    def _labels(self, decision: Decision, target: int) -> dict[str, str]:
        return action_record(decision, self._clock.now(), reason_chars=MAX_LABEL_CHARS) | {LABEL_UNDONE_TO: str(target)}
