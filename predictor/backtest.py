"""`predictor backtest`: the live loop replayed over Prometheus history with a simulated clock, always dry-run.

Rollout state comes from kube-state-metrics series and metrics from the same queries as live, each evaluated at
the simulated time, so a decision at t uses only data up to t: what it decides does not change with `--end`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from predictor.config import Config, format_time
from predictor.detectors.base import Scorer
from predictor.detectors.trend import ThresholdTrendScorer
from predictor.domain import Alert, Decision, DeploymentRef, RolloutState
from predictor.engine import Engine, TickReport
from predictor.ports import ActionResult, MetricSource, RolloutSource
from predictor.status.board import StatusBoard

log = logging.getLogger(__name__)


class RecordingActuator:
    """Dry-run actuator: keeps the decisions, touches nothing."""

    def __init__(self) -> None:
        self.decisions: list[Decision] = []

    def apply(self, decision: Decision, rollout: RolloutState) -> ActionResult:
        self.decisions.append(decision)
        return ActionResult(False, "backtest: dry run")


class DiscardingNotifier:
    def send(self, firing: Sequence[Alert], resolved: Sequence[Alert], now: float) -> None:
        return None


def action_record(decision: Decision) -> dict[str, object]:
    """The JSON Lines object of one action."""
    return {
        "time": format_time(decision.time),
        "namespace": decision.ref.namespace,
        "deployment": decision.ref.name,
        "revision": decision.revision,
        "action": str(decision.action),
        "risk": round(decision.risk, 4),
        "metric": decision.metric,
        "predicted_breach": format_time(decision.predicted_breach),
        "reason": decision.reason,
    }


@dataclass(frozen=True)
class ReplayResult:
    """What a replay did, and on how much data: the decisions that asked for an action, and the counts a user
    needs to tell "nothing to act on" from "nothing seen"."""

    decisions: list[Decision]
    ticks: int
    ticks_with_data: int
    """Ticks on which kube-state-metrics listed a targeted Deployment and, if a rollout was in scope, some
    metric had a value."""
    rollouts: int
    """Rollouts (Deployment and revision) in scope on at least one tick."""
    ticks_in_scope: int = 0
    """Ticks with a rollout in scope."""
    ticks_with_metrics: int = 0
    """Of those, ticks on which some metric had a value."""
    first_problem: str | None = None
    """Why the first tick without data had none (a failed listing, or an unknown metric's reason)."""

    def summary(self, output: Path) -> str:
        return (f"backtest: {self.rollouts} rollout(s) replayed, {self.ticks_with_data} of {self.ticks} ticks with "
                f"data, {len(self.decisions)} action(s) written to {output}")

    @property
    def blind(self) -> bool:
        """Nothing was seen: no tick with data, or rollouts in scope but never a metric value."""
        return self.ticks_with_data == 0 or (self.ticks_in_scope > 0 and self.ticks_with_metrics == 0)


class _CountingRollouts:
    """The replay's rollout source, counting what each listing returned."""

    def __init__(self, inner: RolloutSource) -> None:
        self.inner = inner
        self.listed = 0

    def list_rollouts(self, at: float) -> list[RolloutState]:
        self.listed = 0
        states = self.inner.list_rollouts(at)
        self.listed = len(states)
        return states

    def is_online(self) -> bool:
        return self.inner.is_online()


def tick_count(start: float, end: float, step_seconds: float) -> int:
    """Ticks from `start` to `end`, both included."""
    return int((end - start) // step_seconds) + 1


def replay(
    config: Config, *, rollouts: RolloutSource, metrics: MetricSource, start: float, end: float,
    step_seconds: float, scorer: Scorer | None = None,
) -> list[Decision]:
    """Tick from `start` to `end` (inclusive) and return the decisions that asked for an action."""
    return replay_counted(config, rollouts=rollouts, metrics=metrics, start=start, end=end,
                          step_seconds=step_seconds, scorer=scorer).decisions


def replay_counted(
    config: Config, *, rollouts: RolloutSource, metrics: MetricSource, start: float, end: float,
    step_seconds: float, scorer: Scorer | None = None, board: StatusBoard | None = None,
) -> ReplayResult:
    """As `replay`, with the counts of `ReplayResult`."""
    config = replace(config, policy=replace(config.policy, dry_run=True))
    actuator = RecordingActuator()
    counting = _CountingRollouts(rollouts)
    engine = Engine(config, rollouts=counting, metrics=metrics, actuator=actuator, notifier=DiscardingNotifier(),
                    scorer=scorer or ThresholdTrendScorer(), board=board)
    ticks = tick_count(start, end, step_seconds)
    with_data = in_scope = with_metrics = 0
    seen: set[tuple[DeploymentRef, int]] = set()
    first_problem: str | None = None
    for index in range(ticks):
        report = engine.tick(start + index * step_seconds)
        for error in report.errors:
            log.debug("backtest tick %s: %s", format_time(report.time), error)
        seen.update((d.ref, d.revision) for d in report.decisions)
        measured = any(outcome == "ok" for _, outcome in report.query_outcomes)
        if report.watched:
            in_scope += 1
            with_metrics += int(measured)
        if counting.listed and (measured or not report.watched):
            with_data += 1
        elif first_problem is None:
            first_problem = _why_no_data(report, counting.listed)
    return ReplayResult(actuator.decisions, ticks, with_data, len(seen), in_scope, with_metrics, first_problem)


def _why_no_data(report: TickReport, listed: int) -> str:
    when = format_time(report.time)
    if report.errors and not listed:
        return f"at {when}: {report.errors[0]}"
    if not listed:
        return f"at {when}: kube-state-metrics lists no Deployment of the targets (kube_deployment_spec_replicas)"
    reasons = [a.reason for items in report.assessments.values() for a in items if a.unknown and a.reason]
    return f"at {when}: no metric had a value ({reasons[0] if reasons else 'no reason given'})"


def write_actions(output: Path, decisions: Sequence[Decision]) -> None:
    """The JSON Lines file of `predictor backtest`: one `action_record` per line (an empty file for none)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", encoding="utf-8") as handle:
        for decision in decisions:
            handle.write(json.dumps(action_record(decision)) + "\n")


def run_backtest(config: Config, *, start: float, end: float, step_seconds: float, output: Path,
                 report: Path | None = None) -> ReplayResult:
    """Replay and write the actions; with `report`, the status pages of every rollout replayed and an index."""
    from predictor.rollouts.replay import KubeStateMetricsRolloutSource
    from predictor.scoring import build_scorer
    from predictor.sources.prometheus import PrometheusMetricSource
    from predictor.status.report import report_board

    metrics = PrometheusMetricSource(config.prometheus)
    rollouts = KubeStateMetricsRolloutSource(config.prometheus, config.targets)
    scorer, _ = build_scorer(config, scorer=config.models.scorer)
    board, writer = report_board(report, "predictor backtest: the rollouts replayed") if report else (None, None)
    result = replay_counted(config, rollouts=rollouts, metrics=metrics, start=start, end=end,
                            step_seconds=step_seconds, scorer=scorer, board=board)
    write_actions(output, result.decisions)
    if writer is not None and board is not None:
        writer.finish(board)
    return result
