"""Safety limits: the pure rules of `predictor.safety`, and the engine applying them over simulated rollouts."""

import logging
from dataclasses import replace

import pytest

from predictor import safety
from predictor.config import ConfigError, SafetyConfig, parse_config
from predictor.demo import SimulatedCluster, demo_config
from predictor.detectors.trend import ThresholdTrendScorer
from predictor.domain import (
    ANNOTATION_ACTED_AT,
    ANNOTATION_ACTED_REVISION,
    ANNOTATION_ACTION,
    ANNOTATION_DRY_RUN,
    Action,
    Decision,
    DeploymentRef,
    DryRunRecord,
    RolloutState,
    parse_dry_run_record,
)
from predictor.engine import Engine
from predictor.policy import ALERT_BREACH
from predictor.simulate import SimulatedRollout

START = 1_767_268_800.0
STAMP = "2026-01-01T12:00:00Z"  # START


def state(name: str = "checkout", revision: int = 2, **annotations: str) -> RolloutState:
    return RolloutState(ref=DeploymentRef("shop", name), revision=revision, new_hash="abc", old_hashes=("def",),
                        desired_replicas=4, updated_replicas=1, ready_new_replicas=1, old_replicas=3,
                        started_at=START - 60, annotations=annotations)


def decision(action: Action, name: str = "checkout") -> Decision:
    return Decision(ref=DeploymentRef("shop", name), revision=2, time=START, action=action, risk=0.95, reason="x")


# --- per-Deployment annotations ----------------------------------------------------------------------------


def test_opt_out_takes_exactly_false_and_a_typo_keeps_the_deployment_watched() -> None:
    assert safety.opted_out(state(**{"predictor.io/enabled": "false"})) is True
    assert safety.opted_out(state(**{"predictor.io/enabled": "True"})) is False
    assert safety.opted_out(state()) is False
    problem = safety.opted_out(state(**{"predictor.io/enabled": "nope"}))
    assert isinstance(problem, safety.AnnotationProblem)
    assert str(problem) == ("deployment shop/checkout: annotation predictor.io/enabled: expected \"true\" or "
                            "\"false\", got 'nope' (ignored)")


def test_overrides_replace_the_action_and_thresholds_and_ignore_bad_values() -> None:
    config = demo_config(Action.PAUSE)
    rollout = state(**{
        "predictor.io/policy.action": "undo",
        "predictor.io/threshold.error_ratio": "0.2",
        "predictor.io/threshold.latency_p99": "-1",
        "predictor.io/threshold.nope": "1",
        "predictor.io/threshold.memory_limit_ratio": "lots",
    })
    chosen = safety.overrides(rollout, config.policy, config.metrics)
    assert chosen.policy.action is Action.UNDO
    thresholds = {spec.name: spec.threshold for spec in chosen.metrics}
    assert thresholds["error_ratio"] == 0.2
    assert thresholds["latency_p99"] == config.metric("latency_p99").threshold
    assert thresholds["memory_limit_ratio"] == config.metric("memory_limit_ratio").threshold
    messages = sorted(str(p) for p in chosen.problems)
    assert len(messages) == 3
    assert any("threshold.latency_p99: expected a number above 0 with direction above" in m for m in messages)
    assert any("threshold.nope: expected a configured metric (" in m for m in messages)
    assert any("threshold.memory_limit_ratio: expected a number, got 'lots'" in m for m in messages)
    bad_action = safety.overrides(state(**{"predictor.io/policy.action": "delete"}), config.policy, config.metrics)
    assert bad_action.policy.action is Action.PAUSE
    assert "expected one of pause, undo, alert, got 'delete'" in str(bad_action.problems[0])


def test_a_ratio_threshold_above_one_is_refused_as_in_the_config() -> None:
    config = demo_config(Action.PAUSE)
    chosen = safety.overrides(state(**{"predictor.io/threshold.error_ratio": "5"}), config.policy, config.metrics)
    assert "expected at most 1 with unit ratio" in str(chosen.problems[0])


# --- the budget ----------------------------------------------------------------------------------------------


