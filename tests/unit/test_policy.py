"""Policy tables: hysteresis, one action per revision, unknown data, rollbacks, alerts."""

from dataclasses import replace

from predictor.config import PolicyConfig
from predictor.domain import (
    ANNOTATION_ACTED_AT,
    ANNOTATION_ACTED_REVISION,
    ANNOTATION_ACTION,
    ANNOTATION_METRIC,
    ANNOTATION_REASON,
    Action,
    Assessment,
    DeploymentRef,
    Direction,
    RolloutState,
)
from predictor.policy import ALERT_BLIND, ALERT_BREACH, Phase, RolloutMemory, decide, in_scope, not_applied

REF = DeploymentRef("shop", "checkout")
POLICY = PolicyConfig(action=Action.UNDO, consecutive_ticks=2, risk_threshold=0.7, blind_after_ticks=3)


def rollout(**changes: object) -> RolloutState:
    base = RolloutState(ref=REF, revision=2, new_hash="new", old_hashes=("old",), desired_replicas=4,
                        updated_replicas=1, ready_new_replicas=1, old_replicas=3, started_at=0.0, previous_revision=1)
    return replace(base, **changes)  # type: ignore[arg-type]


def risk(value: float | None, *, metric: str = "error_ratio", breach: float | None = 120.0) -> Assessment:
    if value is None:
        return Assessment(metric=metric, risk=0.0, value=None, threshold=0.05, direction=Direction.ABOVE,
                          unknown=True, reason=f"{metric}: no data (query timed out)")
    return Assessment(metric=metric, risk=value, value=0.1, threshold=0.05, direction=Direction.ABOVE,
                      predicted_breach=breach, reason=f"{metric}: figures")


def run(risks: list[float | None], state: RolloutState | None = None, policy: PolicyConfig = POLICY):
    memory: RolloutMemory | None = None
    decisions = []
    for tick, value in enumerate(risks):
        memory, decision = decide(memory, state or rollout(), [risk(value)], float(tick * 15), policy)
        decisions.append(decision)
    return memory, decisions


def actions(decisions) -> list[str]:
    return [str(d.action) for d in decisions]


def test_one_noisy_tick_never_acts() -> None:
    _, decisions = run([0.1, 0.95, 0.1, 0.95, 0.2])
    assert actions(decisions) == ["none"] * 5


def test_consecutive_ticks_act_once() -> None:
    memory, decisions = run([0.1, 0.9, 0.9, 0.95, 0.99])
    assert actions(decisions) == ["none", "none", "undo", "none", "none"]
    assert memory is not None and memory.phase is Phase.ACTED
    assert "risk 0.90 (threshold 0.70, 2/2 ticks)" in decisions[2].reason
    assert decisions[2].alerts[0].name == ALERT_BREACH and decisions[2].alerts[0].severity == "critical"


def test_unknown_tick_neither_counts_nor_resets() -> None:
    _, decisions = run([0.9, None, 0.9])
    assert actions(decisions) == ["none", "none", "undo"]
    _, decisions = run([0.9, None, None])
    assert actions(decisions) == ["none", "none", "none"]


def test_blind_alerts_and_never_undoes() -> None:
    memory, decisions = run([None] * 5)
    assert actions(decisions) == ["none"] * 5
    assert [a.name for a in decisions[2].alerts] == [ALERT_BLIND]
    assert decisions[1].alerts == ()
    assert "query timed out" in decisions[2].alerts[0].description
    _, recovered = decide(memory, rollout(), [risk(0.1)], 100.0, POLICY)
    assert [a.name for a in recovered.resolved] == [ALERT_BLIND]
    assert recovered.alerts == ()


def test_blind_action_pause_pauses_once() -> None:
    _, decisions = run([None] * 5, policy=replace(POLICY, blind_action=Action.PAUSE))
    assert actions(decisions) == ["none", "none", "pause", "none", "none"]


def test_acted_revision_annotation_prevents_a_second_action_after_restart() -> None:
    acted = rollout(annotations={ANNOTATION_ACTED_REVISION: "2", ANNOTATION_ACTION: "pause"})
    memory, decisions = run([0.9, 0.9, 0.9], state=acted)
    assert actions(decisions) == ["none"] * 3
    assert memory is not None and memory.acted is Action.PAUSE
    assert "already acted (pause)" in decisions[-1].reason
    # the annotation of an older revision does not block this one
    older = rollout(annotations={ANNOTATION_ACTED_REVISION: "1", ANNOTATION_ACTION: "undo"})
    _, decisions = run([0.9, 0.9], state=older)
    assert actions(decisions) == ["none", "undo"]


