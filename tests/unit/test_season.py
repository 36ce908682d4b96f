"""SeasonalProfile: fitted where the history covers the season and shows one, refused with the reason where it does
not, saved and loaded to the same numbers; and the forecast scorer's use of it: a daily ramp is neither a release's
trend nor, when the season itself reaches the threshold, the release's breach."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from itertools import pairwise

import numpy as np
import pytest

from predictor.config import default_metric_pack
from predictor.detectors.rollout_scorer import ForecastScorer
from predictor.detectors.season import SeasonalProfile
from predictor.detectors.trend import SHARED_CAUSE_RISK_CAP
from predictor.domain import Assessment, DeploymentRef, Direction, Observation, RolloutState, Scope
from predictor.features import MetricHistory

DAY = 86400.0
MIDNIGHT = 1_767_225_600.0
"""2026-01-01T00:00:00Z."""
STEP = 300.0
CPU = next(s for s in default_metric_pack() if s.name == "cpu_limit_ratio")
REF = DeploymentRef("shop", "checkout")
RISK = 0.7


def history(shape: Callable[[float], float], days: float = 3.0, noise: float = 0.01,
            seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    times = MIDNIGHT + np.arange(0.0, days * DAY, STEP)
    rng = np.random.default_rng(seed)
    return times, np.array([shape(t) for t in times]) + rng.normal(0.0, noise, times.size)


def sine(t: float) -> float:
    return 0.5 + 0.2 * math.sin(2 * math.pi * ((t - MIDNIGHT) % DAY) / DAY)


def morning_ramp(t: float, low: float = 0.35, high: float = 0.8) -> float:
    """CPU of a service busy from 08:00: it climbs from `low` to `high` within the hour, stays until 20:00, then
    falls back within the hour."""
    hour = ((t - MIDNIGHT) % DAY) / 3600.0
    rise = min(max(hour - 8.0, 0.0), 1.0)
    fall = min(max(hour - 20.0, 0.0), 1.0)
    return low + (high - low) * (rise - fall)


def test_a_daily_sine_is_recovered_with_its_phase() -> None:
    profile = SeasonalProfile().fit(*history(sine))
    assert profile.significant_
    assert profile.amplitude == pytest.approx(0.4, rel=0.1)
    assert profile.offset(MIDNIGHT + 6 * 3600) == pytest.approx(0.2, abs=0.03)  # the peak at 06:00
    assert profile.offset(MIDNIGHT + 18 * 3600 + 5 * DAY) == pytest.approx(-0.2, abs=0.03)  # any later day


def test_noise_without_a_season_is_not_kept() -> None:
    profile = SeasonalProfile().fit(*history(lambda t: 0.5, noise=0.05))
    assert not profile.significant_
    assert profile.aic_seasonal_ >= profile.aic_plain_


def test_a_constant_series_has_no_season() -> None:
    profile = SeasonalProfile().fit(*history(lambda t: 0.5, noise=0.0))
    assert not profile.significant_
    assert profile.amplitude == 0.0


def test_a_history_shorter_than_two_seasons_is_refused_with_what_it_covers() -> None:
    with pytest.raises(ValueError, match=r"history covers 36\.0 h, a season of 24 h needs 2 whole cycles"):
        SeasonalProfile().fit(*history(sine, days=1.5))


def test_unknown_samples_are_skipped_and_too_many_empty_bins_refused() -> None:
    times, values = history(sine)
    holes = values.astype(object)
    holes[::7] = None
    holes[1::7] = math.nan
    assert SeasonalProfile().fit(times, holes).amplitude == pytest.approx(0.4, rel=0.1)
    outage = values.copy()
    outage[(times > MIDNIGHT + DAY) & (times < MIDNIGHT + DAY + 12 * 3600)] = math.nan
    with pytest.raises(ValueError, match=r"1[67]% of its 15-minute bins have no sample, at most 10% may be missing"):
        SeasonalProfile().fit(times, outage)


@pytest.mark.parametrize(("params", "field"), [({"bin_seconds": 700.0}, "period_seconds"),
                                               ({"min_cycles": 1}, "min_cycles"),
                                               ({"bin_seconds": 0.0}, "bin_seconds")])
def test_bad_parameters_name_the_parameter(params: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SeasonalProfile(**params).fit(*history(sine))  # type: ignore[arg-type]


def test_offsets_interpolate_between_bin_centres_and_worst_offset_is_the_extreme_within() -> None:
    profile = SeasonalProfile().fit(*history(morning_ramp))
    grid = MIDNIGHT + 7.5 * 3600 + np.arange(0.0, 3600.0, 10.0)
    dense = profile.offsets(grid)
    assert dense == pytest.approx([profile.offset(t) for t in grid])
    assert profile.worst_offset(grid[0], grid[-1], Direction.ABOVE) == pytest.approx(dense.max())
    assert profile.worst_offset(grid[0], grid[-1], Direction.BELOW) == pytest.approx(dense.min())
    rise = profile.offset(MIDNIGHT + 9.5 * 3600) - profile.offset(MIDNIGHT + 7.5 * 3600)
    assert rise == pytest.approx(0.45, abs=0.03)


def test_saved_and_loaded_it_gives_the_same_offsets() -> None:
    profile = SeasonalProfile().fit(*history(sine))
    again = SeasonalProfile.from_state(json.loads(json.dumps(profile.get_state())))
    grid = MIDNIGHT + np.arange(0.0, DAY, 123.0)
    assert np.array_equal(again.offsets(grid), profile.offsets(grid))
    assert again.significant_ == profile.significant_
    state = profile.get_state()
    state["fitted"]["profile"] = state["fitted"]["profile"][:-1]
    with pytest.raises(ValueError, match="profile has 95 phases, the period has 96"):
        SeasonalProfile.from_state(state)
    del state["fitted"]["aic_plain"]
    state["fitted"]["profile"] = profile.get_state()["fitted"]["profile"]
    with pytest.raises(ValueError, match="aic_plain"):
        SeasonalProfile.from_state(state)


# The scorer --------------------------------------------------------------------------------------------------------
TICK = 15.0
HORIZON = 1800.0
COMPLETED = MIDNIGHT + 10 * DAY + 8.2 * 3600
"""A rollout completed at 08:12, ten days after the history: the Deployment bakes in the morning ramp."""


def _bake_risks(level: Callable[[float], float], season: SeasonalProfile | None, ticks: int = 160) -> list[Assessment]:
    """Every pod is new (the rollout completed); the Deployment's traffic is flat, so a rise is not the load's."""
    state = RolloutState(ref=REF, revision=2, new_hash="n", old_hashes=(), desired_replicas=4, updated_replicas=4,
                         ready_new_replicas=4, old_replicas=0, started_at=COMPLETED - 300, completed_at=COMPLETED)
    scorer = ForecastScorer(step_seconds=TICK, seasons={f"{REF}:{CPU.name}": season} if season else None)
    past = MetricHistory(600.0)
    rng = np.random.default_rng(3)
    out = []
    for i in range(ticks):
        t = COMPLETED + i * TICK
        value = level(t) + float(rng.normal(0.0, 0.004))
        past.add(2, [Observation(REF, CPU.name, scope, t, value if scope is not Scope.OLD else None, pods=4,
                                 traffic=100.0 + i % 3 if scope is Scope.DEPLOYMENT else None)
                     for scope in Scope])
        out.append(scorer.assess(state, CPU, past, t, HORIZON))
    return out


def _acts(assessments: list[Assessment]) -> bool:
    return any(a.risk >= RISK and b.risk >= RISK for a, b in pairwise(assessments))


@pytest.fixture(scope="module")
def ramp_season() -> SeasonalProfile:
    profile = SeasonalProfile().fit(*history(morning_ramp))
    assert profile.significant_
    return profile


def test_the_morning_ramp_is_a_trend_without_the_season_and_none_with_it(ramp_season: SeasonalProfile) -> None:
    assert _acts(_bake_risks(morning_ramp, None))  # the ramp read as the release's trend
    assert max(a.risk for a in _bake_risks(morning_ramp, ramp_season)) < 0.5  # not even an alert


def test_a_leak_on_top_of_the_season_still_acts(ramp_season: SeasonalProfile) -> None:
    def leaking(t: float) -> float:
        return morning_ramp(t) + 0.004 * (t - COMPLETED) / 60.0

    assessments = _bake_risks(leaking, ramp_season)
    assert _acts(assessments)
    acting = next(a for a in assessments if a.risk >= RISK)
    assert "net of the trained season" in acting.reason


def test_a_season_that_itself_reaches_the_threshold_alerts_but_never_acts() -> None:
    def busy(t: float) -> float:
        return morning_ramp(t, low=0.5, high=0.95)

    season = SeasonalProfile().fit(*history(busy))
    before_breach = [a for a in _bake_risks(busy, season) if a.value is not None and a.value < 0.85]
    assert max(a.risk for a in before_breach) <= SHARED_CAUSE_RISK_CAP
    assert any("season alone takes it there" in a.reason and "not this release's" in a.reason
               for a in before_breach)


def test_the_scorer_refuses_an_unfitted_season() -> None:
    with pytest.raises(ValueError, match=r"seasons\['shop/checkout:cpu_limit_ratio'\]: not fitted"):
        ForecastScorer(seasons={f"{REF}:{CPU.name}": SeasonalProfile()})


def test_a_rollout_scored_with_a_season_of_another_deployment_is_unchanged(ramp_season: SeasonalProfile) -> None:
    other = ForecastScorer(step_seconds=TICK, seasons={f"shop/other:{CPU.name}": ramp_season})
    plain = ForecastScorer(step_seconds=TICK)
    state = RolloutState(ref=REF, revision=2, new_hash="n", old_hashes=("o",), desired_replicas=4,
                         updated_replicas=2, ready_new_replicas=2, old_replicas=2, started_at=COMPLETED)
    past = MetricHistory(600.0)
    for i in range(20):
        t = COMPLETED + i * TICK
        past.add(2, [Observation(REF, CPU.name, scope, t, 0.4 + 0.01 * i, pods=2) for scope in Scope])
        assert other.assess(state, CPU, past, t, HORIZON) == plain.assess(state, CPU, past, t, HORIZON)
