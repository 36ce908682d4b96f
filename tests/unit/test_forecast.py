"""The damped-trend forecaster: agreement with statsmodels, streaming updates, robustness, save/load, no look-ahead."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.tsa.exponential_smoothing.ets import ETSModel

from predictor.detectors.forecast import DEFAULT_BOUNDS, DampedTrendForecaster, LocalTrend
from predictor.domain import Direction
from tests.series import expand

STEP = 15.0
PLAIN = {"median_window": 1, "huber_k": None}
"""Plain ETS: no running median, no Huber clipping; what statsmodels computes."""


def trending(seed: int, n: int = 120) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 0.5 + 0.004 * np.arange(n) + np.cumsum(rng.normal(0, 0.003, n)) + rng.normal(0, 0.01, n)


def statsmodels_fit(y: np.ndarray):  # type: ignore[no-untyped-def]
    bounds = {k: tuple(v) for k, v in DEFAULT_BOUNDS.items()}
    return ETSModel(pd.Series(y), error="add", trend="add", damped_trend=True, bounds=bounds).fit(disp=False)


@pytest.mark.parametrize("seed", [11, 12])
def test_fit_forecast_and_interval_match_statsmodels(seed: int) -> None:
    y = trending(seed)
    forecaster = DampedTrendForecaster(**PLAIN).fit(y)
    result = statsmodels_fit(y)
    assert forecaster.alpha_ == pytest.approx(result.smoothing_level, abs=1e-6)
    assert forecaster.phi_ == pytest.approx(result.damping_trend, abs=1e-6)
    mean, sd = forecaster.forecast(10)
    prediction = result.get_prediction(start=len(y), end=len(y) + 9)
    np.testing.assert_allclose(mean, np.asarray(prediction.predicted_mean), rtol=1e-9)
    np.testing.assert_allclose(sd, np.sqrt(np.asarray(prediction.var_pred_mean)), rtol=1e-9)


def test_streaming_updates_equal_the_statsmodels_filter_without_refit() -> None:
    y = trending(13, 150)
    forecaster = DampedTrendForecaster(**PLAIN).fit(y[:100])
    for value in y[100:]:
        forecaster.update(None, float(value))
    result = statsmodels_fit(y[:100])
    smoothed = ETSModel(pd.Series(y), error="add", trend="add", damped_trend=True).smooth(result.params)
    assert forecaster.forecast(1)[0][0] == pytest.approx(float(np.asarray(smoothed.forecast(1))[0]), rel=1e-9)


def test_nan_none_and_inf_are_skipped_without_touching_the_state() -> None:
    forecaster = DampedTrendForecaster.from_params(alpha=0.3, beta=0.05, phi=0.96)
    for i, value in enumerate(expand("1 1.1 1.2 1.3 1.4 1.5")):
        forecaster.update(i * STEP, value)
    before = forecaster.get_state()
    for value in (None, math.nan, math.inf, -math.inf):
        forecaster.update(6 * STEP, value)
    assert forecaster.get_state() == before


def test_a_gap_is_bridged_as_if_the_missing_samples_were_unknown() -> None:
    values = expand("1 1.1 1.2 1.3 1.4 1.5 _ _ 1.8 1.9")
    gapped = DampedTrendForecaster.from_params(alpha=0.3, beta=0.05, phi=0.96)
    with_nones = DampedTrendForecaster.from_params(alpha=0.3, beta=0.05, phi=0.96)
    for i, value in enumerate(values):
        with_nones.update(i * STEP, value)
        if value is not None:
            gapped.update(i * STEP, value)
    assert gapped.get_state() == with_nones.get_state()
    # the two missing steps were forecast, not skipped: the trend carried the level forward
    contiguous = DampedTrendForecaster.from_params(alpha=0.3, beta=0.05, phi=0.96)
    for i, value in enumerate(v for v in values if v is not None):
        contiguous.update(i * STEP, value)
    assert gapped.level_ != contiguous.level_


def test_fit_rejects_too_short_series_and_counts_only_known_values() -> None:
    with pytest.raises(ValueError, match=r"at least 10 known values .* got 3 \(of 5\)"):
        DampedTrendForecaster().fit(expand("1 _ 2 _ 3"))
    with pytest.raises(ValueError, match="times"):
        DampedTrendForecaster().fit(np.arange(12.0), times=np.zeros(12))


def test_fit_on_a_tiny_series_with_nans() -> None:
    values = expand("0.5 _ 0.52 0.51 _ 0.55 0.56 0.58 _ 0.6 0.61 0.63 0.62 0.66")
    forecaster = DampedTrendForecaster(min_fit_samples=8).fit(values, times=np.arange(len(values)) * STEP)
    mean, sd = forecaster.forecast(4)
    assert np.all(np.isfinite(mean)) and np.all(sd > 0)
    assert forecaster.last_time_ == (len(values) - 1) * STEP


def test_constant_series_fits_with_zero_sigma_and_a_sure_answer() -> None:
    forecaster = DampedTrendForecaster().fit(expand("0.2x30"))
    assert forecaster.sigma_ == 0.0 and forecaster.trend_ == 0.0
    mean, sd = forecaster.forecast(5)
    assert np.all(mean == 0.2) and np.all(sd == 0.0)
    assert forecaster.breach(0.3, Direction.ABOVE, 40).probability == 0.0
    assert forecaster.breach(0.2, Direction.ABOVE, 40).probability == 1.0
    assert forecaster.breach(0.2, Direction.ABOVE, 40).seconds == STEP


def test_a_floor_on_sigma_keeps_a_constant_series_probabilistic() -> None:
    forecaster = DampedTrendForecaster.from_params(alpha=0.3, beta=0.05, phi=0.96, min_sigma=0.01)
    for i in range(10):
        forecaster.update(i * STEP, 0.2)
    probability = forecaster.breach(0.21, Direction.ABOVE, 40).probability
    assert 0.0 < probability < 0.5


def test_damped_trend_levels_off_where_a_linear_one_would_not() -> None:
    t = np.arange(40)
    plateau = 0.5 + 0.3 * (1 - np.exp(-t / 8.0))  # a cache filling up
    forecaster = DampedTrendForecaster.from_params(alpha=0.3, beta=0.05, phi=0.96, **PLAIN)
    for i, value in enumerate(plateau):
        forecaster.update(i * STEP, float(value))
    mean, _ = forecaster.forecast(200)
    assert mean[-1] == pytest.approx(forecaster.asymptote(), abs=1e-3)
    assert forecaster.asymptote() < 0.85


def test_breach_time_and_probability_of_a_known_state() -> None:
    forecaster = DampedTrendForecaster.from_params(alpha=0.5, beta=0.1, phi=0.9, sigma=1e-6, step_seconds=10.0)
    forecaster.update(0.0, 0.0)
    forecaster.level_, forecaster.trend_ = 0.0, 1.0
    # mean after h steps: 0.9 + 0.81 + ... ; reaches 3 at h = 4 (3.4390)
    result = forecaster.breach(3.0, Direction.ABOVE, 20)
    assert result.seconds == 40.0 and result.probability == pytest.approx(1.0)
    assert forecaster.breach(9.5, Direction.ABOVE, 20).probability < 1e-6  # asymptote 9: never
    assert forecaster.breach(-1.0, Direction.BELOW, 20).seconds is None
    bound, _, _ = forecaster.breach_bound(9.5, Direction.ABOVE, 20)
    assert bound >= forecaster.breach(9.5, Direction.ABOVE, 20).probability


def test_a_lone_outlier_never_reaches_the_state_and_a_step_does() -> None:
    forecaster = DampedTrendForecaster.from_params(alpha=0.3, beta=0.05, phi=0.96)
    values = expand("0.01x12 5 0.01x6")  # a counter reset
    for i, value in enumerate(values):
        forecaster.update(i * STEP, value)
    assert forecaster.level_ == pytest.approx(0.01, abs=1e-3)
    two = DampedTrendForecaster.from_params(alpha=0.3, beta=0.05, phi=0.96, min_sigma=0.001)
    for i, value in enumerate(expand("0.01x12 5 5 0.01x6")):  # two in a row pass the median, not the clipping
        two.update(i * STEP, value)
    assert two.level_ < 0.05
    stepped = DampedTrendForecaster.from_params(alpha=0.3, beta=0.05, phi=0.96)
    for i, value in enumerate(expand("0.01x12 0.2x12")):
        stepped.update(i * STEP, value)
    assert stepped.level_ > 0.15


def test_state_round_trips_through_json_exactly() -> None:
    forecaster = DampedTrendForecaster().fit(trending(14), times=np.arange(120) * STEP)
    restored = DampedTrendForecaster.from_state(json.loads(json.dumps(forecaster.get_state())))
    for a, b in ((forecaster, restored),):
        for i, value in enumerate(trending(15, 20)):
            a.update((120 + i) * STEP, float(value))
            b.update((120 + i) * STEP, float(value))
    np.testing.assert_array_equal(forecaster.forecast(40)[0], restored.forecast(40)[0])
    np.testing.assert_array_equal(forecaster.forecast(40)[1], restored.forecast(40)[1])
    assert forecaster.breach(1.5, Direction.ABOVE, 40) == restored.breach(1.5, Direction.ABOVE, 40)
    assert restored.get_state() == forecaster.get_state()


def test_from_state_names_what_is_wrong() -> None:
    state = DampedTrendForecaster.from_params(alpha=0.3, beta=0.05, phi=0.96).get_state()
    with pytest.raises(ValueError, match="expected format 1"):
        DampedTrendForecaster.from_state({**state, "format": 99})
    broken = json.loads(json.dumps(state))
    del broken["state"]["level"]
    with pytest.raises(ValueError, match="level"):
        DampedTrendForecaster.from_state(broken)


def test_parameters_are_validated_in_fit_not_init() -> None:
    forecaster = DampedTrendForecaster(median_window=0)
    with pytest.raises(ValueError, match="median_window: expected an integer >= 1, got 0"):
        forecaster.fit(np.arange(20.0))
    with pytest.raises(RuntimeError, match="not fitted"):
        DampedTrendForecaster().forecast(3)


samples = st.lists(
    st.one_of(st.none(), st.just(math.nan), st.floats(min_value=-1e3, max_value=1e3)),
    min_size=1, max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(values=samples, cut=st.integers(min_value=0, max_value=60), gaps=st.lists(st.integers(1, 4), min_size=60,
                                                                                   max_size=60))
def test_scores_of_a_prefix_equal_the_first_scores_of_the_whole(values: list[float | None], cut: int,
                                                                 gaps: list[int]) -> None:
    """No look-ahead: what the forecaster says after sample k does not depend on samples after k."""
    times = np.cumsum(gaps[: len(values)]) * STEP

    def scores(upto: int) -> list[tuple[float, ...]]:
        forecaster = DampedTrendForecaster.from_params(alpha=0.3, beta=0.05, phi=0.96, min_sigma=1e-3)
        out = []
        for t, value in zip(times[:upto], values[:upto], strict=True):
            forecaster.update(float(t), value)
            if forecaster.ready:
                result = forecaster.breach(10.0, Direction.ABOVE, 20)
                out.append((forecaster.level_, forecaster.trend_, forecaster.sigma, result.probability))
        return out

    whole = scores(len(values))
    prefix = scores(min(cut, len(values)))
    assert whole[: len(prefix)] == prefix


# The local trend (evidence 3 of ForecastScorer) -------------------------------------------------------------------
def _trend_over(values: np.ndarray, memory: float = 600.0, **params: float) -> LocalTrend:
    trend = LocalTrend(step_seconds=STEP, memory_seconds=memory, **params)
    for i, value in enumerate(values):
        trend.update(i * STEP, float(value))
    return trend


def _residual_sigma(trend: LocalTrend) -> float:
    """The quadratic fit's residual sigma before any inflation or floor."""
    m, n = trend.m, trend.n
    beta = np.linalg.solve(np.array([[m[0], m[1], m[2]], [m[1], m[2], m[3]], [m[2], m[3], m[4]]]), np.array(n))
    return math.sqrt(max(trend.yy - float(beta @ np.array(n)), 0.0) / (m[0] - 3.0))


