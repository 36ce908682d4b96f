"""Pure: the recent history of observations per rollout revision, metric and scope, as arrays for scorers.

The engine appends each tick's observations; scorers read windows of it. Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from predictor.domain import DeploymentRef, Observation, RolloutState, Scope

SeriesKey = tuple[DeploymentRef, int, str, Scope]
TRAFFIC_START_SAMPLES = 3
"""Samples of a revision's first traffic whose median is its traffic at the start (`traffic_at_start`)."""


@dataclass(frozen=True)
class Series:
    """Known samples of one scope, oldest first, plus how many recent ticks in a row were unknown."""

    times: np.ndarray
    values: np.ndarray
    pods: np.ndarray
    trailing_unknown: int
    last_error: str | None

    @property
    def empty(self) -> bool:
        return self.values.size == 0

    @property
    def last(self) -> float | None:
        return float(self.values[-1]) if self.values.size else None


EMPTY_SERIES = Series(np.empty(0), np.empty(0), np.empty(0, dtype=int), 0, None)


class MetricHistory:
    """Bounded history of observations, keyed by (deployment, revision, metric, scope)."""

    def __init__(self, lookback_seconds: float) -> None:
        self.lookback_seconds = lookback_seconds
        self._samples: dict[SeriesKey, deque[tuple[float, float | None, int, str | None]]] = {}
        self._traffic: dict[tuple[DeploymentRef, int], deque[tuple[float, float]]] = {}
        self._traffic_start: dict[tuple[DeploymentRef, int], list[float]] = {}

    def add(self, revision: int, observations: Iterable[Observation]) -> None:
        for obs in observations:
            key = (obs.ref, revision, obs.metric, obs.scope)
            buffer = self._samples.setdefault(key, deque())
            if buffer and obs.time <= buffer[-1][0]:
                continue  # a repeated or out-of-order tick adds nothing
            value = obs.value if obs.known else None
            buffer.append((obs.time, value, obs.pods, obs.error))
            horizon = obs.time - self.lookback_seconds
            while buffer and buffer[0][0] < horizon:
                buffer.popleft()
            if obs.scope is Scope.DEPLOYMENT and obs.traffic is not None and math.isfinite(obs.traffic):
                # one traffic series per Deployment: the first ratio metric that reports it at a time
                traffic = self._traffic.setdefault((obs.ref, revision), deque())
                if not traffic or obs.time > traffic[-1][0]:
                    traffic.append((obs.time, obs.traffic))
                    start = self._traffic_start.setdefault((obs.ref, revision), [])
                    if len(start) < TRAFFIC_START_SAMPLES:
                        start.append(obs.traffic)
                while traffic and traffic[0][0] < horizon:
                    traffic.popleft()

    def series(self, ref: DeploymentRef, revision: int, metric: str, scope: Scope) -> Series:
        buffer = self._samples.get((ref, revision, metric, scope))
        if not buffer:
            return EMPTY_SERIES
        known = [(t, v, p) for t, v, p, _ in buffer if v is not None]
        trailing_unknown = 0
        for _, value, _, _ in reversed(buffer):
            if value is not None:
                break
            trailing_unknown += 1
        last_error = buffer[-1][3]
        if not known:
            return Series(np.empty(0), np.empty(0), np.empty(0, dtype=int), trailing_unknown, last_error)
        times, values, pods = zip(*known, strict=True)
        return Series(np.array(times), np.array(values, dtype=float), np.array(pods), trailing_unknown, last_error)

    def traffic_per_pod(self, ref: DeploymentRef, revision: int) -> tuple[np.ndarray, np.ndarray]:
        """(times, requests/s per pod) of the Deployment's traffic, oldest first: a ratio metric's denominator per
        pod (`Observation.traffic`). Per pod, because while pods are replaced the sum dips by a pod or two whose
        rate series are gone or not there yet, which is no change of the load."""
        buffer = self._traffic.get((ref, revision))
        if not buffer:
            return np.empty(0), np.empty(0)
        times, values = zip(*buffer, strict=True)
        return np.array(times), np.array(values, dtype=float)

    def traffic_at_start(self, ref: DeploymentRef, revision: int) -> float | None:
        """The traffic per pod when the history of this revision began (the median of its first
        TRAFFIC_START_SAMPLES samples, kept past the lookback), None before it has them all: the load before the
        rollout's own churn, when nearly every pod was an old, settled one."""
        start = self._traffic_start.get((ref, revision))
        if start is None or len(start) < TRAFFIC_START_SAMPLES:
            return None
        return float(np.median(start))

    def forget(self, ref: DeploymentRef, keep_revision: int | None = None) -> None:
        """Drop the history of a Deployment (all revisions but `keep_revision`)."""
        stores: tuple[dict[Any, Any], ...] = (self._samples, self._traffic, self._traffic_start)
        for store in stores:
            for key in [k for k in store if k[0] == ref and k[1] != keep_revision]:
                del store[key]

    def refs(self) -> set[tuple[DeploymentRef, int]]:
        return {(k[0], k[1]) for k in self._samples}


@dataclass(frozen=True)
class Trend:
    """A least-squares line through recent samples: value at `now`, slope per second and its t-statistic."""

    level: float
    slope: float
    t_stat: float
    points: int
    span_seconds: float

    def time_to(self, threshold: float) -> float | None:
        """Seconds from now until the line reaches `threshold`; None if it moves away or is flat."""
        if self.slope == 0 or not math.isfinite(self.slope):
            return None
        seconds = (threshold - self.level) / self.slope
        return seconds if seconds >= 0 else None


def fit_trend(series: Series, now: float, window_seconds: float, min_points: int = 4) -> Trend | None:
    """Linear trend over the samples of the last `window_seconds`; None with fewer than `min_points`."""
    if series.empty:
        return None
    mask = series.times >= now - window_seconds
    times, values = series.times[mask], series.values[mask]
    if times.size < min_points:
        return None
    x = times - now
    x_mean, y_mean = x.mean(), values.mean()
    sxx = float(((x - x_mean) ** 2).sum())
    if sxx <= 0:
        return None
    slope = float(((x - x_mean) * (values - y_mean)).sum() / sxx)
    level = float(y_mean - slope * x_mean)
    residuals = values - (level + slope * x)
    dof = times.size - 2
    sigma2 = float((residuals**2).sum() / dof) if dof > 0 else 0.0
    stderr = math.sqrt(sigma2 / sxx) if sigma2 > 0 else 0.0
    t_stat = (math.inf if slope != 0 else 0.0) if stderr == 0.0 else slope / stderr
    span = float(times[-1] - times[0])
    return Trend(level=level, slope=slope, t_stat=t_stat, points=int(times.size), span_seconds=span)


def mix_breach_time(threshold: float, new_value: float, old_value: float, rollout: RolloutState, now: float) -> float:
    """When the traffic-weighted mix of new and old pods reaches `threshold`, if the rollout keeps its pace.

    The Deployment's value is about progress x new + (1 - progress) x old; the share of new pods it needs is found,
    then the time steady progress takes to reach it. A paused or not yet started rollout is given as long again as
    it has run.
    """
    if new_value == old_value:
        return now
    share_needed = (threshold - old_value) / (new_value - old_value)
    progress = rollout.progress
    if share_needed <= progress:
        return now
    elapsed = max(now - rollout.started_at, 1.0)
    if progress <= 0 or rollout.paused:
        return now + elapsed
    return rollout.started_at + elapsed * share_needed / progress
