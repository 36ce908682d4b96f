"""Pure: decide(memory, rollout, assessments, now, policy) -> (memory, Decision). Called by the engine each tick.

Per Deployment revision the memory moves watching -> at risk -> acted. Rules, in order:
1. At most one action per revision, also across restarts: the Deployment's `predictor.io/acted-revision`
   annotation counts as acted, and a person who resumes a paused rollout is not overruled. The one exception
   is rule 3's escalation.
2. Hysteresis: risk must reach `risk_threshold` on `consecutive_ticks` ticks in a row; a clear tick resets
   the count, an unknown tick neither counts nor resets. Decisive evidence (`Assessment.decisive`: an abrupt
   regression many standard errors and far beyond the threshold) pauses a running rollout on its first tick; an
   undo still needs `consecutive_ticks` (the pause escalates, rule 3).
3. Graded by confidence: risk at `alert_threshold` only alerts (severity warning); at `risk_threshold` the
   rollout is paused; the configured `undo` needs `undo_threshold` while the rollout still runs (after it
   completed a pause would stop nothing, so undo it is). A rollout we paused, still paused, is undone once its
   risk holds at `undo_threshold` for `consecutive_ticks` (the pause bought time; the evidence is now sure).
4. Unknown data never acts by itself; after `blind_after_ticks` unknown ticks in a row the rollout is reported
   blind (an alert, or a pause when `blind_action: pause`), never undone.
5. A rollback (the current ReplicaSet is an older template brought back) is never undone again: at most alerted.
6. What a restart forgets is re-derived from the Deployment's annotations (`recall`): an action recorded on this
   revision fires its alert at once, and the rollback we started carries the undone revision's alert until it
   completes (resolved at once if it completed meanwhile), so a daemon killed between its write and its alert
   still sends it.

Scope (`in_scope`): a revision is watched while it rolls out, for `bake` after it completes, and beyond that while
its evidence still builds (its top risk reached LIVE_RISK, or an assessment says a trend still heads for the
threshold, `Assessment.building`, on one of the last `consecutive_ticks` ticks), up to
`max_watch` after completion: a leak that breaches half an hour after a quick rollout is still being forecast when
the bake ends. Its phase then reads `watching_beyond_bake`.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from predictor.config import PolicyConfig, format_duration
from predictor.domain import (
    ANNOTATION_ACTED_AT,
    ANNOTATION_ACTION,
    ANNOTATION_METRIC,
    ANNOTATION_PREDICTED_BREACH,
    ANNOTATION_REASON,
    ANNOTATION_RISK,
    Action,
    Alert,
    Assessment,
    Decision,
    RolloutState,
)

ALERT_BREACH = "PredictedSLOBreach"
ALERT_BLIND = "PredictorBlind"
LIVE_RISK = 0.05
"""A top risk at or above this is evidence still building (the rollout scorer reports a trend forecast from a 5 %
breach probability on): past `bake`, it keeps the revision watched up to `max_watch`."""


class Phase(enum.StrEnum):
    WATCHING = "watching"
    AT_RISK = "at_risk"
    ACTED = "acted"
    BEYOND_BAKE = "watching_beyond_bake"
    """Completed more than `bake` ago, still watched because its evidence builds (`in_scope`)."""


@dataclass(frozen=True)
class RolloutMemory:
    """What the policy remembers of one Deployment revision between ticks."""

    revision: int
    phase: Phase = Phase.WATCHING
    risk_ticks: int = 0
    warn_ticks: int = 0
    clear_ticks: int = 0
    unknown_ticks: int = 0
    undo_ticks: int = 0
    """Ticks in a row at `undo_threshold`: what escalates our pause to an undo."""
    acted: Action = Action.NONE
    acted_at: float | None = None
    breach_alert: Alert | None = None
    blind_alert: Alert | None = None
    carried_alert: Alert | None = None
    """The breach alert of the revision we undid: it fires until this rollback completes."""
    live_at: float | None = None
    """The last tick whose top risk reached LIVE_RISK or whose trend was building: what keeps the revision watched
    beyond `bake`."""

    @property
    def alerts(self) -> tuple[Alert, ...]:
        return tuple(a for a in (self.breach_alert, self.blind_alert, self.carried_alert) if a is not None)


def in_scope(rollout: RolloutState, now: float, policy: PolicyConfig, memory: RolloutMemory | None = None) -> bool:
    """A Deployment is watched while it rolls out, for `bake_seconds` after it completes, and beyond while the
    revision's evidence still builds (`beyond_bake`)."""
    if rollout.new_hash is None:
        return False
    if rollout.completed_at is None or now - rollout.completed_at <= policy.bake_seconds:
        return True
    return beyond_bake(rollout, now, policy, memory)


