"""ForecastScorer over simulated rollouts: bad releases flagged before their breach, benign effects left alone,
abstention, explanations, trained artifacts saved and reloaded to the same numbers, and no look-ahead."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from predictor.config import MetricSpec, default_metric_pack
from predictor.demo import SimulatedCluster, demo_config
from predictor.detectors import evidence_reading
from predictor.detectors.forecast import DampedTrendForecaster
from predictor.detectors.forest import RolloutIsolationForest, feature_names, history_features
from predictor.detectors.rollout_scorer import ForecastScorer, _range_seconds
from predictor.detectors.trend import SHARED_CAUSE_RISK_CAP
from predictor.domain import Action, Assessment, DeploymentRef, Observation, RolloutState, Scope
from predictor.engine import Engine
from predictor.features import MetricHistory
from predictor.models import load_artifact, save_artifact
from predictor.simulate import SCENARIO_KINDS, SimulatedRollout

START = 1_767_268_800.0
STEP = 15.0
HORIZON = 600.0
SPECS: tuple[MetricSpec, ...] = default_metric_pack()
METRICS = [s.name for s in SPECS]
REF = DeploymentRef("shop", "checkout")
BAD_KINDS = [k for k in SCENARIO_KINDS if k != "healthy"]
RISK = 0.7
"""The policy's default risk threshold."""


# Scenarios beyond the simulator's kinds ------------------------------------------------------------------------
@dataclass
class CacheFill(SimulatedRollout):
    """New pods' memory rises by 0.25 of the limit and levels off (time constant 2 min): a cache filling up."""

    def pod_value(self, metric: str, new: bool, age: float, t: float, pod: int) -> float:
        value = super().pod_value(metric, new, age, t, pod)
        if new and metric == "memory_limit_ratio":
            value += 0.25 * (1.0 - math.exp(-age / 120.0))
        return value


@dataclass
class TrafficSurge(SimulatedRollout):
    """Every pod, old and new, gets +0.5 s of p99 latency for a few minutes: breaches, but not the release's."""

    def pod_value(self, metric: str, new: bool, age: float, t: float, pod: int) -> float:
        value = super().pod_value(metric, new, age, t, pod)
        elapsed = t - self.start - 60.0
        if metric == "latency_p99" and elapsed > 0:
            value += 0.5 * max(0.0, min(elapsed / 120.0, 1.0, (300.0 - elapsed) / 120.0))
        return value


