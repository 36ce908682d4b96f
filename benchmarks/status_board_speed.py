"""What the status board adds to a tick: 2,000 watched rollouts x 6 metrics, with the default cap (512 recorded)
and with every rollout recorded. Run: .venv/bin/python benchmarks/status_board_speed.py"""

import time

from predictor.config import MetricSpec
from predictor.domain import Action, Assessment, Decision, DeploymentRef, Direction, Observation, RolloutState, Scope
from predictor.status.board import MAX_RECORDS, StatusBoard

ROLLOUTS, METRICS, TICKS = 2000, 6, 5
specs = [MetricSpec(name=f"m{i}", query="q", threshold=0.05) for i in range(METRICS)]
rollouts = [RolloutState(ref=DeploymentRef("shop", f"d{i}"), revision=2, new_hash="n", old_hashes=("o",),
                         desired_replicas=4, updated_replicas=1, ready_new_replicas=1, old_replicas=3, started_at=0.0)
            for i in range(ROLLOUTS)]


def inputs(at: float) -> tuple[list, list]:  # type: ignore[type-arg]
    """One tick's observations and assessments, built before the clock starts."""
    observations = [(r, s, [Observation(r.ref, s.name, scope, at, 0.01) for scope in Scope])
                    for r in rollouts for s in specs]
    assessed = [(r, [Assessment(metric=s.name, risk=0.1, value=0.01, threshold=0.05, direction=Direction.ABOVE)
                     for s in specs], Decision(r.ref, 2, at, Action.NONE, 0.1, "r"))
                for r in rollouts]
    return observations, assessed


for cap in (MAX_RECORDS, ROLLOUTS):
    board = StatusBoard(max_records=cap)
    total = 0.0
    for tick in range(TICKS + 1):
        at = 15.0 * tick
        observations, assessed = inputs(at)
        started = time.perf_counter()
        board.begin_tick(at, rollouts)
        for rollout, spec, items in observations:
            board.observe(rollout.ref, 2, spec, items)
        for rollout, assessments, decision in assessed:
            board.assessed(rollout, assessments, decision, "watching")
        if tick:  # the first tick creates the records
            total += time.perf_counter() - started
    print(f"status board, max_records={cap}, {ROLLOUTS} rollouts x {METRICS} metrics: "
          f"{total / TICKS * 1000:.0f} ms per tick")
