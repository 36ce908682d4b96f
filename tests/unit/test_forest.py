"""The rollout isolation forest: pure features, calibration on held-back healthy data, verdict apart from score,
NaN and too-short inputs, and identical scores after saving and loading."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from predictor.detectors.forest import (
    RolloutIsolationForest,
    TailCalibrator,
    feature_names,
    history_features,
    rollout_features,
)
from predictor.domain import DeploymentRef, Observation, Scope
from predictor.features import MetricHistory, Series
from predictor.models import load_artifact, save_artifact
from tests.series import expand

STEP = 15.0
METRICS = ["error_ratio", "latency_p99"]
REF = DeploymentRef("shop", "checkout")


def series(text: str, start: float = 0.0) -> Series:
    values = expand(text)
    known = [(start + i * STEP, v) for i, v in enumerate(values) if v is not None]
    trailing = 0
    for value in reversed(values):
        if value is not None:
            break
        trailing += 1
    times = np.array([t for t, _ in known])
    return Series(times, np.array([v for _, v in known], dtype=float), np.ones(len(known), dtype=int), trailing,
                  None)


def healthy_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    """Feature rows of healthy rollouts: value, new-minus-old delta, rate per metric."""
    return np.column_stack([
        rng.normal(0.004, 0.0005, n), rng.normal(0.0, 0.0005, n), rng.normal(0.0, 0.0002, n),
        rng.normal(0.18, 0.01, n), rng.normal(0.0, 0.01, n), rng.normal(0.0, 0.005, n),
    ])


def test_feature_names_follow_the_metrics() -> None:
    assert feature_names(METRICS) == ["error_ratio:value", "error_ratio:delta", "error_ratio:rate",
                                      "latency_p99:value", "latency_p99:delta", "latency_p99:rate"]


def test_rollout_features_from_tiny_series_with_gaps() -> None:
    scopes = {
        "error_ratio": (series("0.01 0.012 _ 0.014 0.016 0.02 0.02 0.022 0.024"), series("0.03x9"), series("0.01x9")),
        "latency_p99": (series("0.2 0.2 _"), series("0.3 _"), series("0.2 0.2 0.2")),
    }
    x = rollout_features(scopes, METRICS, now=8 * STEP, rate_window_seconds=120.0)
    assert x[0] == 0.024
    assert x[1] == pytest.approx(0.02)
    assert x[2] == pytest.approx((0.024 - 0.01) / 120.0 * 60.0)  # per minute, from the first sample within 2 min
    assert math.isnan(x[3]), "a scope whose latest tick was unknown has no value"
    assert math.isnan(x[4]), "a delta needs new and old samples of the same tick"
    assert math.isnan(x[5])


def test_rollout_features_ignore_samples_after_now() -> None:
    dep = series("0.01 0.01 0.01 0.5")
    x_now = rollout_features({"error_ratio": (dep, dep, dep)}, ["error_ratio"], now=2 * STEP)
    cut = series("0.01 0.01 0.01")
    assert np.array_equal(x_now, rollout_features({"error_ratio": (cut, cut, cut)}, ["error_ratio"], now=2 * STEP),
                          equal_nan=True)


def test_history_features_read_the_metric_history() -> None:
    history = MetricHistory(600.0)
    for i in range(10):
        history.add(2, [Observation(REF, "error_ratio", s, i * STEP, 0.01 + (0.01 if s is Scope.NEW else 0.0))
                        for s in Scope])
    rows = history_features(history, [(REF, 2), (REF, 3)], ["error_ratio"], now=9 * STEP)
    assert rows[0, 0] == 0.01 and rows[0, 1] == pytest.approx(0.01) and rows[0, 2] == 0.0
    assert np.all(np.isnan(rows[1])), "an unknown revision has no features"


@pytest.mark.parametrize("random_state", [5, 77])
def test_calibrated_scores_on_healthy_and_anomalous_rows(random_state: int) -> None:
    rng = np.random.default_rng(random_state)
    forest = RolloutIsolationForest(METRICS, n_estimators=60, random_state=random_state).fit(healthy_rows(rng, 600))
    healthy = forest.score(healthy_rows(rng, 400))
    assert np.all((healthy >= 0) & (healthy <= 1))
    assert 0.3 < float(np.median(healthy)) < 0.7, "calibrated on held-back healthy rows: uniform-ish on healthy"
    assert float(np.mean(forest.predict(healthy_rows(rng, 400)))) < 0.05
    bad = healthy_rows(rng, 5)
    bad[:, 0] = 0.08  # error ratio far beyond anything healthy
    bad[:, 1] = 0.07
    assert np.all(forest.score(bad) >= forest.threshold_) and np.all(forest.predict(bad))
    worse = bad.copy()
    worse[:, 0] = 0.5
    assert np.all(forest.score(worse) >= forest.score(bad)), "the tail keeps growing past the healthy range"
    assert forest.validation_["n_calibration"] == 150 and forest.validation_["n_train"] == 450


def test_unknown_features_are_imputed_or_abstained() -> None:
    rng = np.random.default_rng(3)
    forest = RolloutIsolationForest(METRICS, n_estimators=30, random_state=3).fit(healthy_rows(rng, 200))
    row = healthy_rows(rng, 1)
    row[0, 2] = np.nan
    assert math.isfinite(forest.score(row)[0])
    row[0, :4] = np.nan
    assert math.isnan(forest.score(row)[0]) and not forest.predict(row)[0]


def test_fit_rejects_bad_shapes_and_too_little_data() -> None:
    rng = np.random.default_rng(1)
    with pytest.raises(ValueError, match=r"expected shape \(n, 6\)"):
        RolloutIsolationForest(METRICS).fit(rng.normal(size=(100, 5)))
    with pytest.raises(ValueError, match="at least 20 training rows"):
        RolloutIsolationForest(METRICS).fit(healthy_rows(rng, 25))
    with pytest.raises(ValueError, match="metrics"):
        RolloutIsolationForest([]).fit(healthy_rows(rng, 100))
    with pytest.raises(RuntimeError, match="not fitted"):
        RolloutIsolationForest(METRICS).anomaly(healthy_rows(rng, 2))


def test_constant_and_never_known_training_features_do_not_break_scoring() -> None:
    rng = np.random.default_rng(2)
    rows = healthy_rows(rng, 200)
    rows[:, 3:5] = 0.2
    rows[:, 5] = np.nan  # a rate never known (warnings are errors in these tests)
    forest = RolloutIsolationForest(METRICS, n_estimators=20, random_state=2).fit(rows)
    assert np.all(np.isfinite(forest.score(rows[:10])))
    assert all(math.isfinite(v) for d in forest.deviations(rows[:3]) for v in d.values())


def test_tail_calibrator_is_monotone_and_continuous() -> None:
    rng = np.random.default_rng(4)
    calibrator = TailCalibrator(0.9).fit(rng.normal(size=500))
    grid = np.linspace(-4, 8, 400)
    scores = calibrator.transform(grid)
    assert np.all(np.diff(scores) >= 0) and scores[0] == 0.0 and scores[-1] < 1.0
    at = calibrator.tail_start_
    assert calibrator.transform(np.array([at + 1e-9]))[0] == pytest.approx(calibrator.transform(np.array([at]))[0],
                                                                           abs=0.01)
    with pytest.raises(ValueError, match="at least 10 finite"):
        TailCalibrator().fit(np.array([1.0, np.nan]))


def test_saved_and_loaded_forest_scores_the_same(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    forest = RolloutIsolationForest(METRICS, n_estimators=40, random_state=8).fit(healthy_rows(rng, 300))
    rows = healthy_rows(rng, 50)
    rows[::7, 0] = 0.09
    path = save_artifact(tmp_path, "forest", {"forest": forest}, {
        "training_window": {"start": 0.0, "end": 3600.0}, "feature_names": feature_names(METRICS),
        "thresholds": {"verdict": forest.threshold_}, "validation": forest.validation_,
    })
    loaded = load_artifact(path).forest()
    assert loaded is not None
    np.testing.assert_array_equal(loaded.score(rows), forest.score(rows))
    np.testing.assert_array_equal(loaded.anomaly(rows), forest.anomaly(rows))
    assert list(loaded.feature_names_in_) == feature_names(METRICS)
