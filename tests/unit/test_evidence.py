"""Each piece of evidence of the rollout scorer on its own, from a Reading of hand-built samples."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from predictor.config import MetricSpec, default_metric_pack
from predictor.detectors import evidence
from predictor.detectors.evidence import (
    NEW_POD_BREACH_RISK,
    SETTLING_RISK_CAP,
    Abstention,
    Evidence,
    current_breach,
    gather,
    new_against_old,
    recurring_events,
    strongest,
    trend_forecasts,
)
from predictor.detectors.evidence_reading import Reading
from predictor.detectors.rollout_scorer import ForecastScorer
from predictor.detectors.trend import SHARED_CAUSE_RISK_CAP
from predictor.domain import DeploymentRef, Observation, RolloutState, Scope
from predictor.features import MetricHistory

START = 1_767_268_800.0
STEP = 15.0
HORIZON = 600.0
REF = DeploymentRef("shop", "checkout")
SPECS = {s.name: s for s in default_metric_pack()}
ERRORS, MEMORY, RESTARTS = SPECS["error_ratio"], SPECS["memory_limit_ratio"], SPECS["restarts_5m"]
Row = tuple[float | None, float | None, float | None]


def rolling(new: int = 2, old: int = 6, ready_new: int | None = None) -> RolloutState:
    return RolloutState(ref=REF, revision=2, new_hash="n", old_hashes=("o",), desired_replicas=new + old,
                        updated_replicas=new, ready_new_replicas=new if ready_new is None else ready_new,
                        old_replicas=old, started_at=START)


def read(spec: MetricSpec, rows: Sequence[Row], rollout: RolloutState | None = None,
         scorer: ForecastScorer | None = None) -> Reading:
    """The Reading after feeding `rows` of (deployment, new pods, old pods) one tick at a time."""
    rollout = rollout or rolling()
    history, scorer = MetricHistory(HORIZON), scorer or ForecastScorer(step_seconds=STEP)
    reading = None
    for i, row in enumerate(rows):
        t = START + i * STEP
        history.add(2, [Observation(REF, spec.name, scope, t, value, pods=2)
                        for scope, value in zip(Scope, row, strict=True)])
        reading = scorer.read(rollout, spec, history, t, HORIZON)
    assert reading is not None
    return reading


def steady(dep: float, new: float, old: float, ticks: int = 8) -> list[Row]:
    return [(dep, new, old)] * ticks


def test_current_breach_is_certain_unless_old_pods_share_it() -> None:
    found = current_breach(read(ERRORS, [*steady(0.08, 0.08, 0.004), (0.2, 0.08, 0.004)]))
    assert isinstance(found, Evidence) and found.risk == 1.0 and "0.08 >= 0.05 now" in found.reason
    shared = current_breach(read(ERRORS, steady(0.08, 0.08, 0.08)))
    assert shared is not None and shared.risk == SHARED_CAUSE_RISK_CAP and "not caused by this release" in shared.reason
    assert current_breach(read(ERRORS, steady(0.01, 0.01, 0.004))) is None


def test_new_against_old_weighs_the_gap_in_standard_errors_and_abstains_with_a_note() -> None:
    rows = [(0.004 + 0.0004 * (-1) ** i, 0.2 + 0.002 * (-1) ** i, 0.004 + 0.0004 * (-1) ** i) for i in range(4)]
    found = new_against_old(read(ERRORS, rows))
    assert isinstance(found, Evidence) and found.risk > 0.9 * NEW_POD_BREACH_RISK
    assert "standard errors" in found.reason and found.breach_at is not None
    few = new_against_old(read(ERRORS, rows, scorer=ForecastScorer(step_seconds=STEP, min_new_pods=3)))
    assert isinstance(few, Abstention) and "2 new pod(s) < 3" in few.note
    assert new_against_old(read(ERRORS, steady(0.004, 0.005, 0.004))) is None  # within the threshold


def test_a_gap_that_closes_is_warming_up() -> None:
    rows = [(0.004, 0.004 + 0.196 * max(0.0, 1.0 - k / 4), 0.004) for k in range(4)]
    found = new_against_old(read(ERRORS, rows))
    assert found is None or (isinstance(found, Evidence) and found.risk <= SETTLING_RISK_CAP), found


def test_recurring_events_need_a_loop_not_two_restarts() -> None:
    loop = [(c, c, 0.0) for c in [0.0] * 3 + [1.0, 1.0, 1.0, 2.1, 2.05, 2.0]]
    found = recurring_events(read(RESTARTS, loop, rolling(ready_new=1)))
    assert isinstance(found, Evidence) and found.risk == NEW_POD_BREACH_RISK and "a crash loop" in found.reason
    recovered = recurring_events(read(RESTARTS, loop))
    assert recovered is not None and recovered.risk == SETTLING_RISK_CAP and "no loop" in recovered.reason
    assert recurring_events(read(ERRORS, steady(0.01, 0.01, 0.004))) is None  # not a count


def test_trend_forecasts_extrapolate_the_new_pods_but_never_a_count() -> None:
    climb = [(0.5, 0.5 + 0.01 * i + 0.001 * (-1) ** i, 0.5) for i in range(40)]
    found = trend_forecasts(read(MEMORY, climb))
    assert found and max(e.risk for e in found) >= 0.7 and "new pods" in found[-1].reason
    assert trend_forecasts(read(RESTARTS, [(c, c, 0.0) for c in [0.0] * 10 + [1.0] * 10])) == []


def test_gather_asks_every_piece_in_order_and_strongest_keeps_the_first_of_the_highest() -> None:
    reading = read(ERRORS, steady(0.01, 0.01, 0.004))
    calls: list[str] = []

    def piece(name: str, result: evidence.Finding) -> evidence.Piece:
        def ask(r: Reading) -> evidence.Finding:
            assert r is reading
            calls.append(name)
            return result
        return ask

    a, b = Evidence(0.8, None, "a"), Evidence(0.8, None, "b")
    pieces = (piece("a", a), piece("none", None), piece("skip", Abstention("too few")), piece("b", b))
    found, notes = gather(reading, pieces)
    assert calls == ["a", "none", "skip", "b"] and found == [a, b] and notes == ["too few"]
    assert strongest(found) is a and strongest([replace(b, risk=0.9), a]).reason == "b"
    assert strongest([]) is None
