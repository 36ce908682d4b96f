"""What every piece of evidence of the rollout scorer reads: one assessment's figures (`Reading`), computed once.

`ForecastScorer` keeps a `Track` per (Deployment, revision, metric, scope) across ticks; each `assess` builds one
`Reading` of them, and the pieces of evidence in `predictor.detectors.evidence` read it and return an `Evidence`
each. A `Reading` is not changed by the pieces: the trend forecasts it computes on demand are memoised per scope
(`trend_risk`), so two pieces asking for the same forecast get the same answer and pay for it once.
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass, field
from functools import cached_property
from itertools import pairwise
from typing import Protocol

import numpy as np

from predictor.config import MetricSpec, format_duration
from predictor.detectors.forecast import DampedTrendForecaster, LocalTrend, TrendForecast
from predictor.detectors.season import SeasonalProfile
from predictor.domain import Direction, RolloutState, Scope
from predictor.features import mix_breach_time

RELEASE_Z = 2.0
"""New pods count as worse than old pods when the median difference exceeds this many combined sigmas; the
new-versus-old test's confidence is the normal CDF of its statistic less this many standard errors."""
TRAFFIC_BASELINE_SAMPLES = 5
"""The traffic's lowest level is a median over this many samples, and the traffic test needs as many."""
EXTRAPOLATION_FACTOR = 4.0
"""A trend is extrapolated at most this many times the time it spans: a minute and a half of samples says little
about the next half hour."""
COUNT_FUNCTIONS = re.compile(r"\b(?:increase|changes|resets)\s*\(")
"""PromQL functions whose result counts events over a window."""
COUNT_UNITS = frozenset({"restarts", "events", "count", "counts"})
"""Units (MetricSpec.unit) that name counted events."""


@dataclass
class Track:
    """What the scorer remembers of one series: its forecaster and its last few samples."""

    forecaster: DampedTrendForecaster
    last_time: float = -math.inf
    times: deque[float] = field(default_factory=deque)
    values: deque[float] = field(default_factory=deque)
    pods: deque[int] = field(default_factory=deque)
    seen: float = -math.inf
    first_time: float = math.inf
    """When the series' first known sample was taken (for new pods: when the first of them served)."""
    trend: LocalTrend | None = None
    """The local quadratic trend of the (running-median filtered) samples."""
    trend_from: float = -math.inf
    """Samples before this time do not feed the trend (the Deployment's, while its pods mix, and one rate window
    after); such a restarted trend counts once it spans half the trend's memory."""


class Settings(Protocol):
    """The scorer's parameters the pieces of evidence read (`ForecastScorer` documents each)."""

    min_new_pods: int
    min_new_samples: int
    min_forecast_samples: int
    settle_seconds: float
    robust_samples: int
    shared_fraction: float
    urgency_discount: float
    trend_memory_seconds: float
    traffic_rise: float | None
    ready_allowance_seconds: float


def median(values: list[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    mid = n // 2
    return ordered[mid] if n % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])


def normal_cdf(z: float) -> float:
    """Standard normal CDF."""
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def fmt(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.4g}"