def beyond_bake(rollout: RolloutState, now: float, policy: PolicyConfig, memory: RolloutMemory | None) -> bool:
    """Past `bake`: still watched while this revision's top risk reached LIVE_RISK, or a trend still headed for the
    threshold (`Assessment.building`), on one of the last `consecutive_ticks` ticks, and at most
    `max_watch_seconds` after completion. Unknown ticks do not keep it watched."""
    if rollout.completed_at is None or now - rollout.completed_at <= policy.bake_seconds:
        return False
    if memory is None or memory.revision != rollout.revision or memory.live_at is None:
        return False
    if now - rollout.completed_at > policy.max_watch_seconds:
        return False
    return now - memory.live_at <= policy.consecutive_ticks * policy.interval_seconds


def retire(memory: RolloutMemory) -> tuple[Alert, ...]:
    """A Deployment left scope (its rollout baked, or it is no longer targeted): its alerts resolve."""
    return memory.alerts


def succeed(previous: RolloutMemory, rollout: RolloutState) -> tuple[RolloutMemory, tuple[Alert, ...]]:
    """Memory for the revision that replaced `previous`, and the alerts that resolve now.

    After an undo the breach alert keeps firing until the rollback has completed: resolving it at once would
    let Alertmanager drop an alert that fired and resolved within its group_wait, and nobody would hear of it.
    """
    carried = previous.breach_alert if previous.acted is Action.UNDO else None
    resolved = tuple(a for a in previous.alerts if a is not carried)
    return RolloutMemory(revision=rollout.revision, carried_alert=carried), resolved


def not_applied(memory: RolloutMemory) -> RolloutMemory:
    """The action did not happen (a follower, or the API failed): decide again on the next tick."""
    return replace(memory, phase=Phase.AT_RISK, acted=Action.NONE, acted_at=None)


def recall(rollout: RolloutState, now: float) -> RolloutMemory:
    """The memory of a revision first seen by this process, from what the Deployment's annotations record.

    An action recorded on this revision makes it acted, its breach alert firing (later ticks update or resolve
    it as usual). An undo recorded on an earlier revision, while this one is its rollback (in scope: rolling
    out or baking), carries that revision's alert, as `succeed` does without a restart.
    """
    memory = RolloutMemory(revision=rollout.revision)
    acted_revision, action = rollout.acted_revision, _recorded_action(rollout)
    if acted_revision is None:
        return memory
    if acted_revision == rollout.revision:
        return replace(memory, phase=Phase.ACTED, acted=action, acted_at=_annotation_time(rollout, ANNOTATION_ACTED_AT),
                       breach_alert=_recorded_alert(rollout, acted_revision, now))
    if acted_revision < rollout.revision and action is Action.UNDO and rollout.is_rollback:
        # Carried even when the rollback completed (it then resolves at once): the alert may never have been
        # delivered, and the notifier sends a resolve it never delivered firing as firing first. At least once.
        return replace(memory, carried_alert=_recorded_alert(rollout, acted_revision, now))
    return memory


def _annotation_time(rollout: RolloutState, key: str) -> float | None:
    raw = rollout.annotations.get(key, "")
    try:
        return datetime.fromisoformat(raw).timestamp() if raw else None
    except ValueError:
        return None


def _recorded_alert(rollout: RolloutState, revision: int, now: float) -> Alert:
    """The breach alert of the action recorded on `revision`, with the labels the original one had."""
    annotations = rollout.annotations
    metric = annotations.get(ANNOTATION_METRIC, "")
    reason = annotations.get(ANNOTATION_REASON, "")
    try:
        risk = float(annotations.get(ANNOTATION_RISK, "0"))
    except ValueError:
        risk = 0.0
    acted_at = _annotation_time(rollout, ANNOTATION_ACTED_AT)
    return Alert(
        name=ALERT_BREACH, ref=rollout.ref, revision=revision, severity="critical", metric=metric,
        summary=f"{rollout.ref} revision {revision}: {metric or 'a metric'} predicted to breach; "
        f"{_recorded_action(rollout)} recorded on the Deployment",
        description=reason, starts_at=acted_at if acted_at is not None and acted_at <= now else now,
        predicted_breach=_annotation_time(rollout, ANNOTATION_PREDICTED_BREACH),
        risk=risk if math.isfinite(risk) else 0.0,
    )


def _chosen_action(rollout: RolloutState, risk: float, policy: PolicyConfig) -> tuple[Action, str]:
    """The configured action, graded by confidence and by what the rollout allows."""
    action = policy.action
    if action is Action.UNDO and risk < policy.undo_threshold and rollout.completed_at is None:
        return Action.PAUSE, f" (risk below undo_threshold {policy.undo_threshold:.2f}: pausing, not undoing)"
    if action is Action.UNDO and rollout.is_rollback:
        return Action.ALERT, " (undo withheld: this revision is itself a rollback)"
    if action is Action.UNDO and rollout.previous_revision is None:
        return Action.PAUSE, " (undo impossible: no previous revision; pausing instead)"
    if action is Action.PAUSE and rollout.completed_at is not None:
        return action, " (the rollout is complete: a pause stops nothing; `action: undo` would roll it back)"
    return action, ""


