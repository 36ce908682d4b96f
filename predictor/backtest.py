"""`predictor backtest`: the live loop replayed over Prometheus history with a simulated clock, always dry-run.

Rollout state comes from kube-state-metrics series and metrics from the same queries as live, each evaluated at
the simulated time, so a decision at t uses only data up to t: what it decides does not change with `--end`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from predictor.config import Config, format_time
from predictor.detectors.base import Scorer
from predictor.detectors.trend import ThresholdTrendScorer
from predictor.domain import Alert, Decision, RolloutState
from predictor.engine import Engine
from predictor.ports import ActionResult, MetricSource, RolloutSource

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


def replay(
    config: Config, *, rollouts: RolloutSource, metrics: MetricSource, start: float, end: float,
    step_seconds: float, scorer: Scorer | None = None,
) -> list[Decision]:
    """Tick from `start` to `end` (inclusive) and return the decisions that asked for an action."""
    config = replace(config, policy=replace(config.policy, dry_run=True))
    actuator = RecordingActuator()
    engine = Engine(config, rollouts=rollouts, metrics=metrics, actuator=actuator, notifier=DiscardingNotifier(),
                    scorer=scorer or ThresholdTrendScorer())
    ticks = int((end - start) // step_seconds)
    for index in range(ticks + 1):
        report = engine.tick(start + index * step_seconds)
        for error in report.errors:
            log.debug("backtest tick %s: %s", format_time(report.time), error)
    return actuator.decisions


def run_backtest(config: Config, *, start: float, end: float, step_seconds: float, output: Path) -> int:
    from predictor.rollouts.replay import KubeStateMetricsRolloutSource
    from predictor.scoring import build_scorer
    from predictor.sources.prometheus import PrometheusMetricSource

    metrics = PrometheusMetricSource(config.prometheus)
    rollouts = KubeStateMetricsRolloutSource(config.prometheus, config.targets)
    scorer, _ = build_scorer(config, scorer=config.models.scorer)
    decisions = replay(config, rollouts=rollouts, metrics=metrics, start=start, end=end, step_seconds=step_seconds,
                       scorer=scorer)
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", encoding="utf-8") as handle:
        for decision in decisions:
            handle.write(json.dumps(action_record(decision)) + "\n")
    return len(decisions)