def test_spent_actions_are_read_back_from_the_deployments_records() -> None:
    live = state("a", **{ANNOTATION_ACTED_REVISION: "2", ANNOTATION_ACTION: "undo", ANNOTATION_ACTED_AT: STAMP})
    alert_only = state("b", **{ANNOTATION_ACTED_REVISION: "2", ANNOTATION_ACTION: "alert", ANNOTATION_ACTED_AT: STAMP})
    undated = state("c", **{ANNOTATION_ACTED_REVISION: "2", ANNOTATION_ACTION: "pause", ANNOTATION_ACTED_AT: "soon"})
    dry = state("d", **{ANNOTATION_DRY_RUN: str(DryRunRecord(Action.PAUSE, 7, STAMP))})
    found = safety.recorded_actions([live, alert_only, undated, dry])
    assert [(a.ref.name, a.revision, a.action, a.at) for a in found] == [
        ("a", 2, Action.UNDO, START), ("d", 7, Action.PAUSE, START)]


def test_the_window_counts_each_action_once_at_its_earliest_time() -> None:
    ref = DeploymentRef("shop", "a")
    actions = [safety.SpentAction(ref, 2, Action.PAUSE, START), safety.SpentAction(ref, 2, Action.PAUSE, START + 5),
               safety.SpentAction(ref, 2, Action.UNDO, START + 10),
               safety.SpentAction(DeploymentRef("shop", "b"), 1, Action.PAUSE, START - 601)]
    spent = safety.spent_within(actions, START + 10, 600)
    assert [(a.action, a.at) for a in spent] == [(Action.PAUSE, START), (Action.UNDO, START + 10)]
    assert safety.spent_within(actions, START + 600, 600) == [spent[1]]


def test_withheld_when_the_kill_switch_is_engaged_or_the_budget_spent() -> None:
    limits = SafetyConfig(budget_actions=2, budget_seconds=600)
    ref = DeploymentRef("shop", "a")
    one = [safety.SpentAction(ref, 2, Action.PAUSE, START)]
    two = [*one, safety.SpentAction(DeploymentRef("shop", "b"), 3, Action.UNDO, START)]
    assert safety.withheld_because(decision(Action.PAUSE), False, one, limits) is None
    assert safety.withheld_because(decision(Action.ALERT), True, two, limits) is None
    assert "kill switch engaged" in (safety.withheld_because(decision(Action.UNDO), True, [], limits) or "")
    why = safety.withheld_because(decision(Action.PAUSE), False, two, limits)
    assert why == ("action budget spent (2 of 2 pauses and undos within 10m00s: pause shop/a, undo shop/b)")


def test_parse_dry_run_record_round_trips_and_refuses_the_live_values() -> None:
    record = DryRunRecord(Action.UNDO, 12, STAMP)
    assert parse_dry_run_record(str(record)) == record
    for text in ("true", "false", "", None, "would delete revision 1 at x", "would pause revision -1 at x"):
        assert parse_dry_run_record(text) is None


# --- the config ----------------------------------------------------------------------------------------------


TARGETS = {"targets": [{"namespace": "shop"}]}


def test_safety_config_defaults_and_errors() -> None:
    assert parse_config(TARGETS).safety == SafetyConfig()
    parsed = parse_config({**TARGETS, "safety": {"budget": {"actions": 5, "per": "30m"},
                                      "kill_switch": {"configmap": "stop-it", "namespace": "ops"}}}).safety
    assert parsed == SafetyConfig(5, 1800.0, "stop-it", "ops")
    with pytest.raises(ConfigError) as caught:
        parse_config({**TARGETS, "safety": {"budget": {"actions": 0, "per": "-1m", "every": 1},
                                 "kill_switch": {"configmap": "Stop_It"}}})
    assert caught.value.errors == [
        "safety.budget.every: unknown field (allowed: actions, per), got 1",
        "safety.kill_switch.configmap: expected a ConfigMap name (lower case letters, digits, '-' and '.'), got "
        "'Stop_It'",
        "safety.budget.actions: expected a whole number of at least 1, got 0",
        "safety.budget.per: expected a positive duration, got '-1m'",
    ]


# --- the engine ----------------------------------------------------------------------------------------------


class Switch:
    def __init__(self) -> None:
        self.on = False
        self.reads = 0

    def engaged(self) -> bool:
        self.reads += 1
        return self.on


def engine_for(cluster: SimulatedCluster, *, budget: int = 3, switch: Switch | None = None,
               action: Action = Action.PAUSE) -> Engine:
    config = demo_config(action)
    config = replace(config, safety=replace(config.safety, budget_actions=budget))
    return Engine(config, rollouts=cluster, metrics=cluster, actuator=cluster, notifier=cluster,
                  scorer=ThresholdTrendScorer(), kill_switch=switch)


