"""The engine over simulated rollouts: the whole decision loop with in-memory ports and a hand-stepped clock."""

from collections.abc import Sequence
from dataclasses import dataclass, replace

import pytest

from predictor.config import MetricSpec
from predictor.demo import SimulatedCluster, demo_config, run_demo
from predictor.detectors.rollout_scorer import ForecastScorer
from predictor.detectors.trend import ThresholdTrendScorer
from predictor.domain import Action, Assessment, DeploymentRef, Observation, RolloutState
from predictor.engine import Engine
from predictor.policy import ALERT_BLIND, ALERT_BREACH, Phase
from predictor.simulate import SCENARIO_KINDS, SimulatedRollout

START = 1_767_268_800.0


def engine_for(cluster: SimulatedCluster, action: Action = Action.UNDO, **kwargs: object) -> Engine:
    config = demo_config(action)
    return Engine(config, rollouts=cluster, metrics=cluster, actuator=cluster, notifier=cluster,
                  scorer=ThresholdTrendScorer(), **kwargs)  # type: ignore[arg-type]


def run_ticks(engine: Engine, minutes: float, start: float = START) -> None:
    for i in range(int(minutes * 4) + 1):
        engine.tick(start + i * 15.0)


@pytest.mark.parametrize("kind", [k for k in SCENARIO_KINDS if k != "healthy"])
def test_bad_releases_are_stopped_before_their_breach(kind: str) -> None:
    sim = SimulatedRollout(DeploymentRef("shop", kind.replace("_", "-")), kind, START, seed=3)
    cluster = SimulatedCluster([sim])
    run_ticks(engine_for(cluster), 15)
    config = demo_config()
    breaches = [t for spec in config.metrics if (t := sim.breach_time(spec.name, spec.threshold, START + 900))]
    assert breaches, f"the {kind} scenario must breach when left alone"
    assert len(cluster.actions) == 1, "exactly one action per revision"
    acted_at, decision = cluster.actions[0]
    assert decision.action in (Action.PAUSE, Action.UNDO), "graded by confidence: pause or undo"
    assert acted_at < min(breaches), f"acted at {acted_at - START}s, breach at {min(breaches) - START}s"


@pytest.mark.parametrize("seed", range(5))
def test_healthy_release_with_warmup_is_left_alone(seed: int) -> None:
    cluster = SimulatedCluster([SimulatedRollout(DeploymentRef("shop", "catalog"), "healthy", START, seed=seed)])
    run_ticks(engine_for(cluster), 15)
    assert cluster.actions == []
    assert cluster.alerts_sent == {}


def test_undo_resolves_the_alert() -> None:
    cluster = SimulatedCluster([SimulatedRollout(DeploymentRef("shop", "checkout"), "error_regression", START)])
    run_ticks(engine_for(cluster), 3)
    assert [a.name for a in cluster.alerts_sent.values()] == [ALERT_BREACH]
    assert [a.name for a in cluster.alerts_resolved] == [ALERT_BREACH]


def test_pause_keeps_the_alert_firing() -> None:
    cluster = SimulatedCluster([SimulatedRollout(DeploymentRef("shop", "checkout"), "error_regression", START)])
    run_ticks(engine_for(cluster, Action.PAUSE), 5)
    sim = cluster.rollouts[DeploymentRef("shop", "checkout")]
    assert sim.paused_at is not None and sim.new_pods(START + 300) == sim.new_pods(sim.paused_at)
    assert cluster.alerts_resolved == []


class BrokenMetrics:
    def __init__(self, exc: Exception | None) -> None:
        self.exc = exc

    def fetch(self, spec: MetricSpec, rollouts: Sequence[RolloutState], at: float) -> list[Observation]:
        if self.exc:
            raise self.exc
        return [Observation(r.ref, spec.name, s, at, float("nan"), error="NaN") for r in rollouts
                for s in ("deployment", "new", "old")]  # type: ignore[arg-type]

    def is_online(self) -> bool:
        return False


@pytest.mark.parametrize("exc", [TimeoutError("prometheus timed out"), None])
def test_broken_metrics_never_act_but_report_blind(exc: Exception | None) -> None:
    cluster = SimulatedCluster([SimulatedRollout(DeploymentRef("shop", "checkout"), "error_regression", START)])
    engine = Engine(demo_config(), rollouts=cluster, metrics=BrokenMetrics(exc), actuator=cluster,
                    notifier=cluster, scorer=ThresholdTrendScorer())
    run_ticks(engine, 5)
    assert cluster.actions == []
    assert [a.name for a in cluster.alerts_sent.values()] == [ALERT_BLIND]