def test_a_rollback_is_never_undone() -> None:
    _, decisions = run([0.9, 0.9], state=rollout(is_rollback=True))
    assert actions(decisions) == ["none", "alert"]
    assert "undo withheld" in decisions[1].reason


def test_undo_without_previous_revision_pauses() -> None:
    _, decisions = run([0.9, 0.9], state=rollout(previous_revision=None))
    assert actions(decisions) == ["none", "pause"]


def test_breach_alert_resolves_after_clear_ticks() -> None:
    _, decisions = run([0.9, 0.9, 0.1, 0.1, 0.1], policy=replace(POLICY, action=Action.ALERT))
    assert actions(decisions)[:2] == ["none", "alert"]
    assert decisions[2].alerts and not decisions[2].resolved
    assert [a.name for a in decisions[3].resolved] == [ALERT_BREACH]
    assert decisions[4].alerts == () and decisions[4].resolved == ()


def test_new_revision_starts_fresh() -> None:
    memory, _ = run([0.9, 0.9])
    _, decision = decide(memory, rollout(revision=3), [risk(0.9)], 100.0, POLICY)
    assert decision.action is Action.NONE and decision.revision == 3


def test_not_applied_lets_the_next_tick_try_again() -> None:
    memory, decisions = run([0.9, 0.9])
    assert decisions[-1].action is Action.UNDO
    memory, decision = decide(not_applied(memory), rollout(), [risk(0.9)], 100.0, POLICY)
    assert decision.action is Action.UNDO


def test_dry_run_is_carried_on_the_decision() -> None:
    _, decisions = run([0.9, 0.9], policy=replace(POLICY, dry_run=True))
    assert decisions[-1].action is Action.UNDO and decisions[-1].dry_run


def test_in_scope_covers_rollout_and_bake() -> None:
    policy = replace(POLICY, bake_seconds=600)
    assert in_scope(rollout(), 10.0, policy)
    assert in_scope(rollout(completed_at=100.0), 700.0, policy)
    assert not in_scope(rollout(completed_at=100.0), 701.0, policy)
    assert not in_scope(rollout(new_hash=None), 10.0, policy)


def test_evidence_still_building_keeps_a_revision_watched_beyond_bake_up_to_max_watch() -> None:
    """Completed at 100 s, bake 10 min, max_watch 30 min. A revision whose top risk is still live (>= LIVE_RISK)
    stays watched past 700 s, its phase saying why; a quiet one, an unknown one, or one past 1900 s leaves."""
    policy = replace(POLICY, bake_seconds=600, max_watch_seconds=1800, alert_threshold=0.5)
    done = rollout(completed_at=100.0, old_replicas=0, updated_replicas=4, ready_new_replicas=4)
    memory: RolloutMemory | None = None
    for tick in range(0, 47):  # 15 s ticks to 690 s: a leak's forecast at 0.3, below the alert
        memory, _ = decide(memory, done, [risk(0.3)], 15.0 * tick, policy)
    assert memory is not None and memory.live_at == 690.0
    assert in_scope(done, 701.0, policy, memory) and in_scope(done, 720.0, policy, memory)
    assert not in_scope(done, 721.0, policy, memory)  # no live tick for more than `consecutive` ticks
    assert not in_scope(done, 701.0, policy, None) and not in_scope(done, 701.0, policy, replace(memory, revision=1))
    memory, decision = decide(memory, done, [risk(0.3)], 705.0, policy)
    assert memory.phase is Phase.BEYOND_BAKE and "beyond bake (10m05s after completion" in decision.reason
    assert "at most 30m00s" in decision.reason
    quiet, _ = decide(memory, done, [risk(0.01)], 720.0, policy)
    unknown, _ = decide(memory, done, [risk(None)], 720.0, policy)
    assert quiet.live_at == unknown.live_at == 705.0 and not in_scope(done, 736.0, policy, quiet)
    late = replace(memory, live_at=1900.0)
    assert in_scope(done, 1900.0, policy, late) and not in_scope(done, 1901.0, policy, late)
    memory, _ = decide(memory, done, [risk(0.95)], 720.0, policy)
    memory, decision = decide(memory, done, [risk(0.95)], 735.0, policy)
    assert decision.action is Action.UNDO and memory.phase is Phase.ACTED  # the leak acted on beyond bake