@dataclass
class Reading:
    """One assessment's reading of the tracks: the figures the pieces of evidence share."""

    spec: MetricSpec
    rollout: RolloutState
    now: float
    horizon: float
    settings: Settings
    tracks: dict[Scope, Track]
    dep_fresh: bool
    new_fresh: bool
    old_fresh: bool
    mixing: bool
    """Old pods still serve (or their rate series linger): the Deployment's value moves with the mix."""
    traffic: tuple[np.ndarray, np.ndarray]
    """(times, requests/s per pod) of the Deployment's traffic (`MetricHistory.traffic_per_pod`), possibly empty."""
    traffic_start: float | None
    """The traffic per pod when the rollout's history began (`MetricHistory.traffic_at_start`)."""
    season: SeasonalProfile | None = None
    """The trained daily season of this Deployment and metric, None without one."""
    worse_before: bool = False
    """Whether the new pods were worse than old pods (beyond the noise) the last time both ran."""
    _trend_risks: dict[Scope, tuple[float, TrendForecast] | None] = field(default_factory=dict, repr=False)
    """Memo of `trend_risk`: filled on demand, never changed once a scope's forecast is computed."""

    @property
    def sign(self) -> float:
        return 1.0 if self.spec.direction is Direction.ABOVE else -1.0

    @property
    def op(self) -> str:
        return ">=" if self.spec.direction is Direction.ABOVE else "<="

    @property
    def per_pod(self) -> bool:
        """A summed metric: new and old pods are compared per pod (their sums grow with their pod counts)."""
        spec = self.spec
        return spec.aggregate == "sum" and spec.denominator is None and spec.quantile is None

    def limit(self, scope: Scope) -> float:
        """The threshold a scope's tracked values are held against: per pod for the pods of a summed metric."""
        if self.per_pod and scope is not Scope.DEPLOYMENT and self.rollout.desired_replicas > 0:
            return self.spec.threshold / self.rollout.desired_replicas
        return self.spec.threshold

    def badness(self, value: float, scope: Scope = Scope.DEPLOYMENT) -> float:
        """How far beyond the scope's threshold, >= 0 when breached."""
        return self.sign * (value - self.limit(scope))

    def over(self, value: float, scope: Scope) -> bool:
        return self.badness(value, scope) >= 0

    def robust_now(self, scope: Scope) -> float | None:
        """Median of the last `robust_samples` samples; with fewer, the least bad of them: one or two outliers
        (a counter reset, a scrape of a restarting pod) are never a level."""
        values = list(self.tracks[scope].values)[-self.settings.robust_samples:]
        if not values:
            return None
        if len(values) == self.settings.robust_samples:
            return median(values)
        return min(values, key=lambda v: self.badness(v, scope))

    def old_ref(self) -> float | None:
        """The old pods' level: median over `robust_samples` recent samples."""
        if not self.old_fresh:
            return None
        values = list(self.tracks[Scope.OLD].values)[-self.settings.robust_samples:]
        return median(values) if values else None

    def settles(self, scope: Scope) -> bool:
        """The scope is decaying back: at the robust (Theil-Sen) slope of its last `robust_samples` samples it is
        back within the threshold within `settle_seconds`. New pods warming up (JIT, caches, connection pools)
        look like this; a regression stays put. The forecaster's own trend lags too much to tell in time."""
        track = self.tracks[scope]
        keep = self.settings.robust_samples
        times, values = list(track.times)[-keep:], list(track.values)[-keep:]
        if len(values) < 3 or self.settings.settle_seconds <= 0:
            return False
        slopes = [(values[j] - values[i]) / (times[j] - times[i])
                  for i in range(len(values)) for j in range(i + 1, len(values)) if times[j] > times[i]]
        toward_good = -self.sign * median(slopes) if slopes else 0.0
        if toward_good <= 0:
            return False
        excess = self.badness(median(values[-3:]), scope)
        return excess <= toward_good * self.settings.settle_seconds

    def enough_new_pods(self) -> bool:
        """Whether the latest new-pod sample covers `min_new_pods` pods (0: the source did not say)."""
        pods = self.tracks[Scope.NEW].pods
        return not pods or pods[-1] == 0 or pods[-1] >= self.settings.min_new_pods

    # Release attribution ----------------------------------------------------------------------------------
    def pairs(self, count: int) -> list[tuple[float, float, float]]:
        """The last `count` (time, new, old) samples taken at the same moment."""
        new_track, old_track = self.tracks[Scope.NEW], self.tracks[Scope.OLD]
        old_at = dict(zip(old_track.times, old_track.values, strict=True))
        return [(t, v, old_at[t]) for t, v in zip(new_track.times, new_track.values, strict=True)
                if t in old_at][-count:]

    @cached_property
    def release_effect(self) -> tuple[float, bool] | None:
        """(median new-minus-old difference, bad side positive; whether it exceeds the noise) over recent samples
        taken at the same moment. None when no old pods are left to compare with (the rollout is complete; the
        old pods' rate series linger a window longer, but they no longer serve what the new pods serve)."""
        if self.rollout.old_replicas == 0:
            return None
        pairs = self.pairs(self.settings.robust_samples)
        if not pairs:
            return 0.0, False
        delta = median([self.sign * (v - o) for _, v, o in pairs])
        noise = math.hypot(self.tracks[Scope.NEW].forecaster.sigma, self.tracks[Scope.OLD].forecaster.sigma)
        return delta, delta > RELEASE_Z * noise

    def shared_note(self) -> str | None:
        """Why a breach is not this release's, or None when it is (or cannot be told apart)."""
        effect = self.release_effect
        if effect is None:
            if self.worse_before or len(self.recent_traffic) >= TRAFFIC_BASELINE_SAMPLES:
                return self.load_note()
            return ("no old pod left to compare with, the new pods were no worse than old pods when last compared, "
                    "and no traffic to tell a surge by: a change since is not attributable to this release")
        if effect[1]:
            return None
        return (f"new pods are no worse than old pods at the same moments (median difference {effect[0]:+.3g}): "
                f"not caused by this release")

    @cached_property
    def recent_traffic(self) -> list[float]:
        """The Deployment's traffic per pod within `trend_memory_seconds`; empty without `traffic_rise`."""
        if self.settings.traffic_rise is None:
            return []
        times, values = self.traffic
        return values[times >= self.now - self.settings.trend_memory_seconds].tolist()

    def load_note(self) -> str | None:
        """Why a rise follows the load: the Deployment's traffic per pod (median of its last 3 samples) is
        `traffic_rise` or more above its level before: the lowest within `trend_memory_seconds` (median of 5
        samples), or the level when the rollout began if that was higher. While pods are replaced, pods younger than
        their rate window under-count, and a long rate window makes that dip last: the level at the start, before
        the churn, is no dip. A surge is felt by every pod; once no old pod is left to compare with, it is the only
        witness that the release did not cause the rise."""
        recent, span = self.recent_traffic, TRAFFIC_BASELINE_SAMPLES
        if self.settings.traffic_rise is None or len(recent) < span:
            return None
        lowest = min(median(recent[i:i + span]) for i in range(len(recent) - span + 1))
        if self.traffic_start is not None:
            lowest = max(lowest, self.traffic_start)
        now = median(recent[-3:])
        if not (lowest > 0 and now >= lowest * (1.0 + self.settings.traffic_rise)):
            return None
        return (f"the Deployment's traffic rose {now / lowest - 1.0:.0%} ({lowest:.3g} -> {now:.3g} requests/s "
                f"per pod) within {format_duration(self.settings.trend_memory_seconds)}: a rise that follows the load, "
                f"with no old pod left to compare with, is not attributable to this release")

    def scatter(self, pods_new: int) -> float:
        """The noise of one aligned new-minus-old difference: the scatter seen in old pods (their one-step sigma,
        or their successive differences while it is not learnt yet) scaled to as few pods as the new pods have
        (the sigma of a mean over pods shrinks as 1/sqrt(pods)), and never below what the new pods' own
        forecaster has seen."""
        old_track, new_track = self.tracks[Scope.OLD], self.tracks[Scope.NEW]
        values = list(old_track.values)
        diffs = [b - a for a, b in pairwise(values)]
        successive = math.sqrt(sum(d * d for d in diffs) / (2 * len(diffs))) if diffs else 0.0
        old_sigma = max(old_track.forecaster.sigma, successive)
        old_pods = old_track.pods[-1] if old_track.pods else 0
        per_pod = old_sigma * math.sqrt(max(old_pods, 1) / max(pods_new, 1))
        return max(per_pod, new_track.forecaster.sigma, old_track.forecaster.min_sigma)

    def held_margin(self, pairs: list[tuple[float, float, float]], margins: list[float],
                    scatter: float) -> tuple[float, float, float]:
        """(margin, its standard error, closing pace per second) of the projected
        level beyond the threshold, `settle_seconds` after the latest sample. The margins' line (robust: the median
        pairwise slope) is followed when it closes, never when it grows: a warm-up bump decays, a regression stays.
        The standard error is a regression line's prediction error there, so two samples say little about a pace
        and the first one only gives the level now (the next sample tells whether it closes)."""
        n = len(pairs)
        times = [t for t, _, _ in pairs]
        if n < 2 or times[-1] <= times[0]:
            return sum(margins) / n, scatter / math.sqrt(n), 0.0
        slopes = [(margins[j] - margins[i]) / (times[j] - times[i])
                  for i in range(n) for j in range(i + 1, n) if times[j] > times[i]]
        closing = max(-median(slopes), 0.0)
        mean_t = sum(times) / n
        sxx = sum((t - mean_t) ** 2 for t in times)
        ahead = times[-1] + self.settings.settle_seconds - mean_t
        margin = sum(margins) / n - closing * ahead
        return margin, scatter * math.sqrt(1.0 / n + ahead * ahead / sxx), closing

    def mix_breach_time(self, new_value: float, old_value: float) -> float:
        """When the Deployment reaches the threshold assuming steady progress. Max/min aggregates follow the worst
        pod, so they breach as soon as the new pods do; other aggregates mix new and old pods."""
        spec, rollout, now = self.spec, self.rollout, self.now
        extreme = spec.denominator is None and spec.quantile is None and (
            (spec.aggregate == "max" and spec.direction is Direction.ABOVE)
            or (spec.aggregate == "min" and spec.direction is Direction.BELOW)
        )
        if extreme:
            return now
        return mix_breach_time(self.limit(Scope.NEW), new_value, old_value, rollout, now)

    # Local trends -------------------------------------------------------------------------------------------
    def trend_risk(self, scope: Scope) -> tuple[float, TrendForecast] | None:
        """(risk, forecast) of the scope's local trend, or None before `min_forecast_samples` samples."""
        if scope not in self._trend_risks:
            self._trend_risks[scope] = self._compute_trend_risk(scope)
        return self._trend_risks[scope]

    def _compute_trend_risk(self, scope: Scope) -> tuple[float, TrendForecast] | None:
        track = self.tracks[scope]
        trend = track.trend
        if trend is None or trend.count < self.settings.min_forecast_samples:
            return None
        restarted = math.isfinite(track.trend_from)
        if restarted and track.last_time - track.trend_from < self.settings.trend_memory_seconds / 2:
            # a trend restarted when the pods stopped mixing: until it spans half its memory, a few minutes of
            # samples would be extrapolated over the whole horizon (the new pods' own trend speaks meanwhile)
            return None
        seasonal = self.season_offsets(scope)
        now_offset, worst = seasonal if seasonal is not None else (0.0, 0.0)
        # the trend was fitted without the season: its path plus the season's worst within the horizon
        forecast = trend.breach(self.limit(scope) - worst, self.spec.direction, self.reach(scope), self.lag(scope))
        if forecast is None:
            return None
        if seasonal is not None:
            forecast = forecast._replace(forecast=forecast.forecast + worst, level=forecast.level + now_offset)
        # P(breach within the horizon), optionally weighing a later breach less (`urgency_discount`)
        at = forecast.seconds if forecast.seconds is not None else self.horizon
        weight = 1.0 - self.settings.urgency_discount * min(at / self.horizon, 1.0)
        return forecast.probability * weight, forecast

    def reach(self, scope: Scope) -> float:
        """How far ahead the scope's trend is extrapolated: the horizon, or EXTRAPOLATION_FACTOR times the time the
        trend spans if that is shorter."""
        trend = self.tracks[scope].trend
        if trend is None or trend.first_time is None or trend.last_time is None:
            return self.horizon
        return min(self.horizon, EXTRAPOLATION_FACTOR * (trend.last_time - trend.first_time))

    def lag(self, scope: Scope) -> float:
        """Seconds from the scope's last sample to now."""
        last = self.tracks[scope].last_time
        return max(0.0, self.now - last) if math.isfinite(last) else 0.0

    def season_offsets(self, scope: Scope) -> tuple[float, float] | None:
        """(the season's offset now, its worst offset as far ahead as the scope's trend is extrapolated) in the
        scope's units, or None without a trained season for this Deployment and metric."""
        season = self.season
        if season is None:
            return None
        scale = self.limit(scope) / self.spec.threshold if self.spec.threshold else 1.0
        worst = season.worst_offset(self.now, self.now + self.reach(scope), self.spec.direction)
        return season.offset(self.now) * scale, worst * scale

    def season_alone_probability(self, scope: Scope) -> float | None:
        """P(breach within the horizon) if the value stayed at its level net of the season and only the season
        moved it: whether the time of day alone takes it beyond the threshold. None without a trained season."""
        seasonal = self.season_offsets(scope)
        trend = self.tracks[scope].trend
        if seasonal is None or trend is None:
            return None
        forecast = trend.breach(self.limit(scope) - seasonal[1], self.spec.direction, 0.0, self.lag(scope))
        return None if forecast is None else forecast.probability

    def season_note(self, scope: Scope) -> str:
        seasonal = self.season_offsets(scope)
        if seasonal is None:
            return ""
        now_offset, worst = seasonal
        return (f"; the trend is net of the trained season, whose worst within {format_duration(self.reach(scope))} "
                f"adds {worst - now_offset:+.3g} (in the forecast)")

    @property
    def counts_events(self) -> bool:
        """The metric counts events over a window (`increase(...[5m])` of restarts): a step in it is one event,
        not a trend, so it is never extrapolated. Read from the MetricSpec: a count function in its query, or a
        unit that names events."""
        spec = self.spec
        if spec.denominator is not None or spec.quantile is not None:
            return False
        return bool(COUNT_FUNCTIONS.search(spec.query)) or spec.unit.lower() in COUNT_UNITS
