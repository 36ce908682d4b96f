"""Pure safety limits on what the policy decided, applied by the engine every tick before the actuator.

1. Per Deployment, by annotations its owners set: `predictor.io/enabled: "false"` opts it out (not watched at
   all), `predictor.io/policy.action` (pause, undo or alert) replaces `policy.action`, and
   `predictor.io/threshold.<metric>` replaces that metric's threshold. A bad value is ignored (the config's
   setting holds) and reported, never acted on.
2. The kill switch: while engaged, every pause and undo becomes an alert.
3. The action budget: at most `safety.budget.actions` pauses and undos within `safety.budget.per` across
   everything this daemon watches, so one outage, one bad model or one bad config cannot stop the whole cluster;
   beyond it, alerts only. What was spent is re-derived every tick from the Deployments' own records
   (`predictor.io/acted-at`, or the dry-run record), so neither a restart nor a new leader resets it.
A withheld decision is not recorded on the Deployment: the policy decides again on the next tick, and acts
then if the risk still holds and the limit allows it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from predictor.config import MetricSpec, PolicyConfig, SafetyConfig, format_duration, threshold_problem
from predictor.domain import (
    ANNOTATION_ACTED_AT,
    ANNOTATION_ACTION,
    ANNOTATION_DRY_RUN,
    ANNOTATION_ENABLED,
    ANNOTATION_POLICY_ACTION,
    ANNOTATION_THRESHOLD_PREFIX,
    Action,
    Decision,
    DeploymentRef,
    RolloutState,
    parse_dry_run_record,
)
from predictor.policy import RolloutMemory, not_applied

LIMITED = frozenset({Action.PAUSE, Action.UNDO})
"""The actions the kill switch and the budget hold back (an alert changes nothing on the cluster)."""


@dataclass(frozen=True)
class AnnotationProblem:
    """A per-Deployment annotation whose value is ignored."""

    ref: DeploymentRef
    annotation: str
    value: str
    message: str

    def __str__(self) -> str:
        return f"deployment {self.ref}: annotation {self.annotation}: {self.message}, got {self.value!r} (ignored)"


@dataclass(frozen=True)
class Overrides:
    """The policy and metrics one Deployment is decided with."""

    policy: PolicyConfig
    metrics: tuple[MetricSpec, ...]
    problems: tuple[AnnotationProblem, ...] = ()


def opted_out(rollout: RolloutState) -> AnnotationProblem | bool:
    """True when `predictor.io/enabled` is "false"; a value other than "true" or "false" is a problem (and the
    Deployment stays watched: a typo must not switch the safety net off)."""
    raw = rollout.annotations.get(ANNOTATION_ENABLED)
    if raw is None or raw.strip().lower() == "true":
        return False
    if raw.strip().lower() == "false":
        return True
    return AnnotationProblem(rollout.ref, ANNOTATION_ENABLED, raw, 'expected "true" or "false"')


def overrides(rollout: RolloutState, policy: PolicyConfig, metrics: Sequence[MetricSpec]) -> Overrides:
    """`policy` and `metrics` with this Deployment's valid annotations applied, and its ignored ones."""
    problems: list[AnnotationProblem] = []
    annotations = rollout.annotations
    raw_action = annotations.get(ANNOTATION_POLICY_ACTION)
    if raw_action is not None:
        choices = (Action.PAUSE.value, Action.UNDO.value, Action.ALERT.value)
        if raw_action.strip() in choices:
            policy = replace(policy, action=Action(raw_action.strip()))
        else:
            problems.append(AnnotationProblem(rollout.ref, ANNOTATION_POLICY_ACTION, raw_action,
                                              f"expected one of {', '.join(choices)}"))
    by_name = {spec.name: spec for spec in metrics}
    thresholds: dict[str, float] = {}
    for key, raw in annotations.items():
        if not key.startswith(ANNOTATION_THRESHOLD_PREFIX):
            continue
        name = key[len(ANNOTATION_THRESHOLD_PREFIX):]
        spec = by_name.get(name)
        if spec is None:
            known = ", ".join(sorted(by_name)) or "none"
            problems.append(AnnotationProblem(rollout.ref, key, raw, f"expected a configured metric ({known})"))
            continue
        try:
            value = float(raw)
        except ValueError:
            problems.append(AnnotationProblem(rollout.ref, key, raw, "expected a number"))
            continue
        message = threshold_problem(value, spec.direction, spec.unit)
        if message is not None:
            problems.append(AnnotationProblem(rollout.ref, key, raw, message))
            continue
        thresholds[name] = value
    specs = tuple(replace(spec, threshold=thresholds[spec.name]) if spec.name in thresholds else spec
                  for spec in metrics)
    return Overrides(policy=policy, metrics=specs, problems=tuple(problems))