def test_samples_of_overlapping_rate_windows_do_not_make_a_flat_series_look_like_a_trend() -> None:
    """A [1m] rate scraped every 15 s averages four 15-s intervals, three of them shared with the previous sample.
    Counted as independent, such samples would show a significant slope in one flat series out of six; with the
    long-run variance (Newey-West) the share stays near the nominal 1 %, and independent samples get little more."""
    rng = np.random.default_rng(11)
    confident = []
    inflation = []
    for _ in range(300):
        intervals = rng.normal(0.0, 0.01, 43)
        rates = np.convolve(intervals, np.ones(4) / 4, mode="valid")
        trend = _trend_over(rates)
        fitted = trend.fit()
        assert fitted is not None
        beta, cov, _ = fitted
        confident.append(abs(beta[1]) / math.sqrt(cov[1, 1]) > 2.58)
        inflation.append(trend.variance_inflation(_residual_sigma(trend), float(beta[1])))
    assert np.mean(confident) < 0.02
    assert 2.0 < np.median(inflation) < 5.0  # the true factor of this moving average is 4
    white = [_trend_over(rng.normal(0.0, 0.01, 40)) for _ in range(100)]
    assert np.median([trend.variance_inflation(_residual_sigma(trend), 0.0) for trend in white]) < 2.0


