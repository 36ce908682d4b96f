"""One tick of the loop, shared by `predictor run`, `predictor backtest` and `predictor demo`.

The engine asks the ports for rollouts and observations at a time it is given, runs the pure core (history,
scorer, policy) and hands decisions to the actuator and alerts to the notifier. It never reads a clock itself and
never lets an adapter's failure escape a tick: a failed source makes data unknown, a failed action is retried on
the next tick.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from predictor import policy as policy_rules
from predictor.config import Config, MetricSpec
from predictor.detectors.base import Scorer
from predictor.domain import (
    ANNOTATION_ACTION,
    Action,
    Alert,
    Assessment,
    Decision,
    DeploymentRef,
    Observation,
    RolloutState,
)
from predictor.features import MetricHistory
from predictor.policy import RolloutMemory
from predictor.ports import ActionResult, Actuator, MetricSource, Notifier, RolloutSource

log = logging.getLogger(__name__)

REBUILD_MAX_POINTS = 60
"""At most this many past ticks are re-read per rollout first seen mid-rollout (a longer lookback is sampled)."""


@dataclass(frozen=True)
class ActionOutcome:
    decision: Decision
    result: ActionResult | None
    error: str | None = None


@dataclass
class TickReport:
    """What one tick saw and did; the daemon turns it into its own metrics."""

    time: float
    watched: int = 0
    decisions: list[Decision] = field(default_factory=list)
    assessments: dict[DeploymentRef, list[Assessment]] = field(default_factory=dict)
    query_outcomes: list[tuple[str, str]] = field(default_factory=list)
    """(metric, "ok" | "unknown" | "error") per metric query."""
    actions: list[ActionOutcome] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    blind: int = 0


class Engine:
    """Holds the in-memory state between ticks: per-rollout history and policy memory."""

    def __init__(
        self,
        config: Config,
        *,
        rollouts: RolloutSource,
        metrics: MetricSource,
        actuator: Actuator,
        notifier: Notifier,
        scorer: Scorer,
        may_act: Callable[[], bool] = lambda: True,
        rebuild_history: bool = False,
    ) -> None:
        self.config = config
        self.rollouts = rollouts
        self.metrics = metrics
        self.actuator = actuator
        self.notifier = notifier
        self.scorer = scorer
        self.may_act = may_act
        """False on a follower under leader election: it scores but neither acts nor alerts."""
        self.history = MetricHistory(config.policy.lookback_seconds)
        self.memory: dict[DeploymentRef, RolloutMemory] = {}
        self._recorded: set[tuple[DeploymentRef, int, str]] = set()
        self.rebuild_history = rebuild_history
        """`predictor run`: a rollout first seen after it started gets its history re-read (see `_rebuild`)."""
        self._seen: set[tuple[DeploymentRef, int]] = set()
        """Actions recorded on Deployments whose Event this process has made sure of (`Actuator.ensure_recorded`)."""

    def tick(self, now: float) -> TickReport:
        report = TickReport(time=now)
        try:
            states = self.rollouts.list_rollouts(now)
        except Exception as exc:
            report.errors.append(f"listing rollouts failed: {exc}")
            log.error("tick skipped: listing rollouts failed: %s", exc)
            return report
        watched = [s for s in states if policy_rules.in_scope(s, now, self.config.policy)]
        report.watched = len(watched)
        resolved = self._retire(watched, now)
        self._rebuild(watched, now)
        self._observe(watched, now, report)
        leader = self.may_act()
        if leader:
            self._ensure_recorded(watched)
        for rollout in watched:
            decision = self._decide(rollout, now, report)
            resolved.extend(decision.resolved)
            if decision.action is not Action.NONE:
                self._act(decision, rollout, leader, report)
        report.blind = sum(1 for m in self.memory.values() if m.blind_alert is not None)
        if leader:
            firing = [alert for memory in self.memory.values() for alert in memory.alerts]
            self._notify(firing, resolved, now, report)
        return report

    def _retire(self, watched: Sequence[RolloutState], now: float) -> list[Alert]:
        """Forget revisions that left scope or were replaced; their alerts resolve (an undone one's later)."""
        current = {r.ref: r for r in watched}
        resolved: list[Alert] = []
        for ref in list(self.memory):
            memory = self.memory[ref]
            successor = current.get(ref)
            if successor is not None and successor.revision == memory.revision:
                continue
            if successor is None:
                del self.memory[ref]
                ended = policy_rules.retire(memory)
            else:
                self.memory[ref], ended = policy_rules.succeed(memory, successor)
            resolved.extend(ended)
            log.info("%s revision %d no longer watched; %d alert(s) resolved", ref, memory.revision, len(ended))
        for ref, revision in self.history.refs():
            kept = current[ref].revision if ref in current else None
            if kept != revision:
                self.history.forget(ref, keep_revision=kept)
        return resolved

    def _rebuild(self, watched: Sequence[RolloutState], now: float) -> None:
        """Re-read the history of rollouts this process first sees after they started (a restart mid-rollout):
        the same metric queries at past tick times over `lookback`, at most REBUILD_MAX_POINTS of them, so the
        scorer sees what an uninterrupted daemon saw and a restart costs a tick or two, not a lookback."""
        if not self.rebuild_history:
            return
        current = {(r.ref, r.revision) for r in watched}
        fresh = [r for r in watched if (r.ref, r.revision) not in self._seen]
        self._seen = current
        policy = self.config.policy
        missed = [r for r in fresh if r.started_at < now - 2 * policy.interval_seconds]
        if not missed or not self.config.metrics:
            return
        earliest = max(now - policy.lookback_seconds, min(r.started_at for r in missed))
        step = max(policy.interval_seconds, (now - earliest) / REBUILD_MAX_POINTS)
        times = [earliest + k * step for k in range(int((now - earliest) / step)) if earliest + k * step < now]
        for at in times:
            started = [r for r in missed if r.started_at <= at]
            if not started:
                continue
            revisions = {r.ref: r.revision for r in started}
            for spec in self.config.metrics:
                try:
                    observations = self.metrics.fetch(spec, started, at)
                except Exception as exc:
                    log.warning("rebuilding history: metric %s at %.0f failed: %s", spec.name, at, exc)
                    return
                for ref, revision in revisions.items():
                    self.history.add(revision, [o for o in observations if o.ref == ref])
        log.info("rebuilt %d rollout(s)' history from %d past tick(s) over %.0fs: %s", len(missed), len(times),
                 now - earliest, ", ".join(f"{r.ref} rev {r.revision}" for r in missed))

    def _observe(self, watched: Sequence[RolloutState], now: float, report: TickReport) -> None:
        if not watched:
            return
        revisions = {r.ref: r.revision for r in watched}
        for spec in self.config.metrics:
            observations = self._fetch(spec, watched, now, report)
            by_ref: dict[DeploymentRef, list[Observation]] = {}
            for obs in observations:
                by_ref.setdefault(obs.ref, []).append(obs)
            for ref, items in by_ref.items():
                if ref in revisions:
                    self.history.add(revisions[ref], items)

    def _fetch(
        self, spec: MetricSpec, watched: Sequence[RolloutState], now: float, report: TickReport
    ) -> list[Observation]:
        try:
            observations = self.metrics.fetch(spec, watched, now)
        except Exception as exc:
            report.query_outcomes.append((spec.name, "error"))
            report.errors.append(f"metric {spec.name}: {exc}")
            log.warning("metric %s: source failed: %s", spec.name, exc)
            return []
        outcome = "ok" if any(o.known for o in observations) else "unknown"
        report.query_outcomes.append((spec.name, outcome))
        return observations

    def _decide(self, rollout: RolloutState, now: float, report: TickReport) -> Decision:
        assessments = [self._assess(rollout, spec, now) for spec in self.config.metrics]
        report.assessments[rollout.ref] = assessments
        previous = self.memory.get(rollout.ref)
        memory, decision = policy_rules.decide(previous, rollout, assessments, now, self.config.policy)
        self.memory[rollout.ref] = memory
        report.decisions.append(decision)
        changed = previous is None or previous.phase is not memory.phase or decision.action is not Action.NONE
        level = logging.INFO if changed else logging.DEBUG
        log.log(level, "decision %s rev %d: %s (phase %s) %s", rollout.ref, rollout.revision, decision.action,
                memory.phase, decision.reason)
        return decision

    def _assess(self, rollout: RolloutState, spec: MetricSpec, now: float) -> Assessment:
        try:
            return self.scorer.assess(rollout, spec, self.history, now, self.config.policy.horizon_seconds)
        except Exception as exc:
            log.exception("scorer failed on %s %s", rollout.ref, spec.name)
            return Assessment(metric=spec.name, risk=0.0, value=None, threshold=spec.threshold,
                              direction=spec.direction, unknown=True, reason=f"{spec.name}: scorer failed: {exc}")

    def _act(self, decision: Decision, rollout: RolloutState, leader: bool, report: TickReport) -> None:
        if not leader:
            self.memory[rollout.ref] = policy_rules.not_applied(self.memory[rollout.ref])
            log.info("follower: not acting on %s (%s); the leader does", rollout.ref, decision.action)
            return
        try:
            result = self.actuator.apply(decision, rollout)
        except Exception as exc:
            self.memory[rollout.ref] = policy_rules.not_applied(self.memory[rollout.ref])
            report.actions.append(ActionOutcome(decision, None, str(exc)))
            report.errors.append(f"{decision.action} {rollout.ref}: {exc}")
            log.error("%s of %s failed, will retry next tick: %s", decision.action, rollout.ref, exc)
            return
        report.actions.append(ActionOutcome(decision, result))
        log.warning("%s %s revision %d%s: %s; %s", decision.action, rollout.ref, rollout.revision,
                    " (dry run)" if decision.dry_run else "", decision.reason, result.detail)

    def _ensure_recorded(self, watched: Sequence[RolloutState]) -> None:
        """Once per recorded action and process: its Event exists (a daemon killed after its write left none)."""
        for rollout in watched:
            if rollout.acted_revision is None:
                continue
            key = (rollout.ref, rollout.acted_revision, rollout.annotations.get(ANNOTATION_ACTION, ""))
            if key in self._recorded:
                continue
            try:
                if self.actuator.ensure_recorded(rollout):
                    self._recorded.add(key)
            except Exception:
                log.exception("checking the Event of %s revision %d failed, will retry next tick", rollout.ref,
                              rollout.acted_revision)

    def _notify(self, firing: list[Alert], resolved: list[Alert], now: float, report: TickReport) -> None:
        if not firing and not resolved:
            return
        try:
            self.notifier.send(firing, resolved, now)
        except Exception as exc:
            report.errors.append(f"alerting: {exc}")
            log.error("alerting failed: %s", exc)