def test_undone_revision_alert_fires_until_the_rollback_completes() -> None:
    from predictor.policy import succeed

    memory, decisions = run([0.9, 0.9])
    assert decisions[-1].action is Action.UNDO and memory is not None
    rollback = rollout(revision=3, is_rollback=True, new_hash="old", old_hashes=("new",))
    successor, resolved = succeed(memory, rollback)
    assert resolved == () and [a.revision for a in successor.alerts] == [2]
    successor, decision = decide(successor, rollback, [risk(0.1)], 60.0, POLICY)
    assert decision.resolved == () and [a.revision for a in decision.alerts] == [2]
    _, decision = decide(successor, replace(rollback, completed_at=70.0), [risk(0.1)], 75.0, POLICY)
    assert [(a.name, a.revision) for a in decision.resolved] == [(ALERT_BREACH, 2)]
    assert decision.alerts == ()


def test_replaced_revision_without_undo_resolves_at_once() -> None:
    from predictor.policy import succeed

    memory, _ = run([0.9, 0.9], policy=replace(POLICY, action=Action.PAUSE))
    successor, resolved = succeed(memory, rollout(revision=3))
    assert [a.revision for a in resolved] == [2] and successor.alerts == ()


def test_graded_by_confidence() -> None:
    # below alert_threshold: watch; alert_threshold..risk_threshold: warning alert only; risk_threshold..undo:
    # pause even when undo is configured; at undo_threshold: undo
    _, decisions = run([0.3, 0.3])
    assert actions(decisions) == ["none", "none"] and decisions[-1].alerts == ()
    _, decisions = run([0.6, 0.6, 0.6])
    assert actions(decisions) == ["none", "none", "none"]
    assert [(a.name, a.severity) for a in decisions[1].alerts] == [(ALERT_BREACH, "warning")]
    _, decisions = run([0.8, 0.8])
    assert actions(decisions) == ["none", "pause"] and "below undo_threshold" in decisions[-1].reason
    _, decisions = run([0.8, 0.95])
    assert actions(decisions) == ["none", "undo"]


def run_states(ticks: list[tuple[float, RolloutState]], policy: PolicyConfig = POLICY):
    memory: RolloutMemory | None = None
    decisions = []
    for tick, (value, state) in enumerate(ticks):
        memory, decision = decide(memory, state, [risk(value)], float(tick * 15), policy)
        decisions.append(decision)
    return memory, decisions


def test_our_pause_escalates_to_an_undo_once_the_risk_holds_at_undo_threshold() -> None:
    paused = rollout(paused=True)
    ticks = [(0.8, rollout()), (0.8, rollout()), (0.8, paused), (0.95, paused), (0.95, paused), (0.99, paused)]
    memory, decisions = run_states(ticks)
    assert actions(decisions) == ["none", "pause", "none", "none", "undo", "none"]
    assert "escalated: paused 45s ago" in decisions[4].reason and "2/2 ticks" in decisions[4].reason
    assert memory is not None and memory.acted is Action.UNDO
    # one tick at undo_threshold between others below it is no confirmation
    _, decisions = run_states([(0.8, rollout()), (0.8, rollout()), (0.95, paused), (0.8, paused), (0.95, paused)])
    assert actions(decisions) == ["none", "pause", "none", "none", "none"]


def test_a_pause_does_not_escalate_when_resumed_configured_as_pause_or_after_a_restart_unpaused() -> None:
    resumed = [(0.8, rollout()), (0.8, rollout()), (0.95, rollout()), (0.95, rollout()), (0.95, rollout())]
    assert actions(run_states(resumed)[1]) == ["none", "pause", "none", "none", "none"]
    paused = rollout(paused=True)
    pause_only = replace(POLICY, action=Action.PAUSE)
    ticks = [(0.8, rollout()), (0.8, rollout()), (0.95, paused), (0.95, paused)]
    assert actions(run_states(ticks, pause_only)[1]) == ["none", "pause", "none", "none"]
    # after a restart the annotation says we paused; the Deployment, still paused, is undone when sure
    recorded = rollout(paused=True, annotations={ANNOTATION_ACTED_REVISION: "2", ANNOTATION_ACTION: "pause"})
    _, decisions = run([0.95, 0.95, 0.95], state=recorded)
    assert actions(decisions) == ["none", "undo", "none"]
    assert "escalated: paused, " in decisions[1].reason
    # a rollback is never undone, paused or not
    rollback = replace(recorded, is_rollback=True)
    assert actions(run([0.95, 0.95], state=rollback)[1]) == ["none", "none"]