def _escalates(memory: RolloutMemory, rollout: RolloutState, policy: PolicyConfig) -> bool:
    """Whether our pause of this revision may still become an undo: `action: undo`, the rollout still paused
    (a person who resumed it has decided), and something to roll back to."""
    return (memory.acted is Action.PAUSE and policy.action is Action.UNDO and (rollout.paused or policy.dry_run)
            and not rollout.is_rollback and rollout.previous_revision is not None)


def _top(assessments: Sequence[Assessment]) -> Assessment | None:
    known = [a for a in assessments if not a.unknown]
    return max(known, key=lambda a: a.risk) if known else None


def _breach_alert(rollout: RolloutState, top: Assessment, now: float, previous: Alert | None, acted: bool) -> Alert:
    breach = "now" if top.predicted_breach is not None and top.predicted_breach <= now else (
        f"in {format_duration(top.predicted_breach - now)}" if top.predicted_breach is not None else "not dated"
    )
    return Alert(
        name=ALERT_BREACH,
        ref=rollout.ref,
        revision=rollout.revision,
        severity="critical" if acted or (top.predicted_breach is not None and top.predicted_breach <= now)
        else "warning",
        metric=top.metric,
        summary=f"{rollout.ref} revision {rollout.revision}: {top.metric} predicted to breach {breach}",
        description=top.reason,
        starts_at=previous.starts_at if previous else now,
        predicted_breach=top.predicted_breach,
        risk=top.risk,
    )


def _recorded_action(rollout: RolloutState) -> Action:
    raw = rollout.annotations.get(ANNOTATION_ACTION, "")
    return Action(raw) if raw in {a.value for a in Action} else Action.ALERT


@dataclass(frozen=True)
class _Tick:
    """What every decision of one tick shares."""

    rollout: RolloutState
    top: Assessment | None
    now: float
    policy: PolicyConfig

    def decision(
        self, memory: RolloutMemory, action: Action, risk: float, reason: str, resolved: Sequence[Alert]
    ) -> tuple[RolloutMemory, Decision]:
        top = self.top
        return memory, Decision(
            ref=self.rollout.ref, revision=self.rollout.revision, time=self.now, action=action, risk=risk,
            reason=reason, metric=top.metric if top else None,
            predicted_breach=top.predicted_breach if top else None, dry_run=self.policy.dry_run,
            alerts=memory.alerts, resolved=tuple(resolved),
        )


