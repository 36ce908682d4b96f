"""The status board: what the engine records per rollout each tick, and its bounds."""

import tracemalloc
from dataclasses import replace

from predictor.config import MetricSpec
from predictor.demo import SimulatedCluster, demo_config
from predictor.domain import Action, Assessment, Decision, DeploymentRef, Direction, Observation, RolloutState, Scope
from predictor.engine import Engine
from predictor.scoring import build_scorer
from predictor.simulate import SimulatedRollout
from predictor.status.board import MAX_DECISIONS, MAX_RECORDS, MAX_SAMPLES, REVISIONS_KEPT, StatusBoard

START = 1_767_268_800.0
SPEC = MetricSpec(name="error_ratio", query="q", threshold=0.05)


def state(name: str = "checkout", revision: int = 2, **changes: object) -> RolloutState:
    base = RolloutState(ref=DeploymentRef("shop", name), revision=revision, new_hash="n", old_hashes=("o",),
                        desired_replicas=4, updated_replicas=1, ready_new_replicas=1, old_replicas=3,
                        started_at=START)
    return replace(base, **changes)  # type: ignore[arg-type]


def observations(rollout: RolloutState, at: float, dep: float | None, new: float | None,
                 old: float | None) -> list[Observation]:
    return [Observation(rollout.ref, SPEC.name, scope, at, value)
            for scope, value in ((Scope.DEPLOYMENT, dep), (Scope.NEW, new), (Scope.OLD, old))]


def decision(rollout: RolloutState, at: float, action: Action = Action.NONE, risk: float = 0.1) -> Decision:
    return Decision(ref=rollout.ref, revision=rollout.revision, time=at, action=action, risk=risk,
                    reason=f"{action} because", metric=SPEC.name)


def assessment(risk: float) -> Assessment:
    return Assessment(metric=SPEC.name, risk=risk, value=0.01, threshold=SPEC.threshold, direction=Direction.ABOVE)


def test_a_tick_records_values_per_scope_the_assessment_and_the_decision() -> None:
    board = StatusBoard()
    rollout = state()
    board.begin_tick(START, [rollout])
    board.observe(rollout.ref, rollout.revision, SPEC, observations(rollout, START, 0.02, 0.09, float("nan")))
    board.assessed(rollout, [assessment(0.8)], decision(rollout, START, Action.PAUSE, 0.8), "acted")
    board.outcome(decision(rollout, START, Action.PAUSE, 0.8), "applied: paused")
    [record] = board.latest()
    assert (record.ref, record.revision, record.phase, record.risk) == (rollout.ref, 2, "acted", 0.8)
    [sample] = record.metrics[SPEC.name].samples
    assert (sample.deployment, sample.new, sample.old) == (0.02, 0.09, None), "NaN is unknown, not a value"
    assert record.metrics[SPEC.name].latest == assessment(0.8)
    [entry] = record.decisions
    assert (entry.action, entry.outcome) == (Action.PAUSE, "applied: paused")


def test_nothing_but_actions_and_alerts_fills_the_decision_list() -> None:
    board = StatusBoard()
    rollout = state()
    for i in range(2 * MAX_DECISIONS + 20):
        at = START + 15 * i
        board.begin_tick(at, [rollout])
        board.assessed(rollout, [assessment(0.1)], decision(rollout, at, Action.ALERT if i % 2 else Action.NONE), "w")
    [record] = board.latest()
    assert len(record.decisions) == MAX_DECISIONS
    assert all(d.action is Action.ALERT for d in record.decisions)


def test_samples_are_capped_and_repeated_ticks_add_nothing() -> None:
    board = StatusBoard()
    rollout = state()
    for i in range(MAX_SAMPLES + 10):
        board.begin_tick(START + i, [rollout])
        for _ in range(2):
            board.observe(rollout.ref, 2, SPEC, observations(rollout, START + i, 0.01 * i, None, None))
    samples = board.latest()[0].metrics[SPEC.name].samples
    assert len(samples) == MAX_SAMPLES == len(board.latest()[0].metrics[SPEC.name])
    assert samples[0].time == START + 10 and samples[-1].time == START + MAX_SAMPLES + 9