@dataclass(frozen=True)
class SpentAction:
    """One pause or undo within the budget's window."""

    ref: DeploymentRef
    revision: int
    action: Action
    at: float


def _parse_time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    at = parsed.timestamp()
    return at if math.isfinite(at) else None


def recorded_actions(rollouts: Iterable[RolloutState]) -> list[SpentAction]:
    """The last pause or undo recorded on each Deployment: live by `predictor.io/acted-*`, in dry run by the
    `predictor.io/dry-run` record. Unreadable records count as nothing (they cannot be dated)."""
    found: list[SpentAction] = []
    for rollout in rollouts:
        annotations = rollout.annotations
        raw_action = annotations.get(ANNOTATION_ACTION, "")
        at = _parse_time(annotations.get(ANNOTATION_ACTED_AT))
        revision = rollout.acted_revision
        if raw_action in (Action.PAUSE.value, Action.UNDO.value) and at is not None and revision is not None:
            found.append(SpentAction(rollout.ref, revision, Action(raw_action), at))
        record = parse_dry_run_record(annotations.get(ANNOTATION_DRY_RUN))
        at = _parse_time(record.at) if record is not None else None
        if record is not None and record.action in LIMITED and at is not None:
            found.append(SpentAction(rollout.ref, record.revision, record.action, at))
    return found


def spent_within(actions: Iterable[SpentAction], now: float, window_seconds: float) -> list[SpentAction]:
    """Actions within (now - window, now], each (Deployment, revision, action) once at its earliest time: the
    daemon's own memory of what it did and the Deployments' records of it are the same actions."""
    earliest: dict[tuple[DeploymentRef, int, Action], SpentAction] = {}
    for action in actions:
        key = (action.ref, action.revision, action.action)
        if key not in earliest or action.at < earliest[key].at:
            earliest[key] = action
    return sorted((a for a in earliest.values() if now - window_seconds < a.at <= now + 1.0),
                  key=lambda a: (a.at, a.ref))


def withheld_because(decision: Decision, kill_switch: bool, spent: Sequence[SpentAction],
                     safety: SafetyConfig) -> str | None:
    """Why this decision's pause or undo must not be carried out (None: go ahead)."""
    if decision.action not in LIMITED:
        return None
    if kill_switch:
        return f"kill switch engaged (ConfigMap {safety.kill_switch_configmap}, stop: \"true\")"
    if len(spent) >= safety.budget_actions:
        names = ", ".join(f"{a.action} {a.ref}" for a in spent[-3:])
        return (f"action budget spent ({len(spent)} of {safety.budget_actions} pauses and undos within "
                f"{format_duration(safety.budget_seconds)}: {names})")
    return None


def withheld_reason(decision: Decision, why: str) -> str:
    """The line logs, alerts and Events carry for a withheld action."""
    return f"{decision.action} withheld, alert only: {why}"



def withhold(memory: RolloutMemory, decision: Decision, why: str) -> RolloutMemory:
    """The memory after a withheld action: not acted (decided again next tick), and its alert says why."""
    memory = not_applied(memory)
    note = withheld_reason(decision, why)
    if memory.breach_alert is not None:
        alert = memory.breach_alert
        return replace(memory, breach_alert=replace(alert, description=f"{note}. {alert.description}"))
    if memory.blind_alert is not None:
        alert = memory.blind_alert
        return replace(memory, blind_alert=replace(alert, description=f"{note}. {alert.description}"))
    return memory
