"""`predictor demo`: the real engine and decision core over simulated rollouts, with no cluster and no Prometheus.

The simulated cluster implements the same ports as the Kubernetes and Prometheus adapters, so what the demo
shows is what `predictor run` decides; only the data and the clock are simulated.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from predictor.config import Config, MetricSpec, PolicyConfig, Target, default_metric_pack, format_duration
from predictor.domain import (
    ACTION_SEVERITY,
    ANNOTATION_ACTED_REVISION,
    ANNOTATION_ACTION,
    ANNOTATION_REASON,
    Action,
    Alert,
    Decision,
    DeploymentRef,
    Observation,
    RolloutState,
)
from predictor.engine import Engine
from predictor.ports import ActionResult
from predictor.scoring import build_scorer
from predictor.simulate import SimulatedRollout
from predictor.status.report import report_board


class SimulatedCluster:
    """Rollout source, metric source and actuator over simulated rollouts."""

    def __init__(self, rollouts: Sequence[SimulatedRollout]) -> None:
        self.rollouts = {r.ref: r for r in rollouts}
        self.actions: list[tuple[float, Decision]] = []
        self.alerts_sent: dict[tuple[str, str, str, int, str], Alert] = {}
        self.alerts_resolved: list[Alert] = []

    # RolloutSource
    def list_rollouts(self, at: float) -> list[RolloutState]:
        return [r.state(at) for r in self.rollouts.values() if at >= r.start]

    def is_online(self) -> bool:
        return True

    # MetricSource
    def fetch(self, spec: MetricSpec, rollouts: Sequence[RolloutState], at: float) -> list[Observation]:
        result: list[Observation] = []
        for state in rollouts:
            sim = self.rollouts[state.ref]
            result += sim.observations(spec.name, at)
        return result

    # Actuator
    def apply(self, decision: Decision, rollout: RolloutState) -> ActionResult:
        sim = self.rollouts[rollout.ref]
        recorded = sim.annotations.get(ANNOTATION_ACTION, Action.NONE.value)
        if sim.annotations.get(ANNOTATION_ACTED_REVISION) == str(decision.revision) and (
                ACTION_SEVERITY[Action(recorded)] >= ACTION_SEVERITY[decision.action]):
            return ActionResult(False, "already acted on this revision")  # a pause may still become an undo
        self.actions.append((decision.time, decision))
        sim.annotations.update({
            ANNOTATION_ACTED_REVISION: str(decision.revision),
            ANNOTATION_ACTION: str(decision.action),
            ANNOTATION_REASON: decision.reason,
        })
        if decision.dry_run:
            return ActionResult(False, "dry run")
        if decision.action is Action.PAUSE:
            sim.paused_at = decision.time
        elif decision.action is Action.UNDO:
            sim.undone_at = decision.time
        return ActionResult(True, f"{decision.action} applied to the simulated Deployment")

    # Notifier
    def send(self, firing: Sequence[Alert], resolved: Sequence[Alert], now: float) -> None:
        for alert in firing:
            self.alerts_sent[alert.key] = alert
        self.alerts_resolved += resolved


@dataclass(frozen=True)
class DemoOutcome:
    ref: DeploymentRef
    kind: str
    action: Action
    acted_at: float | None
    breach_at: float | None
    """When the Deployment would have breached its SLO had nobody acted; None for a healthy release."""
    breach_metric: str | None
    reason: str
    escalated_at: float | None = None
    """When our pause was escalated to an undo (`policy.action: undo`, the risk holding at undo_threshold)."""

    @property
    def lead_seconds(self) -> float | None:
        if self.acted_at is None or self.breach_at is None:
            return None
        return self.breach_at - self.acted_at


def demo_config(action: Action | None = None) -> Config:
    """The demo's configuration: the default metric pack and policy (`action` replacing policy.action's default)."""
    return Config(
        targets=(Target(namespace="shop"),),
        metrics=default_metric_pack(),
        policy=PolicyConfig(action=action or PolicyConfig().action, interval_seconds=15.0, bake_seconds=300.0),
    )


def demo_rollouts(start: float, seed: int) -> list[SimulatedRollout]:
    return [
        SimulatedRollout(DeploymentRef("shop", "checkout"), "error_regression", start, seed=seed),
        SimulatedRollout(DeploymentRef("shop", "cart"), "memory_leak", start + 60.0, seed=seed + 1),
        SimulatedRollout(DeploymentRef("shop", "catalog"), "healthy", start + 30.0, seed=seed + 2),
    ]


def run_demo(
    *,
    config: Config | None = None,
    rollouts: Sequence[SimulatedRollout] | None = None,
    start: float | None = None,
    duration_seconds: float = 720.0,
    seed: int = 7,
    realtime_factor: float = 0.0,
    emit: Callable[[str], None] = print,
    report: Path | None = None,
) -> list[DemoOutcome]:
    """Simulate, decide and act; print progress once per simulated minute. `realtime_factor` seconds of wall
    time per simulated tick make the progress readable (0 runs flat out). With `report`, the status pages of every
    rollout are written there as static files, with an index.html."""
    config = config or demo_config()
    start = start if start is not None else float(int(datetime(2026, 1, 1, 12, tzinfo=UTC).timestamp()))
    sims = list(rollouts) if rollouts is not None else demo_rollouts(start, seed)
    cluster = SimulatedCluster(sims)
    scorer, _ = build_scorer(config, scorer=config.models.scorer)
    board, writer = report_board(report, "predictor demo: the simulated rollouts") if report else (None, None)
    engine = Engine(config, rollouts=cluster, metrics=cluster, actuator=cluster, notifier=cluster, scorer=scorer,
                    board=board)
    interval = config.policy.interval_seconds
    emit(f"predictor demo: {len(sims)} simulated rollouts, policy action={config.policy.action}, "
         f"scorer {config.models.scorer}, tick {interval:g}s, horizon {format_duration(config.policy.horizon_seconds)}")
    for sim in sims:
        emit(f"  {sim.ref}: {sim.replicas} replicas, one pod replaced every {sim.step_seconds:g}s, "
             f"release {sim.kind.replace('_', ' ')}")
    steps = int(duration_seconds // interval)
    seen_actions = 0
    for step in range(steps + 1):
        now = start + step * interval
        report = engine.tick(now)
        for outcome in report.actions:
            seen_actions += 1
            d = outcome.decision
            emit(f"  t+{format_duration(now - start):>7} ACTION {d.action.upper()} {d.ref} revision {d.revision}: "
                 f"{d.reason}")
        if step % int(max(60.0 // interval, 1)) == 0:
            emit(_progress_line(now - start, now, cluster, report.decisions))
        if realtime_factor:
            time.sleep(realtime_factor)
    outcomes = _outcomes(cluster, sims, config, start + duration_seconds)
    emit("")
    emit("what predictor did:")
    for o in outcomes:
        emit("  " + _describe(o, start))
    if writer is not None:
        emit(f"report: {writer.finish(engine.board)}")
    return outcomes


def _progress_line(elapsed: float, now: float, cluster: SimulatedCluster, decisions: Sequence[Decision]) -> str:
    parts = []
    by_ref = {d.ref: d for d in decisions}
    for ref, sim in cluster.rollouts.items():
        if now < sim.start:
            parts.append(f"{ref.name} waiting")
            continue
        state = sim.state(now)
        decision = by_ref.get(ref)
        status = "undone" if sim.undone_at else "paused" if sim.paused_at else (
            "done" if state.completed_at else "rolling")
        risk = f"risk {decision.risk:.2f}" if decision else "unwatched"
        parts.append(f"{ref.name} {state.updated_replicas}/{state.desired_replicas} {status:7} {risk}")
    return f"  t+{format_duration(elapsed):>7} | " + " | ".join(parts)


def _outcomes(
    cluster: SimulatedCluster, sims: Sequence[SimulatedRollout], config: Config, until: float
) -> list[DemoOutcome]:
    outcomes = []
    for sim in sims:
        breach_at, breach_metric = None, None
        for spec in config.metrics:
            when = sim.breach_time(spec.name, spec.threshold, until)
            if when is not None and (breach_at is None or when < breach_at):
                breach_at, breach_metric = when, spec.name
        acted = [d for _, d in cluster.actions if d.ref == sim.ref]
        first = acted[0] if acted else None
        escalation = acted[1] if len(acted) > 1 and acted[1].action is Action.UNDO else None
        outcomes.append(DemoOutcome(
            ref=sim.ref, kind=sim.kind, action=first.action if first else Action.NONE,
            acted_at=first.time if first else None, breach_at=breach_at, breach_metric=breach_metric,
            reason=first.reason if first else "", escalated_at=escalation.time if escalation else None,
        ))
    return outcomes


def _describe(o: DemoOutcome, start: float) -> str:
    what = o.kind.replace("_", " ")
    if o.action is Action.NONE:
        verdict = "no action" + (" - but it breached!" if o.breach_at else " (correct: the release is healthy)")
        return f"{o.ref} ({what}): {verdict}"
    when = f"t+{format_duration(o.acted_at - start)}" if o.acted_at is not None else "?"
    if o.lead_seconds is not None:
        lead = (f"{format_duration(o.lead_seconds)} before {o.breach_metric} would have breached"
                if o.lead_seconds >= 0 else f"{format_duration(-o.lead_seconds)} AFTER the breach")
    else:
        lead = "no breach would have happened (a false alarm)"
    then = f", undo at t+{format_duration(o.escalated_at - start)}" if o.escalated_at is not None else ""
    return f"{o.ref} ({what}): {o.action} at {when}, {lead}{then}"