def bad_rollouts(count: int) -> SimulatedCluster:
    return SimulatedCluster([SimulatedRollout(DeploymentRef("shop", f"app-{i}"), "error_regression", START, seed=i)
                             for i in range(count)])


def run(engine: Engine, minutes: float, start: float = START) -> list:
    return [engine.tick(start + i * 15.0) for i in range(int(minutes * 4) + 1)]


def test_the_budget_caps_actions_across_rollouts_then_alerts_only(caplog: pytest.LogCaptureFixture) -> None:
    cluster = bad_rollouts(5)
    engine = engine_for(cluster, budget=2)
    with caplog.at_level(logging.WARNING, logger="predictor.engine"):
        reports = run(engine, 4)
    assert len(cluster.actions) == 2
    withheld = [w for r in reports for w in r.withheld]
    assert sorted(d.ref.name for d, _ in withheld) == ["app-2", "app-3", "app-4"]
    lines = [r.getMessage() for r in caplog.records if "withheld" in r.getMessage()]
    assert len(lines) == 3, "one WARNING per withheld revision, not one per tick"
    assert "pause withheld, alert only: action budget spent (2 of 2" in lines[0]
    held_back = {a.ref.name: a for a in cluster.alerts_sent.values() if a.name == ALERT_BREACH}
    assert set(held_back) == {f"app-{i}" for i in range(5)}, "every breach still alerts"
    assert "pause withheld, alert only: action budget spent" in held_back["app-3"].description
    assert reports[-1].budget_spent == 2


def test_a_withheld_action_is_taken_once_the_window_frees_a_slot() -> None:
    cluster = bad_rollouts(2)
    engine = engine_for(cluster, budget=1)
    engine.config = replace(engine.config, safety=replace(engine.config.safety, budget_seconds=120))
    run(engine, 5)
    assert [d.ref.name for _, d in cluster.actions] == ["app-0", "app-1"]
    first, second = cluster.actions[0][0], cluster.actions[1][0]
    assert second - first >= 120


def test_the_kill_switch_is_read_every_tick_and_withholds_until_lifted() -> None:
    cluster = bad_rollouts(1)
    switch = Switch()
    switch.on = True
    engine = engine_for(cluster, switch=switch)
    reports = run(engine, 2)
    assert cluster.actions == [] and switch.reads == len(reports)
    reasons = [why for r in reports for _, why in r.withheld]
    assert len(reasons) == 1 and reasons[0].startswith("kill switch engaged")
    switch.on = False
    run(engine, 1, start=START + 135)
    assert len(cluster.actions) == 1


def test_an_opted_out_deployment_is_not_watched_and_its_alerts_resolve() -> None:
    cluster = bad_rollouts(2)
    engine = engine_for(cluster)
    run(engine, 1)
    assert {d.ref.name for _, d in cluster.actions} == {"app-0", "app-1"}
    cluster.rollouts[DeploymentRef("shop", "app-0")].annotations["predictor.io/enabled"] = "false"
    report = engine.tick(START + 75)
    assert report.watched == 1
    assert any(a.ref.name == "app-0" for a in cluster.alerts_resolved)


def test_annotation_overrides_reach_the_decision(caplog: pytest.LogCaptureFixture) -> None:
    cluster = bad_rollouts(2)
    cluster.rollouts[DeploymentRef("shop", "app-0")].annotations.update(
        {"predictor.io/policy.action": "alert", "predictor.io/threshold.error_ratio": "0.9"})
    cluster.rollouts[DeploymentRef("shop", "app-1")].annotations["predictor.io/policy.action"] = "sideways"
    with caplog.at_level(logging.WARNING, logger="predictor.engine"):
        run(engine_for(cluster), 4)
    assert [d.ref.name for _, d in cluster.actions] == ["app-1"], "app-0's threshold 0.9 is never reached"
    assert cluster.actions[0][1].action is Action.PAUSE, "a bad action annotation is ignored"
    warned = [r.getMessage() for r in caplog.records if "sideways" in r.getMessage()]
    assert warned == ["deployment shop/app-1: annotation predictor.io/policy.action: expected one of pause, undo, "
                      "alert, got 'sideways' (ignored)"]


def test_policy_override_turns_pause_into_undo() -> None:
    cluster = bad_rollouts(1)
    cluster.rollouts[DeploymentRef("shop", "app-0")].annotations["predictor.io/policy.action"] = "undo"
    run(engine_for(cluster, action=Action.PAUSE), 4)
    assert Action.UNDO in {d.action for _, d in cluster.actions}