def test_a_new_revision_keeps_the_old_ones_newest_first_up_to_the_cap() -> None:
    board = StatusBoard()
    for revision in range(1, REVISIONS_KEPT + 3):
        board.begin_tick(START + revision, [state(revision=revision)])
    revisions = [r.revision for r in board.revisions(DeploymentRef("shop", "checkout"))]
    assert revisions == list(range(REVISIONS_KEPT + 2, 2, -1))
    assert [r.revision for r in board.latest()] == [REVISIONS_KEPT + 2]
    assert [r.watched for r in board.revisions(DeploymentRef("shop", "checkout"))] == [True] + [False] * (
        REVISIONS_KEPT - 1)


def test_a_full_board_evicts_the_unwatched_updated_longest_ago_and_never_a_watched_one() -> None:
    evicted: list[str] = []
    board = StatusBoard(max_records=3, on_evict=lambda record: evicted.append(record.ref.name))
    board.begin_tick(START, [state("a"), state("b")])
    board.begin_tick(START + 1, [state("b"), state("c")])
    board.begin_tick(START + 2, [state("b"), state("c"), state("d")])
    assert evicted == ["a"]
    assert [r.ref.name for r in board.latest()] == ["b", "c", "d"]
    board.begin_tick(START + 3, [state("b"), state("c"), state("d"), state("e")])
    assert [r.ref.name for r in board.latest()] == ["b", "c", "d"], "every record watched: the newcomer waits"
    assert board.dropped == 1
    board.flush()
    assert evicted == ["a", "b", "c", "d"] and len(board) == 0


def test_snapshots_do_not_change_as_the_engine_goes_on() -> None:
    board = StatusBoard()
    rollout = state()
    board.begin_tick(START, [rollout])
    board.observe(rollout.ref, 2, SPEC, observations(rollout, START, 0.01, 0.01, 0.01))
    snapshot = board.latest()[0]
    board.begin_tick(START + 15, [rollout])
    board.observe(rollout.ref, 2, SPEC, observations(rollout, START + 15, 0.02, 0.02, 0.02))
    assert len(snapshot.metrics[SPEC.name].samples) == 1
    assert len(board.latest()[0].metrics[SPEC.name].samples) == 2


def test_the_engine_fills_the_board_with_forecasts_and_the_action() -> None:
    config = demo_config(Action.PAUSE)
    sim = SimulatedRollout(DeploymentRef("shop", "cart"), "memory_leak", START, seed=8)
    cluster = SimulatedCluster([sim])
    scorer, _ = build_scorer(config, scorer="forecast")
    engine = Engine(config, rollouts=cluster, metrics=cluster, actuator=cluster, notifier=cluster, scorer=scorer)
    for i in range(60):
        engine.tick(START + 15 * i)
    [record] = engine.board.latest()
    assert [m for m in record.metrics] == [spec.name for spec in config.metrics]
    assert len(record.metrics["memory_limit_ratio"]) == 60
    [action] = record.actions
    assert action.action is Action.PAUSE and action.outcome.startswith("applied")
    assert record.metrics[action.metric or ""].acted_forecast is not None, "the forecast behind the pause is kept"
    assert record.phase == "acted"


def test_a_full_board_stays_within_its_documented_memory() -> None:
    """The worst the default caps allow: MAX_RECORDS rollouts x 6 metrics x MAX_SAMPLES samples. Records are
    independent, so the memory of full records (measured) times MAX_RECORDS bounds the board."""
    specs = [replace(SPEC, name=f"m{i}") for i in range(6)]
    board = StatusBoard()
    rollouts = [state(f"d{i}") for i in range(8)]
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for tick in range(MAX_SAMPLES + 5):
            at = START + 15 * tick
            board.begin_tick(at, rollouts)
            for rollout in rollouts:
                for spec in specs:
                    board.observe(rollout.ref, 2, spec, [Observation(rollout.ref, spec.name, scope, at, 0.01 * tick)
                                                         for scope in Scope])
        per_record = (tracemalloc.get_traced_memory()[0] - before) / len(rollouts)
    finally:
        tracemalloc.stop()
    assert all(len(track) == MAX_SAMPLES for record in board.latest() for track in record.metrics.values())
    assert MAX_RECORDS * per_record < 40e6, f"{MAX_RECORDS * per_record / 1e6:.1f} MB"
    assert MAX_RECORDS * per_record > 512 * 6 * MAX_SAMPLES * 32, "the samples themselves are counted"
