"""The daemon's own metrics (served on /metrics) and its log formats. Called by the daemon only."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from predictor.config import format_duration
from predictor.domain import Action
from predictor.engine import TickReport

log = logging.getLogger(__name__)
DEPENDENCIES = ("prometheus", "kubernetes", "alertmanager")


class DaemonMetrics:
    """One registry per daemon, so tests and several daemons in one process never share counters."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.ticks = Counter("predictor_ticks", "Ticks run.", registry=r)
        self.tick_errors = Counter("predictor_tick_errors", "Errors met during ticks (sources, actions, alerting).",
                                   registry=r)
        self.tick_duration = Histogram("predictor_tick_duration_seconds", "Wall time of one tick.", registry=r,
                                       buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 60))
        self.queries = Counter("predictor_queries", "Metric queries by outcome (ok, unknown, error).",
                               ["metric", "outcome"], registry=r)
        self.decisions = Counter("predictor_decisions", "Decisions by action (none, alert, pause, undo).",
                                 ["action"], registry=r)
        self.actions = Counter("predictor_actions", "Actions carried out by outcome (applied, skipped, failed).",
                               ["action", "outcome"], registry=r)
        self.watched = Gauge("predictor_watched_rollouts", "Rollouts watched on the last tick.", registry=r)
        self.blind = Gauge("predictor_blind_rollouts", "Watched rollouts with no usable metrics.", registry=r)
        self.risk = Gauge("predictor_rollout_risk", "Risk (0..1) per watched Deployment and metric.",
                          ["namespace", "deployment", "metric"], registry=r)
        self.lead = Histogram("predictor_action_lead_seconds", "Predicted breach time minus action time.",
                              registry=r, buckets=(0, 30, 60, 120, 300, 600, 900, 1800))
        self.is_leader = Gauge("predictor_is_leader", "1 when this replica may act.", registry=r)
        self.kill_switch = Gauge("predictor_kill_switch_engaged", "1 while the kill switch turns actions into alerts.",
                                 registry=r)
        self.budget_spent = Gauge("predictor_action_budget_spent", "Pauses and undos within the action budget's "
                                  "window (safety.budget.per).", registry=r)
        self.budget_limit = Gauge("predictor_action_budget_limit", "safety.budget.actions.", registry=r)
        self.withheld = Counter("predictor_actions_withheld", "Pauses and undos turned into alerts by a safety "
                                "limit, once per revision and cause.", ["action", "cause"], registry=r)
        self.dependency_up = Gauge("predictor_dependency_up", "1 while the dependency answers (prometheus: the "
                                   "last tick's queries; kubernetes: listing and watches; alertmanager: /-/ready).",
                                   ["dependency"], registry=r)
        self.model_loaded = Gauge("predictor_model_loaded", "1 per loaded model artifact.", ["model", "version"],
                                  registry=r)

    def observe(self, report: TickReport, duration_seconds: float) -> None:
        self.ticks.inc()
        self.tick_duration.observe(duration_seconds)
        self.tick_errors.inc(len(report.errors))
        self.watched.set(report.watched)
        self.blind.set(report.blind)
        for metric, outcome in report.query_outcomes:
            self.queries.labels(metric, outcome).inc()
        for decision in report.decisions:
            self.decisions.labels(str(decision.action)).inc()
        self.risk.clear()
        for ref, assessments in report.assessments.items():
            for assessment in assessments:
                if not assessment.unknown:
                    self.risk.labels(ref.namespace, ref.name, assessment.metric).set(assessment.risk)
        self.kill_switch.set(1 if report.kill_switch else 0)
        self.budget_spent.set(report.budget_spent)
        for decision, why in report.withheld:
            self.withheld.labels(str(decision.action), "kill_switch" if why.startswith("kill switch") else
                                 "budget").inc()
        for outcome in report.actions:
            decision = outcome.decision
            state = "failed" if outcome.error else "applied" if outcome.result and outcome.result.applied else "skipped"
            self.actions.labels(str(decision.action), state).inc()
            if decision.action is not Action.NONE and decision.predicted_breach is not None:
                self.lead.observe(max(decision.predicted_breach - decision.time, 0.0))


class DependencyWatch:
    """`predictor_dependency_up{dependency}` and one log line per change of state, not one per tick: a WARNING
    when a dependency goes down (with why), an INFO when it is back (with how long it was down)."""

    def __init__(self, gauge: Gauge, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._gauge = gauge
        self._monotonic = monotonic
        self._down_since: dict[str, float] = {}
        self._seen: set[str] = set()

    def report(self, dependency: str, problem: str | None) -> None:
        """`problem` None: up; else why it is down."""
        self._gauge.labels(dependency).set(0 if problem else 1)
        first = dependency not in self._seen
        self._seen.add(dependency)
        if problem is not None:
            if dependency not in self._down_since:
                self._down_since[dependency] = self._monotonic()
                log.warning("%s is down: %s (retried every tick; no action is taken on missing data)",
                            dependency, problem)
            else:
                log.debug("%s still down: %s", dependency, problem)
        elif dependency in self._down_since:
            down_for = self._monotonic() - self._down_since.pop(dependency)
            log.info("%s is back after %s", dependency, format_duration(down_for))
        elif first:
            log.debug("%s is up", dependency)

    def is_down(self, dependency: str) -> bool:
        return dependency in self._down_since


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log pipelines in the cluster."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(fmt: str, level: str) -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("kubernetes", "apscheduler"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # urllib3 warns of each connection retry; the adapters report the request's failure once it is final.
    logging.getLogger("urllib3").setLevel(max(logging.ERROR, root.level))