def test_failed_action_is_retried_next_tick() -> None:
    cluster = SimulatedCluster([SimulatedRollout(DeploymentRef("shop", "checkout"), "error_regression", START)])
    calls = []
    real_apply = cluster.apply

    def flaky_apply(decision, rollout):  # type: ignore[no-untyped-def]
        calls.append(decision.time)
        if len(calls) == 1:
            raise ConnectionError("API server unreachable")
        return real_apply(decision, rollout)

    cluster.apply = flaky_apply  # type: ignore[method-assign]
    engine = engine_for(cluster)
    reports = [engine.tick(START + i * 15.0) for i in range(8)]
    assert len(calls) == 2 and calls[1] == calls[0] + 15.0
    assert any("API server unreachable" in e for r in reports for e in r.errors)
    assert len(cluster.actions) == 1


def test_follower_scores_but_never_acts_or_alerts() -> None:
    cluster = SimulatedCluster([SimulatedRollout(DeploymentRef("shop", "checkout"), "error_regression", START)])
    engine = engine_for(cluster, may_act=lambda: False)
    run_ticks(engine, 3)
    assert cluster.actions == [] and cluster.alerts_sent == {}
    engine.may_act = lambda: True
    engine.tick(START + 200.0)
    assert len(cluster.actions) == 1


def test_listing_failure_skips_the_tick() -> None:
    cluster = SimulatedCluster([])

    def broken(at: float) -> list[RolloutState]:
        raise ConnectionError("watch cache not synced")

    cluster.list_rollouts = broken  # type: ignore[method-assign]
    report = engine_for(cluster).tick(START)
    assert report.errors == ["listing rollouts failed: watch cache not synced"]


def test_demo_reports_actions_before_breach_and_spares_the_healthy_release() -> None:
    lines: list[str] = []
    outcomes = run_demo(emit=lines.append)
    by_kind = {o.kind: o for o in outcomes}
    assert by_kind["healthy"].action is Action.NONE
    for kind in ("error_regression", "memory_leak"):
        assert by_kind[kind].action in (Action.PAUSE, Action.UNDO)
        assert by_kind[kind].lead_seconds is not None and by_kind[kind].lead_seconds > 0
    assert any(("ACTION PAUSE shop/checkout" in line or "ACTION UNDO shop/checkout" in line) for line in lines)
    assert any("before error_ratio would have breached" in line for line in lines)


def test_demo_with_pause_action() -> None:
    outcomes = run_demo(config=replace(demo_config(Action.PAUSE)), emit=lambda _: None)
    assert {o.action for o in outcomes if o.kind != "healthy"} == {Action.PAUSE}
    assert all(o.escalated_at is None for o in outcomes)


class ScriptedScorer:
    """Risks by tick, the same for every metric: the engine's part is under test, not the scorer's."""

    def __init__(self, risks: Sequence[float]) -> None:
        self.risks = list(risks)
        self.ticks: list[float] = []

    def assess(self, rollout: RolloutState, spec: MetricSpec, history: object, now: float, horizon: float):
        if now not in self.ticks:
            self.ticks.append(now)
        risk = self.risks[min(len(self.ticks), len(self.risks)) - 1]
        return Assessment(metric=spec.name, risk=risk, value=1.0, threshold=spec.threshold,
                          direction=spec.direction, predicted_breach=now + 60.0, reason=f"{spec.name}: scripted")


def test_a_pause_escalates_to_one_undo_when_the_risk_becomes_sure() -> None:
    # paused below undo_threshold; the simulated Deployment stays paused; two ticks at undo_threshold undo it
    sim = SimulatedRollout(DeploymentRef("shop", "checkout"), "error_regression", START, seed=1)
    cluster = SimulatedCluster([sim])
    engine = Engine(demo_config(Action.UNDO), rollouts=cluster, metrics=cluster, actuator=cluster,
                    notifier=cluster, scorer=ScriptedScorer([0.8, 0.8, 0.8, 0.95, 0.95, 0.99, 0.99]))
    run_ticks(engine, 1.5)
    on_release = [(t - START, d.action) for t, d in cluster.actions if d.revision == 2]
    assert on_release == [(15.0, Action.PAUSE), (60.0, Action.UNDO)]
    assert "undo (escalated: paused 45s ago" in cluster.actions[1][1].reason
    assert sim.undone_at == START + 60.0


def _acted_at(kind: str, restart_at: float | None, rebuild: bool) -> float:
    """When the engine acted on a `kind` rollout; restarted (a new Engine, empty memory) at `restart_at`."""
    cluster = SimulatedCluster([SimulatedRollout(DeploymentRef("shop", "checkout"), kind, START, seed=3)])
    engine = engine_for(cluster)
    for i in range(15 * 4 + 1):
        now = START + i * 15.0
        if restart_at is not None and now >= restart_at:
            engine, restart_at = engine_for(cluster, rebuild_history=rebuild), None
        engine.tick(now)
        if cluster.actions:
            return cluster.actions[0][0]
    raise AssertionError("never acted")