@dataclass
class NoisyOldPod(SimulatedRollout):
    """One old pod reports five times its value on every fourth scrape."""

    def pod_value(self, metric: str, new: bool, age: float, t: float, pod: int) -> float:
        value = super().pod_value(metric, new, age, t, pod)
        if not new and pod == 100 and (int(t - self.start) // 15) % 4 == 0:
            value *= 5.0
        return value


@dataclass
class SlowWarmup(SimulatedRollout):
    """New pods start 0.6 s slower and settle over 90 s: the first one breaches the latency SLO while warming."""

    def pod_value(self, metric: str, new: bool, age: float, t: float, pod: int) -> float:
        value = super().pod_value(metric, new, age, t, pod)
        if new and metric == "latency_p99" and age < 90.0:
            value += 0.6 * (1.0 - age / 90.0)
        return value


class ScrapeTrouble:
    """A rollout seen through a flaky scrape: some ticks unknown, and now and then one counter reset that shows as
    a single wild sample (never two within five ticks)."""

    def __init__(self, sim: SimulatedRollout) -> None:
        self.sim = sim
        rng = np.random.default_rng([sim.seed, 99])
        ticks = 80
        self.gaps = set(np.flatnonzero(rng.random(ticks) < 0.15).tolist())
        self.resets = set(range(int(rng.integers(3, 8)), ticks, 9))

    def state(self, t: float) -> RolloutState:
        return self.sim.state(t)

    def observations(self, metric: str, t: float) -> list[Observation]:
        observations = self.sim.observations(metric, t)
        tick = round((t - self.sim.start) / STEP)
        if tick in self.gaps:
            return [Observation(o.ref, o.metric, o.scope, t, None, error="scrape failed") for o in observations]
        if tick in self.resets:
            return [Observation(o.ref, o.metric, o.scope, t,
                                None if o.value is None else o.value * 8.0 + (4.0 if metric == "restarts_5m" else 0),
                                pods=o.pods) for o in observations]
        return observations


# Driving a scorer the way the engine does ----------------------------------------------------------------------
Run = list[tuple[float, list[Assessment]]]


def drive(sim: SimulatedRollout | ScrapeTrouble, scorer: ForecastScorer, ticks: int = 48,
          history: MetricHistory | None = None, assess_every: int = 1) -> Run:
    history = history or MetricHistory(lookback_seconds=HORIZON)
    run: Run = []
    for i in range(ticks):
        t = START + i * STEP
        state = sim.state(t)
        for spec in SPECS:
            history.add(state.revision, sim.observations(spec.name, t))
        if i % assess_every == 0 or i == ticks - 1:
            run.append((t, [scorer.assess(state, spec, history, t, HORIZON) for spec in SPECS]))
    return run


def acting_time(run: Run) -> float | None:
    """When the policy would act: the second tick in a row with a risk at or above RISK."""
    previous = False
    for t, assessments in run:
        at_risk = max(a.risk for a in assessments) >= RISK
        if at_risk and previous:
            return t
        previous = at_risk
    return None


def breach_time(sim: SimulatedRollout) -> float:
    times = [b for spec in SPECS if (b := sim.breach_time(spec.name, spec.threshold, START + 900.0))]
    assert times, f"the {sim.kind} scenario must breach when left alone"
    return min(times)


def worst(run: Run) -> Assessment:
    return max((a for _, assessments in run for a in assessments), key=lambda a: a.risk)


# A trained artifact, built from healthy simulated rollouts (seeds apart from the test seeds) --------------------
@dataclass(frozen=True)
class Trained:
    forecasters: dict[str, DampedTrendForecaster]
    forest: RolloutIsolationForest


def train(seeds: Sequence[int], random_state: int) -> Trained:
    rows: list[np.ndarray] = []
    deployment: dict[str, list[float | None]] = {m: [] for m in METRICS}
    for n, seed in enumerate(seeds):
        sim = SimulatedRollout(DeploymentRef("train", f"app{seed}"), "healthy", START, seed=seed)
        history = MetricHistory(lookback_seconds=HORIZON)
        for i in range(48):
            t = START + i * STEP
            state = sim.state(t)
            for spec in SPECS:
                observations = sim.observations(spec.name, t)
                history.add(state.revision, observations)
                if n < 2:
                    deployment[spec.name] += [o.value for o in observations if o.scope is Scope.DEPLOYMENT]
            rows.append(history_features(history, [(state.ref, state.revision)], METRICS, t)[0])
    forecasters = {m: DampedTrendForecaster(step_seconds=STEP).fit(deployment[m]) for m in METRICS}
    forest = RolloutIsolationForest(METRICS, n_estimators=50, random_state=random_state).fit(np.array(rows))
    return Trained(forecasters, forest)


@pytest.fixture(scope="module")
def trained() -> Trained:
    return train(seeds=range(1000, 1010), random_state=20_260_101)


# Bad releases ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [3, 17])
@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_release_reaches_acting_risk_before_its_breach(kind: str, seed: int) -> None:
    sim = SimulatedRollout(REF, kind, START, seed=seed)
    run = drive(sim, ForecastScorer(step_seconds=STEP))
    acted = acting_time(run)
    assert acted is not None, f"{kind} seed {seed}: never at risk; worst {worst(run).reason}"
    assert acted < breach_time(sim), f"{kind} seed {seed}: acting at {acted - START:.0f}s is too late"


@pytest.mark.parametrize("seed", [5, 23])
@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_release_with_trained_models(kind: str, seed: int, trained: Trained) -> None:
    sim = SimulatedRollout(REF, kind, START, seed=seed)
    scorer = ForecastScorer(step_seconds=STEP, forecasters=trained.forecasters, forest=trained.forest)
    acted = acting_time(drive(sim, scorer))
    assert acted is not None and acted < breach_time(sim)


@pytest.mark.parametrize("seed", [2, 31])
def test_one_noisy_old_pod_does_not_hide_a_regression(seed: int) -> None:
    sim = NoisyOldPod(REF, "latency_regression", START, seed=seed)
    acted = acting_time(drive(sim, ForecastScorer(step_seconds=STEP)))
    assert acted is not None and acted < breach_time(SimulatedRollout(REF, "latency_regression", START, seed=seed))


def test_a_leak_is_still_seen_through_scrape_gaps_and_counter_resets() -> None:
    sim = SimulatedRollout(REF, "memory_leak", START, seed=8)
    acted = acting_time(drive(ScrapeTrouble(sim), ForecastScorer(step_seconds=STEP)))
    assert acted is not None and acted < breach_time(sim)


# What must not act -----------------------------------------------------------------------------------------------
BENIGN: dict[str, Callable[[int], SimulatedRollout | ScrapeTrouble]] = {
    "healthy with warm-up": lambda seed: SimulatedRollout(REF, "healthy", START, seed=seed),
    "slow warm-up breaching at first": lambda seed: SlowWarmup(REF, "healthy", START, seed=seed),
    "cache filling up to a plateau": lambda seed: CacheFill(REF, "healthy", START, seed=seed),
    "traffic surge on old and new pods": lambda seed: TrafficSurge(REF, "healthy", START, seed=seed),
    "one noisy old pod": lambda seed: NoisyOldPod(REF, "healthy", START, seed=seed),
    "scrape gaps and counter resets": lambda seed: ScrapeTrouble(SimulatedRollout(REF, "healthy", START, seed=seed)),
}


@pytest.mark.parametrize("seed", [0, 1, 4])
@pytest.mark.parametrize("case", list(BENIGN))
def test_benign_effects_never_act(case: str, seed: int) -> None:
    """Never two ticks in a row at acting risk. The first sample of a first new pod cannot tell a warm-up bump from
    a regression (both are a gap); the second one tells whether the gap closes."""
    run = drive(BENIGN[case](seed), ForecastScorer(step_seconds=STEP))
    acted = acting_time(run)
    reasons = [a.reason for t, assessments in run for a in assessments if a.risk >= RISK and acted and t <= acted]
    assert acted is None, f"{case}, seed {seed}: acts at {acted - START:.0f}s: {reasons}"


@pytest.mark.parametrize("seed", [6, 9])
@pytest.mark.parametrize("case", ["healthy with warm-up", "cache filling up to a plateau",
                                  "traffic surge on old and new pods"])
def test_benign_effects_with_trained_models(case: str, seed: int, trained: Trained) -> None:
    scorer = ForecastScorer(step_seconds=STEP, forecasters=trained.forecasters, forest=trained.forest)
    top = worst(drive(BENIGN[case](seed), scorer))
    assert top.risk < RISK, f"{case}, seed {seed}: {top.reason}"


def test_a_surge_is_explained_as_shared_with_old_pods() -> None:
    run = drive(TrafficSurge(REF, "healthy", START, seed=12), ForecastScorer(step_seconds=STEP), ticks=20)
    latency = [a for _, assessments in run for a in assessments if a.metric == "latency_p99" and a.risk > 0.3]
    assert latency and all("not this release" in a.reason or "not caused by this release" in a.reason
                           for a in latency if a.risk >= 0.5)


# Abstention and explanations -------------------------------------------------------------------------------------
def test_no_data_is_unknown_and_never_risky() -> None:
    history = MetricHistory(HORIZON)
    state = SimulatedRollout(REF, "error_regression", START).state(START)
    history.add(2, [Observation(REF, "error_ratio", s, START, None, error="too little traffic") for s in Scope])
    assessment = ForecastScorer().assess(state, SPECS[0], history, START, HORIZON)
    assert assessment.unknown and assessment.risk == 0.0 and "too little traffic" in assessment.reason


def test_too_few_new_pods_or_samples_abstain_from_the_comparison() -> None:
    sim = SimulatedRollout(REF, "error_regression", START, seed=1)
    early = drive(sim, ForecastScorer(step_seconds=STEP, min_new_samples=4), ticks=3)
    errors = next(a for a in early[-1][1] if a.metric == "error_ratio")
    assert errors.risk < RISK and "abstained: 3 aligned sample(s) < 4" in errors.reason
    strict = drive(sim, ForecastScorer(step_seconds=STEP, min_new_pods=2), ticks=4)
    errors = next(a for a in strict[-1][1] if a.metric == "error_ratio")
    assert errors.risk < RISK and "1 new pod(s) < 2" in errors.reason


def test_the_reason_names_metric_value_threshold_and_forecast() -> None:
    sim = SimulatedRollout(REF, "error_regression", START, seed=4)
    run = drive(sim, ForecastScorer(step_seconds=STEP), ticks=8)
    first = next(a for _, assessments in run for a in assessments if a.risk >= RISK)
    assert first.metric == "error_ratio" and first.predicted_breach is not None
    assert "new pods 0.1" in first.reason and "vs old pods 0.00" in first.reason
    assert "with every pod new the deployment reaches 0.1" in first.reason and ">= 0.05" in first.reason
    leak = SimulatedRollout(REF, "memory_leak", START, seed=4)
    top = worst(drive(leak, ForecastScorer(step_seconds=STEP), ticks=34))
    assert top.metric == "memory_limit_ratio" and top.risk >= RISK
    assert "forecast" in top.reason and "threshold 0.9" in top.reason and "P(breach within 10m00s)" in top.reason


def test_a_summed_metric_is_compared_and_projected_per_pod() -> None:
    """Old pods at 10 each, new pods at 20 each: the sum of 3 new and 5 old (110) is fine, 8 new ones (160) not."""
    spec = MetricSpec(name="inflight", query='x{pod=~"{pods}"}', threshold=150.0, aggregate="sum")
    state = RolloutState(ref=REF, revision=2, new_hash="n", old_hashes=("o",), desired_replicas=8,
                         updated_replicas=3, ready_new_replicas=3, old_replicas=5, started_at=START)
    history = MetricHistory(HORIZON)
    scorer = ForecastScorer(step_seconds=STEP, min_forecast_samples=100)  # the comparison alone
    for i in range(6):
        t = START + i * STEP
        history.add(2, [Observation(REF, "inflight", Scope.DEPLOYMENT, t, 110.0 + i % 2, pods=8),
                        Observation(REF, "inflight", Scope.NEW, t, 60.0 + i % 2, pods=3),
                        Observation(REF, "inflight", Scope.OLD, t, 50.0, pods=5)])
        assessment = scorer.assess(state, spec, history, t, HORIZON)
    assert assessment.risk >= RISK, assessment.reason
    assert "with every pod new the deployment reaches 16" in assessment.reason


def test_a_new_revision_starts_from_scratch() -> None:
    scorer = ForecastScorer(step_seconds=STEP)
    drive(SimulatedRollout(REF, "healthy", START, seed=1), scorer, ticks=10)
    assert {k[1] for k in scorer._tracks} == {2}
    history = MetricHistory(HORIZON)
    rollback = RolloutState(ref=REF, revision=3, new_hash="x", old_hashes=(), desired_replicas=8,
                            updated_replicas=8, ready_new_replicas=8, old_replicas=0, started_at=START)
    history.add(3, [Observation(REF, "error_ratio", s, START + 200, 0.01, pods=8) for s in Scope])
    scorer.assess(rollback, SPECS[0], history, START + 200, HORIZON)
    assert {k[1] for k in scorer._tracks} == {3}


def test_invalid_parameters_name_the_parameter() -> None:
    with pytest.raises(ValueError, match="min_new_samples: expected an integer >= 1, got 0"):
        ForecastScorer(min_new_samples=0)
    with pytest.raises(ValueError, match="forecasters\\['error_ratio'\\]: fitted for a 30s step"):
        ForecastScorer(forecasters={"error_ratio": DampedTrendForecaster.from_params(
            alpha=0.3, beta=0.05, phi=0.96, step_seconds=30.0)})


# Saved, loaded, scored again -------------------------------------------------------------------------------------
def test_trained_models_saved_and_loaded_score_the_same(trained: Trained, tmp_path: Path) -> None:
    path = save_artifact(tmp_path, "rollout-risk", {**trained.forecasters, "forest": trained.forest}, {
        "training_window": {"start": START, "end": START + 720.0},
        "feature_names": feature_names(METRICS),
        "thresholds": {"forest": trained.forest.threshold_},
        "validation": trained.forest.validation_,
    })
    artifact = load_artifact(path)
    for sim in (SimulatedRollout(REF, "memory_leak", START, seed=2), CacheFill(REF, "healthy", START, seed=2)):
        before = drive(sim, ForecastScorer(step_seconds=STEP, forecasters=trained.forecasters, forest=trained.forest))
        after = drive(sim, ForecastScorer(step_seconds=STEP, **artifact.scorer_kwargs()))
        assert after == before


# No look-ahead ---------------------------------------------------------------------------------------------------
@settings(max_examples=6, deadline=None)
@given(kind=st.sampled_from(SCENARIO_KINDS), seed=st.integers(0, 100_000), cut=st.integers(1, 23))
def test_assessments_of_a_prefix_equal_the_first_assessments_of_the_whole(kind: str, seed: int, cut: int) -> None:
    sim = SimulatedRollout(REF, kind, START, seed=seed)
    whole = drive(sim, ForecastScorer(step_seconds=STEP), ticks=24)
    assert drive(sim, ForecastScorer(step_seconds=STEP), ticks=cut) == whole[:cut]


@pytest.mark.parametrize("seed", [7])
def test_assessing_every_tick_or_only_now_gives_the_same_answer(seed: int) -> None:
    """The scorer catches up on the samples it has not seen: skipped ticks change nothing."""
    sim = SimulatedRollout(REF, "memory_leak", START, seed=seed)
    every = drive(sim, ForecastScorer(step_seconds=STEP), ticks=30)
    sparse = drive(sim, ForecastScorer(step_seconds=STEP), ticks=30, assess_every=7)
    assert sparse[-1] == every[-1]


# A drop-in for the engine ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kind", "seed"), [("error_regression", 3), ("healthy", 3)])
def test_engine_with_the_forecast_scorer(kind: str, seed: int) -> None:
    sim = SimulatedRollout(REF, kind, START, seed=seed)
    cluster = SimulatedCluster([sim])
    engine = Engine(demo_config(Action.UNDO), rollouts=cluster, metrics=cluster, actuator=cluster,
                    notifier=cluster, scorer=ForecastScorer(step_seconds=STEP))
    for i in range(40):
        engine.tick(START + i * STEP)
    if kind == "healthy":
        assert cluster.actions == []
    else:
        # an abrupt regression is paused on its first new sample (decisive), the pause then escalates to one undo
        assert cluster.actions[0][0] < breach_time(sim)
        assert [d.action for _, d in cluster.actions] in ([Action.UNDO], [Action.PAUSE, Action.UNDO])


# Counts of events, and breaches after the last old pod left ------------------------------------------------------
RESTARTS = next(s for s in SPECS if s.name == "restarts_5m")
CPU = next(s for s in SPECS if s.name == "cpu_limit_ratio")


def _rolling(t: float, new: int = 2, old: int = 6) -> RolloutState:
    return RolloutState(ref=REF, revision=2, new_hash="n", old_hashes=("o",), desired_replicas=new + old,
                        updated_replicas=new, ready_new_replicas=new, old_replicas=old, started_at=START)


def _feed(history: MetricHistory, spec: MetricSpec, t: float, dep: float | None, new: float | None,
          old: float | None) -> None:
    history.add(2, [Observation(REF, spec.name, scope, t, value, pods=2)
                    for scope, value in ((Scope.DEPLOYMENT, dep), (Scope.NEW, new), (Scope.OLD, old))])


def _risks(spec: MetricSpec, rows: Sequence[tuple[float | None, float | None, float | None]],
           state: Callable[[float], RolloutState] = _rolling) -> list[Assessment]:
    history, scorer, out = MetricHistory(HORIZON), ForecastScorer(step_seconds=STEP), []
    for i, (dep, new, old) in enumerate(rows):
        t = START + i * STEP
        _feed(history, spec, t, dep, new, old)
        out.append(scorer.assess(state(t), spec, history, t, HORIZON))
    return out


ERRORS = next(s for s in SPECS if s.name == "error_ratio")


def _first_acting_tick(assessments: Sequence[Assessment]) -> int | None:
    for i in range(1, len(assessments)):
        if assessments[i - 1].risk >= RISK and assessments[i].risk >= RISK:
            return i
    return None


def _gap_rows(new_level: Callable[[int], float], ticks: int = 16) -> list[tuple[float, float | None, float]]:
    """Old pods at 0.004 with a little scatter; from tick 2 one new pod at `new_level(samples so far)`."""
    rows: list[tuple[float, float | None, float]] = []
    for i in range(ticks):
        old = 0.004 + 0.0004 * (-1) ** i
        new = new_level(i - 2) + 0.002 * (-1) ** (i // 2) if i >= 2 else None
        rows.append((old if new is None else 0.75 * old + 0.25 * new, new, old))
    return rows


def test_an_abrupt_regression_is_decisive_from_the_first_new_pod_s_first_sample() -> None:
    """A gap of 0.2 against a scatter of thousandths, 0.15 beyond a threshold the old pods are 0.046 within: the
    first sample is decisive (the policy pauses at once), the second confirms it does not close."""
    assessments = _risks(ERRORS, _gap_rows(lambda _: 0.2))
    assert assessments[2].risk >= RISK and assessments[2].decisive and _first_acting_tick(assessments) == 3
    assert not any(a.decisive for a in assessments[:2])
    assert "new pods 0.19" in assessments[3].reason and "standard errors" in assessments[3].reason
    assert "decisive from this sample" in assessments[2].reason and "false-positive probability 1e-06" in (
        assessments[2].reason)


def test_a_gap_beyond_the_threshold_by_less_than_old_pods_are_within_it_is_never_decisive() -> None:
    """0.07 on a 0.05 threshold with old pods at 0.004: many standard errors, but 0.02 beyond it against 0.046
    within: marginal, so the warm-up guard holds (a second sample), however sure the gap."""
    assessments = _risks(ERRORS, _gap_rows(lambda _: 0.07))
    assert assessments[2].risk >= RISK and not any(a.decisive for a in assessments)


def test_a_small_gap_needs_more_samples_than_a_large_one() -> None:
    large = _first_acting_tick(_risks(ERRORS, _gap_rows(lambda _: 0.1)))
    small = _first_acting_tick(_risks(ERRORS, _gap_rows(lambda _: 0.054)))
    assert large is not None and small is not None and large < small


def test_a_decaying_warm_up_bump_is_seen_closing_and_only_an_overwhelming_first_sample_is_decisive() -> None:
    """The new pod starts at 0.2, like the regression above, and falls back to the old pods' level within a minute
    (`settle_seconds`): at most its first sample is at acting risk, then the gap is seen closing. One sample
    cannot tell it from the regression: that first sample is decisive (a pause, never an undo, which needs two
    ticks). A marginal bump (0.08: 0.03 beyond the threshold, the old pods 0.046 within) is never decisive."""
    assessments = _risks(ERRORS, _gap_rows(lambda k: 0.004 + 0.196 * max(0.0, 1.0 - k / 4)))
    assert _first_acting_tick(assessments) is None, [a.reason for a in assessments if a.risk >= RISK]
    assert any("the gap closes" in a.reason for a in assessments)
    assert [i for i, a in enumerate(assessments) if a.decisive] == [2]
    marginal = _risks(ERRORS, _gap_rows(lambda k: 0.004 + 0.076 * max(0.0, 1.0 - k / 4)))
    assert _first_acting_tick(marginal) is None and not any(a.decisive for a in marginal)


def test_the_new_pods_trend_starts_once_their_rate_window_is_full() -> None:
    """CPU as `rate(...[1m])`: a new pod's first minute of samples ramps up over a window it did not all run in
    (0.15, 0.3, 0.42), then CPU climbs 0.06/min towards the 0.9 limit. Fitted from the ramp, the trend would bend
    (a curve levelling off) and wait; from the end of the window on it is the steady climb it is."""
    ramp = [0.15, 0.3, 0.42, 0.45]
    climb = [0.45 + 0.015 * k + 0.004 * (-1) ** k for k in range(1, 30)]
    rows = [(0.4, None, 0.4)] * 2 + [(max(0.4, v), v, 0.4) for v in ramp + climb]
    assessments = _risks(CPU, rows)
    acted = _first_acting_tick(assessments)
    assert acted is not None and rows[acted][1] is not None and rows[acted][1] < 0.75, (
        acted, [a.reason for a in assessments[-3:]])
    assert "trending" in assessments[acted].reason


def test_one_restart_of_a_new_pod_is_an_event_not_a_trend() -> None:
    """increase(...[5m]) turns one restart into a step (here with the extrapolation's overshoot): not extrapolated."""
    counts = [0.0] * 4 + [1.5, 1.25, 1.1] + [1.05] * 12
    assessments = _risks(RESTARTS, [(c, c, 0.0) for c in counts])
    assert max(a.risk for a in assessments) < RISK, max(assessments, key=lambda a: a.risk).reason
    assert "a count is not extrapolated" in assessments[-1].reason


def _crashing(t: float) -> RolloutState:
    """Two new pods restarting in a loop: the kubelet backs off, one of them is never ready."""
    return replace(_rolling(t), ready_new_replicas=1)


def test_recurring_restarts_of_new_pods_that_keep_them_unready_act() -> None:
    counts = [0.0] * 3 + [1.0, 1.0, 1.0, 2.1, 2.05, 2.0]
    assessments = _risks(RESTARTS, [(c, c, 0.0) for c in counts], _crashing)
    assert assessments[-1].risk >= RISK and "recurring" in assessments[-1].reason
    assert "not ready: a crash loop" in assessments[-1].reason
    assert max(a.risk for a in assessments[:-2]) < RISK
    shared = _risks(RESTARTS, [(c, c, c) for c in counts], _crashing)
    assert shared[-1].risk < RISK and "old pods restart too" in shared[-1].reason


def test_two_restarts_of_a_new_pod_that_serves_again_are_no_loop_unless_the_count_still_rises() -> None:
    """Two counter resets of one pod within 5 minutes: 2 restarts in the window, every new pod ready. Alert at
    most; a count that still rises on each of the last two samples is a loop however ready the pods look."""
    counts = [0.0] * 3 + [1.0, 1.0, 1.0] + [2.0] * 12
    assessments = _risks(RESTARTS, [(c, c, 0.0) for c in counts])
    assert max(a.risk for a in assessments) < RISK, max(assessments, key=lambda a: a.risk).reason
    assert "no loop" in assessments[-1].reason
    rising = [0.0] * 3 + [1.0, 1.5, 2.0, 2.25, 2.5]
    assessments = _risks(RESTARTS, [(c, c, 0.0) for c in rising])
    assert assessments[-1].risk >= RISK and "still rising" in assessments[-1].reason


def test_the_history_keeps_one_traffic_series_per_deployment_revision() -> None:
    history = MetricHistory(lookback_seconds=60.0)
    for i in range(6):
        t = START + i * STEP
        for metric, traffic in (("error_ratio", 10.0 + i), ("other_ratio", 99.0)):  # the first one at a time wins
            history.add(2, [Observation(REF, metric, Scope.DEPLOYMENT, t, 0.01, pods=2, traffic=traffic),
                            Observation(REF, metric, Scope.NEW, t, 0.01, pods=1, traffic=1000.0)])
    times, values = history.traffic_per_pod(REF, 2)
    assert (times - START).tolist() == [15.0, 30.0, 45.0, 60.0, 75.0]  # the lookback: 60 s before the last
    assert values.tolist() == [11.0, 12.0, 13.0, 14.0, 15.0]
    assert history.traffic_at_start(REF, 2) == 11.0  # the median of the first three, kept past the lookback
    assert history.traffic_per_pod(REF, 1)[0].size == 0
    history.forget(REF)
    assert history.traffic_per_pod(REF, 2)[0].size == 0 and history.traffic_at_start(REF, 2) is None


@pytest.mark.parametrize("worse_before", [True, False])
def test_a_rise_after_the_last_old_pod_left_that_follows_the_traffic_is_not_the_release_s(worse_before: bool) -> None:
    """Every pod's CPU climbs once the rollout completed (a leak too young to show while old pods ran, or new pods
    already worse then): the release's, unless the Deployment's traffic rose with it (a surge: alert at most)."""
    def state(t: float) -> RolloutState:
        done = t >= START + 8 * STEP
        return replace(_rolling(t, new=8 if done else 2, old=0 if done else 6),
                       completed_at=START + 8 * STEP if done else None)

    before = [(0.4, 0.5 + 0.01 * i, 0.4) if worse_before else (0.4, 0.4 + 0.002 * (i % 2), 0.4) for i in range(8)]
    rows = before + [(0.4 + 0.03 * i, 0.4 + 0.03 * i, None) for i in range(1, 20)]

    def risks(traffic: Callable[[int], float]) -> list[Assessment]:
        history, scorer, out = MetricHistory(HORIZON), ForecastScorer(step_seconds=STEP), []
        for i, (dep, new, old) in enumerate(rows):
            t = START + i * STEP
            history.add(2, [Observation(REF, CPU.name, scope, t, value, pods=2,
                                        traffic=traffic(i) if scope is Scope.DEPLOYMENT else None)
                            for scope, value in ((Scope.DEPLOYMENT, dep), (Scope.NEW, new), (Scope.OLD, old))])
            out.append(scorer.assess(state(t), CPU, history, t, HORIZON))
        return out

    flat = risks(lambda i: 100.0 + (i % 3))
    assert _first_acting_tick(flat[8:]) is not None
    # while pods are replaced, young pods' rates under-count: the traffic dips and recovers, which is no surge
    churn = [47.0, 41.1, 45.0, 37.2, 44.9, 37.1, 44.9, 43.0]  # as Prometheus gave it for a 3-replica rollout
    assert _first_acting_tick(risks(lambda i: churn[i] if i < len(churn) else 46.9)[8:]) is not None
    surge = risks(lambda i: 100.0 if i < 8 else 100.0 + 8.0 * (i - 7))  # +8% a tick from the climb's start
    late = surge[8:]
    assert _first_acting_tick(late) is None  # at most one tick at acting risk before the rise shows
    assert any("traffic rose" in a.reason and "requests/s" in a.reason for a in late if a.risk > 0)
    first_capped = next(i for i, a in enumerate(late) if "traffic rose" in a.reason)
    assert first_capped >= 2  # +8, +16: below the 25% rise; it takes the median of 3 samples to see it
    assert all(a.risk <= SHARED_CAUSE_RISK_CAP for a in late[first_capped:])


def test_a_rise_after_the_last_old_pod_left_is_not_the_release_s_unless_it_was_worse_before() -> None:
    """New pods as good as old pods while both ran, then every pod's CPU climbs (a surge): alert at most."""
    def state(t: float) -> RolloutState:
        done = t >= START + 8 * STEP
        return replace(_rolling(t, new=8 if done else 2, old=0 if done else 6),
                       completed_at=START + 8 * STEP if done else None)

    calm = [(0.4, 0.4 + 0.002 * (i % 2), 0.4) for i in range(8)]
    climb = [(0.4 + 0.03 * i, 0.4 + 0.03 * i, None) for i in range(1, 20)]
    assessments = _risks(CPU, calm + climb, state)
    late = assessments[8:]
    assert max(a.risk for a in late) < RISK
    assert any("not attributable to this release" in a.reason for a in late if a.risk > 0)
    worse = [(0.4, 0.5 + 0.01 * i, 0.4) for i in range(8)]  # new pods already worse and rising
    assessments = _risks(CPU, worse + climb, state)
    assert max(a.risk for a in assessments[8:]) >= RISK


def test_old_pods_rate_series_lingering_after_the_last_one_left_are_no_comparison() -> None:
    """A surge starts as the last old pod leaves. For a rate window the old pods' series still show their last,
    calmer values: comparing the new pods with them would blame the release. Once the rollout state has no old
    pod, the new pods are compared with nothing and the traffic tells the surge."""
    def state(t: float) -> RolloutState:
        done = t >= START + 8 * STEP
        return replace(_rolling(t, new=8 if done else 2, old=0 if done else 6),
                       completed_at=START + 8 * STEP if done else None)

    calm = [(0.4, 0.4 + 0.002 * (i % 2), 0.4) for i in range(8)]
    surge = [(v, v, 0.4 if i < 4 else None) for i, v in enumerate([0.55, 0.75, 0.95, 1.0, 1.0, 1.0, 1.0, 1.0])]
    history, scorer, out = MetricHistory(HORIZON), ForecastScorer(step_seconds=STEP), []
    for i, (dep, new, old) in enumerate(calm + surge):
        t = START + i * STEP
        traffic = 100.0 if i < 8 else 100.0 * 1.3 ** min(i - 7, 4)
        history.add(2, [Observation(REF, CPU.name, scope, t, value, pods=2,
                                    traffic=traffic if scope is Scope.DEPLOYMENT else None)
                        for scope, value in ((Scope.DEPLOYMENT, dep), (Scope.NEW, new), (Scope.OLD, old))])
        out.append(scorer.assess(state(t), CPU, history, t, HORIZON))
    assert _first_acting_tick(out) is None, [a.reason for a in out[8:] if a.risk >= RISK]
    assert not any("vs old pods" in a.reason for a in out[8:])
    assert any("traffic rose" in a.reason for a in out[8:])


@pytest.mark.parametrize(("query", "seconds"), [("rate(x[1m])", 60.0), ("rate(x[1m30s])", 90.0),
                                                ("rate(x[500ms])", 0.5), ("max_over_time(x[1w])", 604800.0),
                                                ("rate(x[5m:15s])", 300.0), ("x", 0.0),
                                                ("increase(a[5m]) / rate(b[2h])", 7200.0)])
def test_the_rate_window_is_read_from_any_promql_duration(query: str, seconds: float) -> None:
    assert _range_seconds(query) == seconds


def test_the_traffic_dip_while_pods_are_replaced_is_no_surge_when_it_recovers() -> None:
    """With `[5m]` rate windows most pods are younger than their window for minutes: the Deployment's traffic per
    pod sinks while pods are replaced and comes back once they have served a whole window. Against the level
    when the rollout began that return is no surge, so a CPU climb after completion, which the new pods already
    showed while old pods ran, stays the release's."""
    def state(t: float) -> RolloutState:
        done = t >= START + 8 * STEP
        return replace(_rolling(t, new=5 if done else 2, old=0 if done else 3),
                       completed_at=START + 8 * STEP if done else None)

    per_pod = [40.8, 40.8, 40.8, 30.0, 26.0, 25.0, 25.0, 25.0, 26.0, 28.0, 30.0, 33.0, 36.0] + [40.8] * 14
    rows = [(0.4, 0.5 + 0.01 * i, 0.4) for i in range(8)] + [(0.4 + 0.03 * i, 0.4 + 0.03 * i, None)
                                                            for i in range(1, 20)]
    history, scorer, out = MetricHistory(HORIZON), ForecastScorer(step_seconds=STEP), []
    for i, (dep, new, old) in enumerate(rows):
        t = START + i * STEP
        history.add(2, [Observation(REF, CPU.name, Scope.DEPLOYMENT, t, dep, pods=5, traffic=per_pod[i] + i % 2),
                        Observation(REF, CPU.name, Scope.NEW, t, new, pods=2),
                        Observation(REF, CPU.name, Scope.OLD, t, old, pods=3)])
        out.append(scorer.assess(state(t), CPU, history, t, HORIZON))
    assert not any("traffic rose" in a.reason for a in out)
    assert _first_acting_tick(out[8:]) is not None


def test_the_deployment_s_rise_with_the_mix_of_pods_is_explained_not_counted() -> None:
    """New pods steady just below the threshold: as they take over, the Deployment's error ratio climbs toward
    theirs, which a trend of the Deployment alone would extrapolate beyond it."""
    rows = [(0.004 + 0.0028 * i, 0.045 + 0.0004 * (-1) ** i, 0.004) for i in range(16)]
    assessments = _risks(ERRORS, rows)
    assert max(a.risk for a in assessments) < 0.05
    assert "the deployment's own trend waits until every pod is new" in assessments[-1].reason


def test_the_deployment_s_trend_starts_once_every_pod_is_new() -> None:
    """New pods settle at an error ratio well above old pods' yet within the threshold; the Deployment's value
    climbs toward theirs while pods are replaced and stays there once the rollout completed. That climb was the
    mix, not a trend: no action after completion either."""
    def state(t: float) -> RolloutState:
        done = t >= START + 12 * STEP
        return replace(_rolling(t, new=8 if done else 2, old=0 if done else 6),
                       completed_at=START + 12 * STEP if done else None)

    mixing = [(0.004 + 0.003 * i, 0.04 + 0.0004 * (-1) ** i, 0.004) for i in range(12)]
    settled = [(0.04 + 0.0004 * (-1) ** i, 0.04 + 0.0004 * (-1) ** i, None) for i in range(28)]
    assessments = _risks(ERRORS, mixing + settled, state)
    assert max(a.risk for a in assessments) < 0.5, max(assessments, key=lambda a: a.risk).reason


MEMORY = next(s for s in SPECS if s.name == "memory_limit_ratio")


@pytest.mark.parametrize("factor", [4.0, 1000.0])
def test_a_young_trend_is_extrapolated_at_most_four_times_as_far_as_it_reaches_back(
    factor: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """New pods' memory climbs 0.02 of the limit a minute from 0.5: 0.9 in 20 minutes. Read as a straight line
    (`flatten_z=0`), its first two minutes already predict that within the 30-minute horizon; looked at 4 times
    as far as it reaches back, a trend of t minutes acts once 4 t covers the 20 - t minutes left, after about 4
    minutes, still 16 minutes early."""
    monkeypatch.setattr(evidence_reading, "EXTRAPOLATION_FACTOR", factor)
    history, scorer, out = MetricHistory(HORIZON), ForecastScorer(step_seconds=STEP, flatten_z=0.0), []
    for i in range(40):
        t = START + i * STEP
        new = 0.5 + 0.005 * i + 0.001 * (-1) ** i
        _feed(history, MEMORY, t, new, new, 0.5)
        out.append(scorer.assess(_rolling(t), MEMORY, history, t, 1800.0))
    acting = _first_acting_tick(out)
    assert acting is not None
    if factor == 4.0:
        assert 15 <= acting <= 20, acting  # 3m45s .. 5m00s
        assert any("is extrapolated 4 times as far, not the whole 30m00s" in a.reason for a in out[:acting])
    else:
        assert acting <= 10, acting
