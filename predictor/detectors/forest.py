"""Isolation forest over the joint metrics of a rollout, calibrated to a 0..1 score on held-back healthy data.

`rollout_features` (pure) turns the recent series of a rollout into one vector: per metric, the Deployment's
value, the new-minus-old difference at the same moment, and the Deployment's rate of change per minute over the
last `rate_window_seconds`. `RolloutIsolationForest.fit` trains scikit-learn's IsolationForest on healthy vectors
and fits a `TailCalibrator` on held-back healthy vectors; `score` is then the share of healthy vectors less
anomalous (with an exponential tail beyond the healthy range) and `predict` the verdict at a fitted threshold.
`ForecastScorer` uses the score as evidence; the retraining job fits and saves it (`predictor.models`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Self

import numpy as np
from sklearn.ensemble import IsolationForest

from predictor.domain import DeploymentRef, Scope
from predictor.features import MetricHistory, Series

FEATURE_KINDS = ("value", "delta", "rate")
"""Per metric: the Deployment's value, new-minus-old difference, rate of change per minute."""


def feature_names(metrics: Sequence[str]) -> list[str]:
    return [f"{metric}:{kind}" for metric in metrics for kind in FEATURE_KINDS]


def rollout_features(
    series: Mapping[str, tuple[Series, Series, Series]],
    metrics: Sequence[str],
    now: float,
    rate_window_seconds: float = 120.0,
) -> np.ndarray:
    """One feature vector (NaN where unknown) from (deployment, new, old) series per metric, using samples up to
    `now` only. A value is known when its scope's latest tick was known; a delta needs new and old samples of
    the same tick; a rate needs two Deployment samples at least half the window apart."""
    out = np.full(len(metrics) * len(FEATURE_KINDS), np.nan)
    for i, metric in enumerate(metrics):
        scopes = series.get(metric)
        if scopes is None:
            continue
        dep, new, old = scopes
        base = i * len(FEATURE_KINDS)
        dep_t, dep_v = _upto(dep, now)
        if dep_v.size and dep.trailing_unknown == 0:
            out[base] = dep_v[-1]
            window_start = now - rate_window_seconds
            first = int(np.searchsorted(dep_t, window_start, side="left"))
            if first < dep_t.size - 1 and dep_t[-1] - dep_t[first] >= rate_window_seconds / 2:
                out[base + 2] = (dep_v[-1] - dep_v[first]) / (dep_t[-1] - dep_t[first]) * 60.0
        new_t, new_v = _upto(new, now)
        old_t, old_v = _upto(old, now)
        if (new_v.size and old_v.size and new.trailing_unknown == 0 and old.trailing_unknown == 0
                and new_t[-1] == old_t[-1]):
            out[base + 1] = new_v[-1] - old_v[-1]
    return out


def _upto(series: Series, now: float) -> tuple[np.ndarray, np.ndarray]:
    if series.empty or series.times[-1] <= now:
        return series.times, series.values
    keep = int(np.searchsorted(series.times, now, side="right"))
    return series.times[:keep], series.values[:keep]


def history_features(
    history: MetricHistory,
    keys: Sequence[tuple[DeploymentRef, int]],
    metrics: Sequence[str],
    now: float,
    rate_window_seconds: float = 120.0,
) -> np.ndarray:
    """`rollout_features` for each (Deployment, revision) in `keys`: one row each."""
    rows = np.empty((len(keys), len(metrics) * len(FEATURE_KINDS)))
    for r, (ref, revision) in enumerate(keys):
        series = {m: tuple(history.series(ref, revision, m, s) for s in Scope) for m in metrics}
        rows[r] = rollout_features(series, metrics, now, rate_window_seconds)  # type: ignore[arg-type]
    return rows


