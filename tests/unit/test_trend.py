"""The threshold-and-trend scorer on tiny series: breaches, new versus old pods, trends, gaps and NaN."""

import math

import pytest

from predictor.config import MetricSpec
from predictor.detectors.trend import SHARED_CAUSE_RISK_CAP, ThresholdTrendScorer, risk_for_time_to_breach
from predictor.domain import DeploymentRef, Direction, Observation, RolloutState, Scope
from predictor.features import MetricHistory, fit_trend
from tests.series import expand

REF = DeploymentRef("shop", "checkout")
SPEC = MetricSpec(name="error_ratio", query='x{pod=~"{pods}"}', threshold=0.05)
STEP = 15.0


def rollout(progress: float = 0.25) -> RolloutState:
    return RolloutState(ref=REF, revision=2, new_hash="n", old_hashes=("o",), desired_replicas=8,
                        updated_replicas=int(8 * progress), ready_new_replicas=int(8 * progress),
                        old_replicas=8 - int(8 * progress), started_at=0.0)


def history(deployment: str, new: str = "", old: str = "", spec: MetricSpec = SPEC) -> tuple[MetricHistory, float]:
    h = MetricHistory(lookback_seconds=3600)
    columns = {Scope.DEPLOYMENT: expand(deployment), Scope.NEW: expand(new), Scope.OLD: expand(old)}
    length = max(len(v) for v in columns.values())
    for i in range(length):
        obs = []
        for scope, values in columns.items():
            value = values[i] if i < len(values) else None
            obs.append(Observation(REF, spec.name, scope, i * STEP, value, pods=2 if value is not None else 0))
        h.add(2, obs)
    return h, (length - 1) * STEP


def assess(deployment: str, new: str = "", old: str = "", spec: MetricSpec = SPEC, horizon: float = 600.0):
    h, now = history(deployment, new, old, spec)
    return ThresholdTrendScorer().assess(rollout(), spec, h, now, horizon)


def test_flat_healthy_series_has_no_risk() -> None:
    a = assess("0.01 0.011 0.009 0.01 0.012 0.01", "0.01x6", "0.01x6")
    assert a.risk == 0 and not a.unknown and a.predicted_breach is None
    assert "no breach predicted" in a.reason


def test_deployment_breach_now_is_full_risk() -> None:
    a = assess("0.01 0.02 0.06", "0.01 0.02 0.06", "0.01 0.01 0.01")
    assert a.risk == 1.0 and a.predicted_breach == 30.0
    assert "deployment 0.06 >= 0.05 now" in a.reason


def test_new_pods_breaching_while_old_pods_fine_predicts_the_deployment_breach() -> None:
    a = assess("0.01 0.02 0.03", "0.1 0.1 0.1", "0.01 0.01 0.01")
    assert a.risk == pytest.approx(0.95)
    assert a.predicted_breach is not None and a.predicted_breach > 30.0
    assert "new pods 0.1 >= 0.05 while old pods 0.01" in a.reason


def test_breach_shared_by_old_pods_is_capped_below_acting() -> None:
    a = assess("0.08 0.08 0.08", "0.09 0.09 0.09", "0.07 0.07 0.07")
    assert a.risk == SHARED_CAUSE_RISK_CAP
    assert "old pods too" in a.reason


def test_linear_trend_predicts_time_to_breach() -> None:
    # +0.0005 per 15 s from 0.01: reaches 0.05 after 80 steps; we are at step 40
    a = assess("0.01+0.0005x40", "0.01+0.0005x40", "0.01x41")
    assert a.predicted_breach == pytest.approx(80 * STEP, rel=0.01)
    assert a.risk == pytest.approx(risk_for_time_to_breach(40 * STEP, 600.0), rel=0.01)


def test_warmup_ramp_of_new_pods_is_not_a_trend() -> None:
    # a new pod's rate() ramps from 0 over its first minute, then holds: no trend to extrapolate
    a = assess("0.1 0.1 0.1 0.1 0.1 0.1 0.1 0.1", "0 0.1 0.2 0.3 0.35 0.35 0.35 0.35", "0.35x8",
               spec=MetricSpec(name="cpu", query='x{pod=~"{pods}"}', threshold=0.9))
    assert a.risk == 0.0


def test_a_short_trend_is_not_extrapolated_far() -> None:
    # 2 minutes after warm-up, rising +0.0005 per 15 s: the breach is 13 minutes away, beyond 3 x the span
    a = assess("0.01+0.0005x14", "0.01+0.0005x14", "0.01x15", horizon=3600.0)
    assert a.predicted_breach is None


def test_trend_shared_with_old_pods_is_capped() -> None:
    a = assess("0.01+0.0005x40", "0.01+0.0005x40", "0.01+0.0005x40")
    assert 0 < a.risk <= SHARED_CAUSE_RISK_CAP
    assert "not this release" in a.reason


def test_below_direction() -> None:
    spec = MetricSpec(name="availability", query='x{pod=~"{pods}"}', threshold=0.99, direction=Direction.BELOW)
    a = assess("0.999 0.995 0.985", "0.999 0.99 0.98", "0.999x3", spec=spec)
    assert a.risk == 1.0


def test_no_data_is_unknown_never_risky() -> None:
    a = assess("_ _ _", "_ _ _", "_ _ _")
    assert a.unknown and a.risk == 0.0
    a = assess("0.1 0.1 _", "0.1 0.1 _", "0.01 0.01 _")
    assert a.unknown, "a stale value must not count as fresh evidence"


def test_nan_and_inf_are_unknown() -> None:
    h = MetricHistory(3600)
    for i, value in enumerate([0.01, math.nan, math.inf]):
        h.add(2, [Observation(REF, "error_ratio", s, i * STEP, value) for s in Scope])
    a = ThresholdTrendScorer().assess(rollout(), SPEC, h, 2 * STEP, 600.0)
    assert a.unknown


def test_too_short_for_a_trend() -> None:
    h, now = history("0.01 0.04", "0.01 0.04", "0.01 0.01")
    assert fit_trend(h.series(REF, 2, "error_ratio", Scope.DEPLOYMENT), now, 600) is None
    assert assess("0.01 0.04", "0.01 0.04", "0.01 0.01").risk == 0.0


def test_constant_series_has_no_trend() -> None:
    h, now = history("0.02x10")
    trend = fit_trend(h.series(REF, 2, "error_ratio", Scope.DEPLOYMENT), now, 600)
    assert trend is not None and trend.slope == 0 and trend.time_to(0.05) is None


def test_noisy_flat_series_is_not_a_trend() -> None:
    a = assess("0.01 0.03 0.01 0.03 0.01 0.03 0.01 0.03 0.01 0.035")
    assert a.risk == 0.0


def test_history_drops_samples_older_than_lookback() -> None:
    h = MetricHistory(lookback_seconds=60)
    for i in range(10):
        h.add(2, [Observation(REF, "m", Scope.DEPLOYMENT, i * STEP, float(i))])
    series = h.series(REF, 2, "m", Scope.DEPLOYMENT)
    assert series.times[0] == 5 * STEP and series.last == 9.0