def decide(
    memory: RolloutMemory | None,
    rollout: RolloutState,
    assessments: Sequence[Assessment],
    now: float,
    policy: PolicyConfig,
) -> tuple[RolloutMemory, Decision]:
    """One tick of the policy for one rollout revision."""
    if memory is None or memory.revision != rollout.revision:
        memory = recall(rollout, now)
    if memory.acted is Action.NONE and rollout.acted_revision == rollout.revision:
        memory = replace(memory, phase=Phase.ACTED, acted=_recorded_action(rollout))
    resolved: list[Alert] = []
    if memory.carried_alert is not None and rollout.completed_at is not None:
        resolved.append(memory.carried_alert)
        memory = replace(memory, carried_alert=None)
    top = _top(assessments)
    tick = _Tick(rollout, top, now, policy)
    if top is None:
        return _blind_tick(tick, memory, assessments, resolved)

    if memory.blind_alert is not None:
        resolved.append(memory.blind_alert)
    at_risk = top.risk >= policy.risk_threshold
    warned = top.risk >= policy.alert_threshold
    risk_ticks = memory.risk_ticks + 1 if at_risk else 0
    warn_ticks = memory.warn_ticks + 1 if warned else 0
    clear_ticks = 0 if warned else memory.clear_ticks + 1
    undo_ticks = memory.undo_ticks + 1 if top.risk >= policy.undo_threshold else 0
    memory = replace(memory, unknown_ticks=0, blind_alert=None, risk_ticks=risk_ticks, warn_ticks=warn_ticks,
                     clear_ticks=clear_ticks, undo_ticks=undo_ticks,
                     live_at=now if top.risk >= LIVE_RISK or any(a.building for a in assessments if not a.unknown)
                     else memory.live_at)
    figures = (f"risk {top.risk:.2f} (threshold {policy.risk_threshold:.2f}, "
               f"{risk_ticks}/{policy.consecutive_ticks} ticks)")
    confirmed = policy.consecutive_ticks

    if memory.breach_alert is not None and clear_ticks >= confirmed:
        resolved.append(memory.breach_alert)
        memory = replace(memory, breach_alert=None)
    elif warn_ticks >= confirmed or (memory.breach_alert is not None and warned):
        acted = memory.phase is Phase.ACTED
        memory = replace(memory, breach_alert=_breach_alert(rollout, top, now, memory.breach_alert, acted))

    if memory.phase is Phase.ACTED and _escalates(memory, rollout, policy) and undo_ticks >= confirmed:
        since = f" {format_duration(now - memory.acted_at)} ago" if memory.acted_at is not None else ""
        memory = replace(memory, acted=Action.UNDO, acted_at=now,
                         breach_alert=_breach_alert(rollout, top, now, memory.breach_alert, True))
        reason = (f"undo (escalated: paused{since}, the risk now holds at undo_threshold "
                  f"{policy.undo_threshold:.2f} for {undo_ticks}/{confirmed} ticks): {top.reason}; risk {top.risk:.2f}")
        return tick.decision(memory, Action.UNDO, top.risk, reason, resolved)

    if memory.phase is Phase.ACTED:
        reason = f"already acted ({memory.acted}) on revision {rollout.revision}; {top.reason}; {figures}"
        return tick.decision(memory, Action.NONE, top.risk, reason, resolved)

    if not at_risk:
        phase = Phase.AT_RISK if memory.breach_alert is not None else Phase.WATCHING
        note = "warning (alert only)" if memory.breach_alert is not None else "watching"
        if rollout.completed_at is not None and now - rollout.completed_at > policy.bake_seconds:
            phase = Phase.AT_RISK if memory.breach_alert is not None else Phase.BEYOND_BAKE
            note += (f" beyond bake ({format_duration(now - rollout.completed_at)} after completion, evidence still "
                     f"building; at most {format_duration(policy.max_watch_seconds)})")
        return tick.decision(replace(memory, phase=phase), Action.NONE, top.risk, f"{note}: {top.reason}; {figures}",
                             resolved)

    decisive = top.decisive and rollout.completed_at is None
    if risk_ticks < confirmed and not decisive:
        return tick.decision(replace(memory, phase=Phase.AT_RISK), Action.NONE, top.risk,
                             f"at risk, waiting for confirmation: {top.reason}; {figures}", resolved)

    action, note = _chosen_action(rollout, top.risk, policy)
    if risk_ticks < confirmed and action is Action.UNDO:
        action, note = Action.PAUSE, (f" (decisive evidence on {risk_ticks}/{confirmed} ticks: pausing at once; an "
                                      f"undo needs {confirmed} ticks at undo_threshold)")
    elif risk_ticks < confirmed:
        note += f" (decisive evidence: acting on {risk_ticks}/{confirmed} ticks)"
    memory = replace(memory, phase=Phase.ACTED, acted=action, acted_at=now,
                     breach_alert=_breach_alert(rollout, top, now, memory.breach_alert, True))
    return tick.decision(memory, action, top.risk, f"{action}{note}: {top.reason}; {figures}", resolved)


def _blind_tick(
    tick: _Tick, memory: RolloutMemory, assessments: Sequence[Assessment], resolved: Sequence[Alert]
) -> tuple[RolloutMemory, Decision]:
    policy, rollout, now = tick.policy, tick.rollout, tick.now
    unknown_ticks = memory.unknown_ticks + 1
    memory = replace(memory, unknown_ticks=unknown_ticks)
    causes = "; ".join(a.reason for a in assessments) or "no metrics configured"
    if unknown_ticks < policy.blind_after_ticks:
        reason = f"no usable data ({unknown_ticks}/{policy.blind_after_ticks} ticks): {causes}"
        return tick.decision(memory, Action.NONE, 0.0, reason, resolved)
    blind = Alert(
        name=ALERT_BLIND, ref=rollout.ref, revision=rollout.revision, severity="warning", metric="",
        summary=f"{rollout.ref} revision {rollout.revision}: rolling out with no usable metrics for "
        f"{unknown_ticks} ticks",
        description=causes,
        starts_at=memory.blind_alert.starts_at if memory.blind_alert else now,
    )
    memory = replace(memory, blind_alert=blind)
    if policy.blind_action is Action.PAUSE and memory.phase is not Phase.ACTED:
        memory = replace(memory, phase=Phase.ACTED, acted=Action.PAUSE, acted_at=now)
        return tick.decision(memory, Action.PAUSE, 0.0, f"pause: blind for {unknown_ticks} ticks ({causes})",
                             resolved)
    return tick.decision(memory, Action.NONE, 0.0, f"blind for {unknown_ticks} ticks: {causes}", resolved)