def _center_and_scale(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column: median and IQR / 1.349 of the finite values (0 and a tiny scale for a column never known)."""
    centers = np.zeros(X.shape[1])
    scales = np.ones(X.shape[1])
    for j in range(X.shape[1]):
        column = X[:, j][np.isfinite(X[:, j])]
        if column.size == 0:
            scales[j] = 1e-9
            continue
        centers[j] = float(np.median(column))
        q75, q25 = np.percentile(column, [75, 25])
        spread = float(q75 - q25) / 1.349
        scales[j] = spread if spread > 0 else max(abs(centers[j]) * 0.01, 1e-9)
    return centers, scales


class TailCalibrator:
    """Maps raw anomaly scores (higher = more anomalous) to 0..1: the share of held-back healthy scores below,
    and beyond the `tail_quantile` of them an exponential tail fitted to the excesses (peaks over threshold), so
    scores keep growing past the most anomalous healthy sample instead of saturating at 1."""

    def __init__(self, tail_quantile: float = 0.9) -> None:
        self.tail_quantile = tail_quantile

    def fit(self, raw: np.ndarray) -> Self:
        values = np.asarray(raw, dtype=float)
        values = values[np.isfinite(values)]
        if not 0.5 <= self.tail_quantile < 1.0:
            raise ValueError(f"tail_quantile: expected 0.5..1 (exclusive), got {self.tail_quantile!r}")
        if values.size < 10:
            raise ValueError(f"calibration data: expected at least 10 finite scores, got {values.size}")
        self.reference_ = np.sort(values)
        self.tail_start_ = float(np.quantile(values, self.tail_quantile))
        excess = values[values > self.tail_start_] - self.tail_start_
        spread = float(np.ptp(values))
        self.tail_scale_ = max(float(excess.mean()) if excess.size else 0.0, 1e-9 * max(spread, 1.0))
        return self

    def transform(self, raw: np.ndarray) -> np.ndarray:
        values = np.asarray(raw, dtype=float)
        below = np.searchsorted(self.reference_, values, side="left") / self.reference_.size
        tail = 1.0 - (1.0 - self.tail_quantile) * np.exp(-(values - self.tail_start_) / self.tail_scale_)
        out = np.where(values > self.tail_start_, np.maximum(tail, self.tail_quantile), below)
        return np.where(np.isfinite(values), out, np.nan)


class RolloutIsolationForest:
    """Isolation forest over `rollout_features` vectors of healthy rollouts, with a calibrated 0..1 score.

    Parameters: `metrics` (names, in feature order), the forest's `n_estimators`, `max_samples` and
    `random_state`; `calibration_fraction` of the (time-ordered) training rows held back for calibration when no
    separate calibration set is given; `alarm_rate`, the share of healthy vectors the verdict may flag (the
    verdict threshold is 1 - alarm_rate on the calibrated score); `tail_quantile` of the calibrator;
    `max_missing_fraction` of unknown features beyond which a vector is not scored.
    """

    def __init__(
        self,
        metrics: Sequence[str] = (),
        *,
        n_estimators: int = 100,
        max_samples: int | float | str = "auto",
        random_state: int | np.random.Generator | None = None,
        calibration_fraction: float = 0.25,
        alarm_rate: float = 0.01,
        tail_quantile: float = 0.9,
        rate_window_seconds: float = 120.0,
        max_missing_fraction: float = 0.5,
    ) -> None:
        self.metrics = metrics
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.random_state = random_state
        self.calibration_fraction = calibration_fraction
        self.alarm_rate = alarm_rate
        self.tail_quantile = tail_quantile
        self.rate_window_seconds = rate_window_seconds
        self.max_missing_fraction = max_missing_fraction

    def fit(self, X: np.ndarray, X_calibration: np.ndarray | None = None) -> Self:
        """Train on healthy feature rows `X` (n_samples x 3 per metric); calibrate on `X_calibration`, else on the
        last `calibration_fraction` of `X` (held back from training)."""
        metrics = list(self.metrics)
        if not metrics or len(set(metrics)) != len(metrics):
            raise ValueError(f"metrics: expected distinct metric names, got {metrics!r}")
        if not 0.0 < self.alarm_rate < 0.5:
            raise ValueError(f"alarm_rate: expected 0..0.5 (exclusive), got {self.alarm_rate!r}")
        if not 0.0 <= self.max_missing_fraction < 1.0:
            raise ValueError(f"max_missing_fraction: expected 0..1, got {self.max_missing_fraction!r}")
        names = feature_names(metrics)
        X = self._check_matrix(X, "X", len(names))
        if X_calibration is None:
            if not 0.05 <= self.calibration_fraction <= 0.5:
                raise ValueError(f"calibration_fraction: expected 0.05..0.5, got {self.calibration_fraction!r}")
            split = X.shape[0] - max(10, round(X.shape[0] * self.calibration_fraction))
            X_train, X_cal = X[:split], X[split:]
        else:
            X_train, X_cal = X, self._check_matrix(X_calibration, "X_calibration", len(names))
        if X_train.shape[0] < 20:
            raise ValueError(f"X: expected at least 20 training rows besides the calibration rows, "
                             f"got {X_train.shape[0]}")
        self.feature_names_in_ = np.asarray(names, dtype=object)
        self.n_features_in_ = len(names)
        self.medians_, self.scales_ = _center_and_scale(X_train)
        self.forest_ = IsolationForest(
            n_estimators=self.n_estimators, max_samples=self.max_samples, random_state=self.random_state
        ).fit(self._impute(X_train))
        self.calibrator_ = TailCalibrator(self.tail_quantile).fit(self.anomaly(X_cal))
        self.threshold_ = 1.0 - self.alarm_rate
        calibrated = self.score(X_cal)
        self.validation_ = {
            "n_train": int(X_train.shape[0]),
            "n_calibration": int(X_cal.shape[0]),
            "calibration_alarm_share": float(np.nanmean(calibrated >= self.threshold_)),
            "calibration_score_median": float(np.nanmedian(calibrated)),
        }
        return self

    @staticmethod
    def _check_matrix(X: Any, name: str, width: int) -> np.ndarray:
        matrix = np.asarray(X, dtype=float)
        if matrix.ndim != 2 or matrix.shape[1] != width:
            raise ValueError(f"{name}: expected shape (n, {width}) (3 features per metric), got {matrix.shape}")
        return matrix

    def _check_fitted(self) -> None:
        if not hasattr(self, "forest_"):
            raise RuntimeError("RolloutIsolationForest is not fitted: call fit()")

    def _impute(self, X: np.ndarray) -> np.ndarray:
        """Unknown features take the healthy median: missing data is never evidence of an anomaly."""
        return np.where(np.isfinite(X), X, self.medians_)

    def anomaly(self, X: np.ndarray) -> np.ndarray:
        """Raw anomaly score per row, higher = more anomalous (minus scikit-learn's `score_samples`)."""
        self._check_fitted()
        X = self._check_matrix(X, "X", self.n_features_in_)
        if X.shape[0] == 0:
            return np.empty(0)
        return -self.forest_.score_samples(self._impute(X))

    def score(self, X: np.ndarray) -> np.ndarray:
        """Calibrated 0..1 score per row (NaN when too many features are unknown)."""
        self._check_fitted()
        X = self._check_matrix(X, "X", self.n_features_in_)
        scores = self.calibrator_.transform(self.anomaly(X))
        missing = (~np.isfinite(X)).mean(axis=1) if X.shape[0] else np.empty(0)
        return np.where(missing > self.max_missing_fraction, np.nan, scores)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The verdict: True where the calibrated score reaches `threshold_` (False when not scored)."""
        scores = self.score(X)
        return np.where(np.isfinite(scores), scores >= self.threshold_, False)

    def deviations(self, X: np.ndarray) -> list[dict[str, float]]:
        """Per row and metric, the largest robust z-score of its features against the training medians."""
        self._check_fitted()
        X = self._check_matrix(X, "X", self.n_features_in_)
        z = np.abs(self._impute(X) - self.medians_) / self.scales_
        per_metric = z.reshape(X.shape[0], len(self.metrics), len(FEATURE_KINDS)).max(axis=2)
        return [dict(zip(self.metrics, (float(v) for v in row), strict=True)) for row in per_metric]

    def score_history(
        self, history: MetricHistory, keys: Sequence[tuple[DeploymentRef, int]], now: float
    ) -> list[tuple[float, dict[str, float]] | None]:
        """Score and explain each (Deployment, revision) of `keys` at `now`, in one batch; None where unscored."""
        self._check_fitted()
        if not keys:
            return []
        X = history_features(history, keys, list(self.metrics), now, self.rate_window_seconds)
        scores = self.score(X)
        deviations = self.deviations(X)
        return [None if not math.isfinite(s) else (float(s), d) for s, d in zip(scores, deviations, strict=True)]