@pytest.mark.parametrize("kind", ["memory_leak", "cpu_saturation"])
def test_a_restart_mid_rollout_rebuilds_the_history_and_acts_when_an_uninterrupted_engine_would(kind: str) -> None:
    steady = _acted_at(kind, None, rebuild=False)
    restart = steady - 30.0  # two ticks before the uninterrupted engine acted: a slow release, history matters
    rebuilt = _acted_at(kind, restart, rebuild=True)
    forgotten = _acted_at(kind, restart, rebuild=False)
    assert rebuilt - steady <= 15.0, f"rebuilt: acted {rebuilt - steady:.0f}s after the uninterrupted engine"
    assert forgotten - steady >= 60.0, (
        f"without the rebuild it acts {forgotten - steady:.0f}s late: the test shows nothing")


@pytest.mark.parametrize(("risk", "watched_for"), [(0.0, 300.0), (0.3, 1800.0)])
def test_a_revision_whose_evidence_still_builds_is_watched_beyond_bake(risk: float, watched_for: float) -> None:
    """The demo's bake is 5 minutes and max_watch the default 30 minutes: a quiet revision leaves scope at the end
    of its bake; one with a live risk (a forecast still building, below the alert) stays watched up to max_watch."""
    sim = SimulatedRollout(DeploymentRef("shop", "checkout"), "healthy", START, seed=1)
    cluster = SimulatedCluster([sim])
    config = demo_config(Action.UNDO)
    assert config.policy.max_watch_seconds == 1800.0
    engine = Engine(config, rollouts=cluster, metrics=cluster, actuator=cluster, notifier=cluster,
                    scorer=ScriptedScorer([risk]))
    last_watched = None
    for i in range(4 * 45):
        t = START + i * 15.0
        if engine.tick(t).watched:
            last_watched = t
    completed = sim.state(START + 3600.0).completed_at
    assert completed is not None and last_watched is not None
    assert watched_for - 15.0 < last_watched - completed <= watched_for
    assert not cluster.actions


@dataclass
class SlowLeak(SimulatedRollout):
    """Memory of new pods grows 0.015 of the limit a minute: the max over 4 pods breaches 0.9 about 22 minutes
    after a rollout that completed in 90 s, 10 minutes after its bake ended."""

    def pod_value(self, metric: str, new: bool, age: float, t: float, pod: int) -> float:
        value = super().pod_value(metric, new, age, t, pod)
        return value + 0.015 * age / 60.0 if new and metric == "memory_limit_ratio" else value


@pytest.mark.parametrize("max_watch", [600.0, 1800.0])
def test_a_leak_that_breaches_after_bake_is_still_forecast_when_watching_goes_on(max_watch: float) -> None:
    """With max_watch = bake (10 min) watching ends while the leak's trend still builds and nothing is said; with
    the default 30 min the revision stays watched (`watching_beyond_bake`) and the forecast's alert fires before
    the breach. (Without old pods or a traffic series to attribute the rise by, the scorer caps it at an alert.)"""
    sim = SlowLeak(DeploymentRef("shop", "cache"), "healthy", START, replicas=4, step_seconds=30.0, seed=5)
    cluster = SimulatedCluster([sim])
    config = demo_config(Action.PAUSE)
    config = replace(config, metrics=tuple(m for m in config.metrics if m.name == "memory_limit_ratio"),
                     policy=replace(config.policy, bake_seconds=600.0, max_watch_seconds=max_watch))
    engine = Engine(config, rollouts=cluster, metrics=cluster, actuator=cluster, notifier=cluster,
                    scorer=ForecastScorer(step_seconds=15.0))
    breach = sim.breach_time("memory_limit_ratio", 0.9, START + 3600.0)
    assert breach is not None and breach - START > 20 * 60
    phases = set()
    for i in range(int((breach - START) // 15.0)):
        engine.tick(START + i * 15.0)
        memory = engine.memory.get(sim.ref)
        phases.add(memory.phase if memory else None)
    fired = [a for a in cluster.alerts_sent.values() if a.name == ALERT_BREACH]
    if max_watch == 600.0:
        assert not fired and Phase.BEYOND_BAKE not in phases
    else:
        assert Phase.BEYOND_BAKE in phases and fired and fired[0].starts_at < breach
        assert fired[0].metric == "memory_limit_ratio"
