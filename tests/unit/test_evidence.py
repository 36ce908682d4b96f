"""Each piece of evidence of the rollout scorer on its own, from a Reading of hand-built samples."""

from __future__ import annotations

import math
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
    pod_states,
    recurring_events,
    strongest,
    trend_forecasts,
)
from predictor.detectors.evidence_reading import Reading
from predictor.detectors.rollout_scorer import ForecastScorer
from predictor.detectors.trend import SHARED_CAUSE_RISK_CAP
from predictor.domain import DeploymentRef, Observation, PodState, RolloutState, Scope
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
    assert "standard errors" in found.reason and found.breach_at is not None and found.decisive
    assert abs(evidence.DECISIVE_Z - 4.753) < 1e-3  # P(Z >= 4.753) = 1e-6
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


# Pod states (issue 15, point 2) ------------------------------------------------------------------------------
def pod(name: str, template_hash: str = "n", *, ready: bool = True, restarts: int = 0, waiting: str | None = None,
        age: float | None = 60.0) -> PodState:
    now = START + 7 * STEP
    return PodState(f"checkout-{template_hash}-{name}", template_hash, ready=ready, restarts=restarts,
                    waiting_reason=waiting, created_at=None if age is None else now - age)


OLD_PODS = tuple(pod(f"o{i}", "o", age=86_400.0) for i in range(6))


def with_pods(*pods: PodState, allowance: float | None = None) -> RolloutState:
    return replace(rolling(), pods=pods, ready_allowance_seconds=allowance)


def pods_say(rollout: RolloutState, spec: MetricSpec = RESTARTS) -> Evidence | None:
    found = pod_states(read(spec, steady(0.0, 0.0, 0.0), rollout))
    assert found is None or isinstance(found, Evidence)
    return found


def test_no_pod_information_is_no_evidence() -> None:
    assert pods_say(rolling()) is None
    assert pods_say(with_pods(*OLD_PODS)) is None  # no new pod listed yet
    crashing = with_pods(pod("a", waiting="CrashLoopBackOff", restarts=1, ready=False), *OLD_PODS)
    assert pods_say(crashing, ERRORS) is None  # pod states speak on the metric that counts restarts


def test_a_new_pod_waiting_in_crash_loop_back_off_is_evidence_from_its_first_occurrence() -> None:
    for reason in ("CrashLoopBackOff", "ImagePullBackOff", "Error"):
        found = pods_say(with_pods(pod("a", waiting=reason, restarts=1, ready=False), pod("b"), *OLD_PODS))
        assert found is not None and found.risk == NEW_POD_BREACH_RISK and reason in found.reason
    shared = pods_say(with_pods(pod("a", waiting="ImagePullBackOff", ready=False),
                                pod("o9", "o", waiting="ImagePullBackOff", ready=False), *OLD_PODS))
    assert shared is not None and shared.risk == SHARED_CAUSE_RISK_CAP and "not this release" in shared.reason
    assert pods_say(with_pods(pod("a", waiting="ContainerCreating", ready=False, age=5.0), *OLD_PODS)) is None


def test_a_new_pod_s_first_restart_that_old_pods_do_not_show_acts_when_it_keeps_the_pod_unready() -> None:
    found = pods_say(with_pods(pod("a", restarts=1, ready=False), *OLD_PODS))
    assert found is not None and found.risk == NEW_POD_BREACH_RISK and "first restart" in found.reason
    twice = pods_say(with_pods(pod("a", restarts=2), *OLD_PODS))
    assert twice is not None and twice.risk == NEW_POD_BREACH_RISK
    once = pods_say(with_pods(pod("a", restarts=1), *OLD_PODS))
    assert once is not None and once.risk == SETTLING_RISK_CAP and "no loop yet" in once.reason


def test_restarts_old_pods_show_at_the_same_rate_are_not_the_release_s() -> None:
    """Old pods restart about once an hour each (a day old, 24 restarts); two new pods 30 minutes old with one
    restart between them are what that rate gives (P(N >= 1) = 0.63); 5 restarts in a minute are not (P ~ 1e-6)."""
    flaky_old = tuple(pod(f"o{i}", "o", restarts=24, age=86_400.0) for i in range(6))
    usual = pods_say(with_pods(pod("a", restarts=1, ready=False, age=1800.0), pod("b", age=1800.0), *flaky_old))
    assert usual is not None and usual.risk == SHARED_CAUSE_RISK_CAP and "old pods restart as much" in usual.reason
    loop = pods_say(with_pods(pod("a", restarts=5, ready=False, age=60.0), *flaky_old))
    assert loop is not None and loop.risk == NEW_POD_BREACH_RISK
    unknown_ages = tuple(pod(f"o{i}", "o", restarts=3, age=None) for i in range(6))
    unknown = pods_say(with_pods(pod("a", restarts=1, ready=False), *unknown_ages))
    assert unknown is not None and unknown.risk == SHARED_CAUSE_RISK_CAP


def test_new_pods_never_ready_while_old_ones_are_act_beyond_the_readiness_allowance() -> None:
    late = with_pods(pod("a", ready=False, age=400.0), *OLD_PODS)
    found = pods_say(late)
    assert found is not None and found.risk >= 0.7 and "beyond the readiness allowance of 5m00s" in found.reason
    assert pods_say(replace(late, ready_allowance_seconds=600.0)) is None  # the template allows a slow start
    assert pods_say(with_pods(pod("a", ready=False, age=200.0), *OLD_PODS)) is None
    unready_old = (*OLD_PODS[:-1], pod("o5", "o", ready=False, age=86_400.0))
    assert pods_say(with_pods(pod("a", ready=False, age=400.0), *unready_old)) is None  # old pods are not ready
    assert pods_say(with_pods(pod("a", ready=False, age=None))) is None  # no age, no old pods: cannot tell


def test_poisson_tail() -> None:
    assert evidence._poisson_tail(0, 3.0) == 1.0 and evidence._poisson_tail(1, 0.0) == 0.0
    assert abs(evidence._poisson_tail(1, 1.0) - (1 - math.exp(-1))) < 1e-12
    assert abs(evidence._poisson_tail(3, 2.0) - (1 - 5 * math.exp(-2))) < 1e-12


def test_a_trend_still_heading_for_the_threshold_is_building_however_far_its_breach() -> None:
    """0.002 of the limit a minute from 0.5, no breach within any horizon worth acting on, but a rise all the
    same: building. A flat series and a count of events are not."""
    creep = [(0.5, 0.5 + 0.0005 * i + 0.001 * (-1) ** i, 0.5) for i in range(30)]
    assert evidence.still_building(read(MEMORY, creep))
    assert not max((e.risk for e in trend_forecasts(read(MEMORY, creep))), default=0.0) >= 0.7
    assert not evidence.still_building(read(MEMORY, [(0.5, 0.5 + 0.001 * (-1) ** i, 0.5) for i in range(30)]))
    assert not evidence.still_building(read(RESTARTS, [(float(i), float(i), 0.0) for i in range(30)]))