def test_the_shifted_moments_equal_a_direct_weighted_quadratic_fit() -> None:
    rng = np.random.default_rng(5)
    y = 0.4 + 0.01 * np.arange(30) - 0.0002 * np.arange(30) ** 2 + rng.normal(0, 0.01, 30)
    trend = _trend_over(y, memory=300.0)
    tau = np.arange(30, dtype=float) - 29.0
    w = np.exp(tau * STEP / 300.0)
    x = np.vstack([np.ones_like(tau), tau, tau**2]).T
    direct = np.linalg.solve(x.T @ (w[:, None] * x), x.T @ (w * y))
    fitted = trend.fit()
    assert fitted is not None
    np.testing.assert_allclose(fitted[0], direct, rtol=1e-7, atol=1e-10)


def test_a_steady_rise_is_extrapolated_and_a_flattening_one_is_not() -> None:
    rng = np.random.default_rng(6)
    t = np.arange(24) * STEP
    leak = 0.45 + 0.045 * t / 60.0 + rng.normal(0, 0.005, t.size)  # reaches 0.9 at 10 min
    cache = 0.45 + 0.35 * (1.0 - np.exp(-t / 150.0)) + rng.normal(0, 0.005, t.size)  # levels off at 0.8
    steady = _trend_over(leak, min_sigma=0.009).breach(0.9, Direction.ABOVE, 600.0)
    flattening = _trend_over(cache, min_sigma=0.009).breach(0.9, Direction.ABOVE, 600.0)
    assert steady is not None and steady.probability > 0.95
    assert steady.damping_seconds is None or steady.damping_seconds > 600.0  # at most a slow levelling off
    assert steady.seconds is not None and 200.0 < steady.seconds < 400.0
    assert flattening is not None and flattening.probability < 0.05


def test_an_uncertain_rise_waits() -> None:
    """Four samples of a rise cannot tell a leak from a cache: the flattest curvature they allow is assumed."""
    early = _trend_over(np.array([0.45, 0.46, 0.475, 0.485, 0.5]), min_sigma=0.009)
    forecast = early.breach(0.9, Direction.ABOVE, 600.0)
    assert forecast is not None and forecast.probability < 0.5


def test_the_local_trend_skips_unknown_and_repeated_samples_and_checks_its_parameters() -> None:
    trend = _trend_over(np.array([1.0, 1.1, 1.2, 1.3]))
    before = (list(trend.m), list(trend.n), trend.count)
    trend.update(10 * STEP, math.nan)
    trend.update(3 * STEP, 5.0)
    assert (trend.m, trend.n, trend.count) == before
    with pytest.raises(ValueError, match="memory_seconds"):
        LocalTrend(memory_seconds=0.0)
