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
from predictor import safety
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
from predictor.ports import ActionResult, Actuator, KillSwitch, MetricSource, Notifier, RolloutSource
from predictor.status.board import StatusBoard

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
    kill_switch: bool = False
    budget_spent: int = 0
    """Pauses and undos within the action budget's window after this tick."""
    dependencies: dict[str, str | None] = field(default_factory=dict)
    """What this tick saw of its dependencies: "prometheus" (when it queried) and "kubernetes", None when up,
    else why not."""
    withheld: list[tuple[Decision, str]] = field(default_factory=list)
    """Pauses and undos the safety limits turned into alerts, newly this tick (decision, why)."""


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
        kill_switch: KillSwitch | None = None,
        board: StatusBoard | None = None,
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
        self.kill_switch = kill_switch
        self.history = MetricHistory(config.policy.lookback_seconds)
        self.memory: dict[DeploymentRef, RolloutMemory] = {}
        self._recorded: set[tuple[DeploymentRef, int, str]] = set()
        """Actions recorded on Deployments whose Event this process has made sure of (`ensure_recorded`)."""
        self.rebuild_history = rebuild_history
        """`predictor run`: a rollout first seen after it started gets its history re-read (see `_rebuild`)."""
        self._seen: set[tuple[DeploymentRef, int]] = set()
        self._own_actions: list[safety.SpentAction] = []
        """Pauses and undos this process carried out (the watch cache may not show their records yet)."""
        self._failing_metrics: set[str] = set()
        self._reported: set[object] = set()
        """Ignored annotations and withheld actions already logged at WARNING: once each, not every tick."""
        self.board = board if board is not None else StatusBoard()
        """What the status API, pages and reports show: recent values, forecasts and decisions per rollout."""

    def tick(self, now: float) -> TickReport:
        report = TickReport(time=now)
        try:
            states = self.rollouts.list_rollouts(now)
        except Exception as exc:
            report.errors.append(f"listing rollouts failed: {exc}")
            report.dependencies["kubernetes"] = f"listing rollouts failed: {exc}"
            # DEBUG: the daemon logs one WARNING when Kubernetes goes down and one INFO when it is back.
            log.debug("tick skipped: listing rollouts failed: %s", exc)
            return report
        report.dependencies["kubernetes"] = None if self.rollouts.is_online() else (
            "watch failing: rollouts served from the last state seen")
        report.kill_switch = self.kill_switch.engaged() if self.kill_switch is not None else False
        watched = [s for s in states if policy_rules.in_scope(s, now, self.config.policy, self.memory.get(s.ref))
                   and not self._opted_out(s)]
        report.watched = len(watched)
        self.board.begin_tick(now, watched)
        resolved = self._retire(watched, now)
        self._rebuild(watched, now)
        self._observe(watched, now, report)
        self._watch_queries(report)
        leader = self.may_act()
        if leader:
            self._ensure_recorded(watched)
        for rollout in watched:
            decision = self._decide(rollout, now, report)
            resolved.extend(decision.resolved)
            if decision.action is not Action.NONE:
                self._act(decision, rollout, leader, states, report)
        report.budget_spent = len(self._spent(states, now))
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
                    self.board.observe(ref, revisions[ref], spec, items)

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
        if any(o.known for o in observations):
            outcome = "ok"
        elif any(o.failed for o in observations):
            outcome = "error"
            report.errors.append(f"metric {spec.name}: {next(o.error for o in observations if o.failed)}")
        else:
            outcome = "unknown"
        report.query_outcomes.append((spec.name, outcome))
        return observations

    def _watch_queries(self, report: TickReport) -> None:
        """Prometheus is down when every query failed (the daemon logs that once). While it is up, a metric whose
        query keeps failing is one WARNING when it starts and one INFO when it answers again."""
        if not report.query_outcomes:
            return
        failed = {metric for metric, outcome in report.query_outcomes if outcome == "error"}
        if len(failed) == len(report.query_outcomes):
            first = next((e for e in report.errors if e.startswith("metric ")), "every query failed")
            report.dependencies["prometheus"] = first
            return
        report.dependencies["prometheus"] = None
        for metric in sorted(failed - self._failing_metrics):
            detail = next((e for e in report.errors if e.startswith(f"metric {metric}: ")), "")
            log.warning("%s (retried every tick)", detail)
        for metric in sorted(self._failing_metrics - failed):
            log.info("metric %s: query answering again", metric)
        self._failing_metrics = failed

    def _opted_out(self, rollout: RolloutState) -> bool:
        found = safety.opted_out(rollout)
        if isinstance(found, safety.AnnotationProblem):
            self._warn_once(found, str(found))
            return False
        if found:
            self._warn_once(("opted out", rollout.ref), f"deployment {rollout.ref}: not watched "
                            f"(annotation predictor.io/enabled: \"false\")", level=logging.INFO)
        return found

    def _warn_once(self, key: object, message: str, level: int = logging.WARNING) -> None:
        if key in self._reported:
            log.debug("%s", message)
            return
        self._reported.add(key)
        log.log(level, "%s", message)

    def _decide(self, rollout: RolloutState, now: float, report: TickReport) -> Decision:
        chosen = safety.overrides(rollout, self.config.policy, self.config.metrics)
        for problem in chosen.problems:
            self._warn_once(problem, str(problem))
        assessments = [self._assess(rollout, spec, now) for spec in chosen.metrics]
        report.assessments[rollout.ref] = assessments
        previous = self.memory.get(rollout.ref)
        memory, decision = policy_rules.decide(previous, rollout, assessments, now, chosen.policy)
        self.memory[rollout.ref] = memory
        report.decisions.append(decision)
        self.board.assessed(rollout, assessments, decision, str(memory.phase))
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

    def _spent(self, states: Sequence[RolloutState], now: float) -> list[safety.SpentAction]:
        window = self.config.safety.budget_seconds
        self._own_actions = [a for a in self._own_actions if now - window < a.at]
        return safety.spent_within([*safety.recorded_actions(states), *self._own_actions], now, window)

    def _act(self, decision: Decision, rollout: RolloutState, leader: bool, states: Sequence[RolloutState],
             report: TickReport) -> None:
        if not leader:
            self.memory[rollout.ref] = policy_rules.not_applied(self.memory[rollout.ref])
            log.info("follower: not acting on %s (%s); the leader does", rollout.ref, decision.action)
            self.board.outcome(decision, "not applied (follower)")
            return
        why = safety.withheld_because(decision, report.kill_switch, self._spent(states, decision.time),
                                      self.config.safety)
        if why is not None:
            self.memory[rollout.ref] = safety.withhold(self.memory[rollout.ref], decision, why)
            key = ("withheld", rollout.ref, rollout.revision, decision.action, why.split(" (")[0])
            if key not in self._reported:
                report.withheld.append((decision, why))
            self._warn_once(key, f"{rollout.ref} revision {rollout.revision}: "
                            f"{safety.withheld_reason(decision, why)}; {decision.reason}")
            self.board.outcome(decision, f"withheld: {why}")
            return
        try:
            result = self.actuator.apply(decision, rollout)
        except Exception as exc:
            self.memory[rollout.ref] = policy_rules.not_applied(self.memory[rollout.ref])
            report.actions.append(ActionOutcome(decision, None, str(exc)))
            report.errors.append(f"{decision.action} {rollout.ref}: {exc}")
            log.error("%s of %s failed, will retry next tick: %s", decision.action, rollout.ref, exc)
            self.board.outcome(decision, f"failed: {exc}")
            return
        report.actions.append(ActionOutcome(decision, result))
        if decision.action in safety.LIMITED and (result.applied or decision.dry_run):
            self._own_actions.append(safety.SpentAction(rollout.ref, rollout.revision, decision.action,
                                                        decision.time))
        self.board.outcome(decision, f"{'applied' if result.applied else 'unchanged'}: {result.detail}")
        log.warning("%s %s revision %d%s: %s; %s", decision.action, rollout.ref, rollout.revision,
                    " (dry run)" if decision.dry_run else "", decision.reason, result.detail)

    def _ensure_recorded(self, watched: Sequence[RolloutState]) -> None:
        """Once per recorded action and process: its Event exists (a daemon killed after its write left none)."""
        ensure = getattr(self.actuator, "ensure_recorded", None)
        if ensure is None:
            return  # an actuator that records an action in one write (ports.RecordKeeper) has nothing to repair
        for rollout in watched:
            if rollout.acted_revision is None:
                continue
            key = (rollout.ref, rollout.acted_revision, rollout.annotations.get(ANNOTATION_ACTION, ""))
            if key in self._recorded:
                continue
            try:
                if ensure(rollout):
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