def test_completed_rollout_is_undone_without_full_confidence() -> None:
    _, decisions = run([0.8, 0.8], state=rollout(completed_at=0.0, updated_replicas=4, old_replicas=0))
    assert actions(decisions) == ["none", "undo"]


def test_warning_alert_resolves_after_clear_ticks() -> None:
    _, decisions = run([0.6, 0.6, 0.2, 0.2])
    assert decisions[1].alerts and not decisions[2].resolved
    assert [a.name for a in decisions[3].resolved] == [ALERT_BREACH]


def test_decisive_evidence_pauses_on_its_first_tick_and_undoes_only_after_consecutive_ticks() -> None:
    """An abrupt regression's first sample (`Assessment.decisive`) pauses at once even with `action: undo`; the
    undo comes from the pause's escalation once the risk held at undo_threshold for `consecutive` ticks."""
    policy = replace(POLICY, consecutive_ticks=2)
    decisive = replace(risk(0.95), decisive=True)
    memory, first = decide(None, rollout(), [decisive], 0.0, policy)
    assert first.action is Action.PAUSE and "decisive evidence on 1/2 ticks: pausing at once" in first.reason
    memory, second = decide(memory, rollout(paused=True), [decisive], 15.0, policy)
    assert second.action is Action.UNDO
    paused, _ = decide(None, rollout(), [decisive], 0.0, replace(policy, action=Action.PAUSE))
    assert paused.acted is Action.PAUSE
    # without the flag, or once the rollout completed (no old pods to be decisive against), the hysteresis holds
    _, plain = decide(None, rollout(), [risk(0.95)], 0.0, policy)
    _, done = decide(None, rollout(completed_at=0.0), [decisive], 0.0, policy)
    assert plain.action is Action.NONE and done.action is Action.NONE


def test_a_restart_re_derives_the_alerts_of_recorded_actions_from_the_annotations() -> None:
    recorded = {ANNOTATION_ACTED_REVISION: "2", ANNOTATION_ACTION: "undo", ANNOTATION_METRIC: "error_ratio",
                ANNOTATION_REASON: "undo: error_ratio new pods 0.11", ANNOTATION_ACTED_AT: "1970-01-01T00:00:10Z"}
    # Killed after the undo's PATCH: revision 3 is the rollback, still rolling out, and carries revision 2's alert.
    rollback = rollout(revision=3, is_rollback=True, annotations=recorded)
    memory, decision = decide(None, rollback, [risk(None)], 20.0, POLICY)
    assert decision.action is Action.NONE
    assert [(a.name, a.revision, a.metric, a.starts_at) for a in memory.alerts] == [
        (ALERT_BREACH, 2, "error_ratio", 10.0)]
    # ... and resolves it once the rollback completed.
    _, done = decide(memory, replace(rollback, completed_at=30.0), [risk(None)], 31.0, POLICY)
    assert [a.revision for a in done.resolved] == [2]
    # Killed after a pause: the paused revision is acted on and its alert fires on the first tick.
    paused = rollout(paused=True, annotations={**recorded, ANNOTATION_ACTION: "pause"})
    memory, decision = decide(None, paused, [risk(None)], 20.0, POLICY)
    assert decision.action is Action.NONE and memory.acted is Action.PAUSE
    assert [(a.name, a.revision, a.severity) for a in memory.alerts] == [(ALERT_BREACH, 2, "critical")]
    # A rollback that completed while the daemon was down: the alert is resolved at once (the notifier sends
    # it firing first if it never was); an undo of a revision we are not rolling back from carries nothing.
    memory, decision = decide(None, replace(rollback, completed_at=15.0), [risk(None)], 20.0, POLICY)
    assert memory.alerts == () and [a.revision for a in decision.resolved] == [2]
    assert decide(None, replace(rollback, is_rollback=False), [risk(None)], 20.0, POLICY)[0].alerts == ()
