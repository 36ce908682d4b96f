"""Rollout-aware forecast scoring: the trained drop-in for `ThresholdTrendScorer` behind the Scorer interface.

The engine calls `assess` once per rollout, metric and tick. Per (Deployment, revision, metric, scope) the scorer
keeps a damped-trend forecaster and a few recent samples, and feeds them only the samples it has not seen yet, so
a tick costs the same whatever the age of the rollout. Four kinds of evidence, the strongest wins:

1. the Deployment breaches now (the median of its last 5 samples, so an outlier or two is not a breach);
2. new pods against old pods at the same moments, a sequential test: the Deployment once every pod runs the new
   revision is the old pods' level plus the new-minus-old gap. Each aligned sample adds one gap; the evidence is
   the smaller of the mean gap and the margin beyond the threshold held `settle_seconds` ahead (following the
   margins' line when it closes, never when it grows), in standard errors built from the scatter seen in old pods
   scaled to the new pods' count. A gap many times the scatter counts from the first new pods' first sample (an
   abrupt regression breaches within a minute); a small one needs more samples; a gap that closes (the warm-up
   of new pods) is held back by the line's prediction error as much as by its slope;
3. the local trend of the new pods (and of the Deployment once every pod is new: before, its value moves with the
   mix of new and old pods, so its trend starts afresh then and counts once it spans half its memory): P(the
   trend's path is beyond the threshold within the horizon), from a discounted quadratic regression
   (`LocalTrend`), extrapolated at most EXTRAPOLATION_FACTOR times as far as it reaches back (a young trend
   says little about the next half hour). A rise is extrapolated as a straight line only when the data rules out
   its flattening (`flatten_z` standard errors of the curvature); until then it is assumed to level off at the
   flattest curvature the data allows, so a cache filling up waits and a leak of constant pace acts early. A count
   of events (`increase()` of restarts: read from the MetricSpec's query or unit) is never extrapolated: a restart
   is one event, not a trend; instead new pods whose count recurs (`recurring_events` within the window, on two
   samples in a row) while old pods stay below one count as a crash loop when the restarts keep new pods from
   being ready or the count still rises (two counter resets of a pod that serves again are no loop). With a
   trained daily season (`SeasonalProfile`) the trends see the samples net of it and the season's worst offset
   within the horizon is added back as a level; a breach the season alone brings is capped at alert;
4. with a trained `RolloutIsolationForest`: its verdict that the joint feature vector of the rollout is unusual,
   for the metric that deviates most. On its own it is capped below acting risk (an unusual rollout is not a
   predicted breach: a cache filling up is unusual too); `forest_weight` > 0 lets it raise a forecast.

Evidence that old pods share (a traffic surge, a slow dependency) is capped at SHARED_CAUSE_RISK_CAP: the release
is not its cause. Once no old pod is left (the bake after completion), a breach or forecast counts unless the
Deployment's traffic per pod (a ratio metric's denominator, `MetricHistory.traffic_per_pod`) rose by `traffic_rise`
within the trend's memory: a surge that comes after the last old pod left is felt by every pod at once and is not
attributable to the release, while a leak too young to show while old pods ran is. With no traffic series to tell
by, it counts only if the new pods were worse than old pods the last time both ran. Old pods are summarised by
the median of their recent samples, so one noisy old pod (or one scrape) does not flip the comparison. Unknown
samples (scrape gaps, too little traffic) are skipped; the running median inside each forecaster takes out single
outliers such as counter resets.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from itertools import pairwise
from typing import Any

import numpy as np

from predictor.config import MetricSpec, format_duration, parse_duration
from predictor.detectors.forecast import DampedTrendForecaster, LocalTrend, TrendForecast, _median_small
from predictor.detectors.forest import RolloutIsolationForest
from predictor.detectors.season import SeasonalProfile
from predictor.detectors.trend import SHARED_CAUSE_RISK_CAP
from predictor.domain import Assessment, DeploymentRef, Direction, ForecastBand, RolloutState, Scope
from predictor.features import MetricHistory, Series, mix_breach_time

DEFAULT_LIVE_PARAMS: Mapping[str, float] = {"alpha": 0.3, "beta": 0.05, "phi": 0.96}
"""Smoothing parameters of a series without a trained forecaster: quick to follow a regression within a few
samples (alpha), a trend that builds over about ten samples (beta) and levels off within a few minutes (phi)."""
SETTLING_RISK_CAP = 0.5
"""Risk of a breach by new pods whose forecast decays back below the threshold: warming up, not broken."""
RELEASE_Z = 2.0
"""New pods count as worse than old pods when the median difference exceeds this many combined sigmas; the
new-versus-old test's confidence is the normal CDF of its statistic less this many standard errors."""
NEGLIGIBLE_PROBABILITY = 1e-6
"""Below this bound of the breach probability a forecast is not computed step by step."""
TRAFFIC_BASELINE_SAMPLES = 5
"""The traffic's lowest level is a median over this many samples, and the traffic test needs as many."""
EXTRAPOLATION_FACTOR = 4.0
"""A trend is extrapolated at most this many times the time it spans: a minute and a half of samples says little
about the next half hour."""
NEW_POD_BREACH_RISK = 0.95
"""Risk of a persisted, release-specific breach of the new pods (times the confidence of the margin)."""

COUNT_FUNCTIONS = re.compile(r"\b(?:increase|changes|resets)\s*\(")
"""PromQL functions whose result counts events over a window."""
COUNT_UNITS = frozenset({"restarts", "events", "count", "counts"})
"""Units (MetricSpec.unit) that name counted events."""
RANGE_WINDOW = re.compile(r"\[((?:\d+(?:\.\d+)?(?:ms|[smhdwy]))+)(?::[^\]]*)?\]")
"""A PromQL range selector (`[1m]`, `[5m:15s]`): how far back each sample of the query looks."""

TrackKey = tuple[DeploymentRef, int, str, Scope]


@dataclass(frozen=True)
class _Evidence:
    risk: float
    breach_at: float | None
    reason: str


@dataclass
class _Track:
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
    """The local quadratic trend of the (running-median filtered) samples: evidence 3."""
    trend_from: float = -math.inf
    """Samples before this time do not feed the trend (the Deployment's, while its pods mix, and one rate window
    after); such a restarted trend counts once it spans half the trend's memory."""


def _fmt(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.4g}"


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    mid = n // 2
    return ordered[mid] if n % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])


def _phi(z: float) -> float:
    """Standard normal CDF."""
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


class ForecastScorer:
    """Scores one metric of one rollout from damped-trend forecasts and the new-versus-old comparison.

    Parameters (all optional):
    - `step_seconds`: the tick, the step the forecasters count in (`policy.interval_seconds`).
    - `forecasters`: fitted `DampedTrendForecaster`s whose parameters seed each live series, keyed by
      `"<namespace>/<name>:<metric>"` or by `"<metric>"` (looked up in that order); missing ones use
      `default_params`.
    - `seasons`: fitted `SeasonalProfile`s keyed by `"<namespace>/<name>:<metric>"` (the retraining job keeps
      only those where the history covers the season and the season lowers the AIC): the season is taken out of
      the samples before their forecasters and trends see them, and its worst offset within the horizon is added
      back as a level.
    - `forest`: a fitted `RolloutIsolationForest` (evidence 4), None to leave it out.
    - `min_new_pods`, `min_new_samples`: below these the new-versus-old comparison abstains (default 1 and 1: the
      sequential test itself decides how many samples a gap needs).
    - `min_forecast_samples`: samples a series needs before its forecast counts.
    - `settle_seconds`: how far ahead the new pods must still breach (warm-up grace): the new-versus-old margin
      is held there, and a breach whose robust slope brings it back within this long is settling.
    - `robust_samples`: recent samples the old pods' median is taken over.
    - `sigma_floor_fraction`: the forecasters' sigma is at least this share of |threshold| (constant series).
    - `shared_fraction`: old pods' breach probability, as a share of the new pods', that makes a cause shared.
    - `forest_risk_cap`, `forest_weight`: the risk of the forest's verdict on its own, and its weight when it
      corroborates a forecast (0: informational only).
    - `forget_after_seconds`: series not assessed for this long are dropped from memory.
    - `trend_memory_seconds`: time constant of the local trend's exponential forgetting (default 600 s, the
      default `policy.lookback`).
    - `flatten_z`: standard errors of the curvature by which a rise is assumed to flatten (0: straight lines).
    - `recurring_events`: events (restarts) of the new pods within a count's window that make a loop.
    - `traffic_rise`: once no old pod is left, a rise of the Deployment's traffic per pod (a ratio metric's
      denominator) by this share within `trend_memory_seconds` makes a breach or trend follow the load, not the
      release (default 0.25; None: no traffic check).
    - `urgency_discount` weighs a breach at the horizon this much less than one now (default 0: the risk is the
      probability of a breach within the horizon).
    """

    def __init__(
        self,
        *,
        step_seconds: float = 15.0,
        forecasters: Mapping[str, DampedTrendForecaster] | None = None,
        seasons: Mapping[str, SeasonalProfile] | None = None,
        forest: RolloutIsolationForest | None = None,
        default_params: Mapping[str, float] = DEFAULT_LIVE_PARAMS,
        min_new_pods: int = 1,
        min_new_samples: int = 1,
        min_forecast_samples: int = 6,
        settle_seconds: float = 60.0,
        robust_samples: int = 5,
        sigma_floor_fraction: float = 0.01,
        shared_fraction: float = 0.5,
        urgency_discount: float = 0.0,
        forest_risk_cap: float = SHARED_CAUSE_RISK_CAP,
        forest_weight: float = 0.0,
        forget_after_seconds: float = 3600.0,
        trend_memory_seconds: float = 600.0,
        flatten_z: float = 3.0,
        recurring_events: int = 2,
        traffic_rise: float | None = 0.25,
    ) -> None:
        self.step_seconds = step_seconds
        self.forecasters = dict(forecasters or {})
        self.seasons = dict(seasons or {})
        self.forest = forest
        self.default_params = dict(default_params)
        self.min_new_pods = min_new_pods
        self.min_new_samples = min_new_samples
        self.min_forecast_samples = min_forecast_samples
        self.settle_seconds = settle_seconds
        self.robust_samples = robust_samples
        self.sigma_floor_fraction = sigma_floor_fraction
        self.shared_fraction = shared_fraction
        self.urgency_discount = urgency_discount
        self.forest_risk_cap = forest_risk_cap
        self.forest_weight = forest_weight
        self.forget_after_seconds = forget_after_seconds
        self.trend_memory_seconds = trend_memory_seconds
        self.flatten_z = flatten_z
        self.recurring_events = recurring_events
        self.traffic_rise = traffic_rise
        self._validate()
        self._default = DampedTrendForecaster.from_params(
            alpha=self.default_params["alpha"], beta=self.default_params["beta"], phi=self.default_params["phi"],
            step_seconds=step_seconds,
        )
        self._tracks: dict[TrackKey, _Track] = {}
        self._revisions: dict[DeploymentRef, int] = {}
        self._tick: float | None = None
        self._ticks_since_sweep = 0
        self._forest_cache: dict[tuple[DeploymentRef, int], tuple[float, dict[str, float]] | None] = {}
        self._forest_tick: float | None = None
        self._attributed: dict[tuple[DeploymentRef, int, str], bool] = {}
        """Per rollout revision and metric: whether the new pods were worse than old pods (beyond the noise) the
        last time both ran. Decides, once no old pod is left, whether a breach can still be this release's."""

    def _validate(self) -> None:
        """The scorer is built once from config by the wiring: a bad value fails there, naming the parameter."""
        if not (self.step_seconds > 0 and math.isfinite(self.step_seconds)):
            raise ValueError(f"step_seconds: expected a positive number of seconds, got {self.step_seconds!r}")
        for name in ("min_new_pods", "min_new_samples", "min_forecast_samples", "robust_samples", "recurring_events"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
        for name in ("sigma_floor_fraction", "shared_fraction", "urgency_discount", "forest_risk_cap",
                     "forest_weight"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}: expected 0..1, got {value!r}")
        if self.traffic_rise is not None and not (self.traffic_rise > 0 and math.isfinite(self.traffic_rise)):
            raise ValueError(f"traffic_rise: expected a positive share or None, got {self.traffic_rise!r}")
        if self.settle_seconds < 0:
            raise ValueError(f"settle_seconds: expected >= 0, got {self.settle_seconds!r}")
        if not (self.trend_memory_seconds > 0 and math.isfinite(self.trend_memory_seconds)):
            raise ValueError(f"trend_memory_seconds: expected a positive number of seconds, got "
                             f"{self.trend_memory_seconds!r}")
        if not self.flatten_z >= 0:
            raise ValueError(f"flatten_z: expected >= 0 standard errors, got {self.flatten_z!r}")
        missing = {"alpha", "beta", "phi"} - set(self.default_params)
        if missing:
            raise ValueError(f"default_params: missing {', '.join(sorted(missing))}")
        for key, forecaster in self.forecasters.items():
            if not hasattr(forecaster, "alpha_"):
                raise ValueError(f"forecasters[{key!r}]: not fitted")
            if forecaster.step_seconds != self.step_seconds:
                raise ValueError(f"forecasters[{key!r}]: fitted for a {forecaster.step_seconds:g}s step, "
                                 f"the scorer runs every {self.step_seconds:g}s")
        for key, season in self.seasons.items():
            if not hasattr(season, "profile_"):
                raise ValueError(f"seasons[{key!r}]: not fitted")
        if self.forest is not None and not hasattr(self.forest, "forest_"):
            raise ValueError("forest: not fitted")

    # The Scorer interface ---------------------------------------------------------------------------------
    def assess(
        self, rollout: RolloutState, spec: MetricSpec, history: MetricHistory, now: float, horizon_seconds: float
    ) -> Assessment:
        self._start_tick(now)
        ref, revision = rollout.ref, rollout.revision
        if self._revisions.get(ref) != revision:
            self._forget(ref)
            self._revisions[ref] = revision
        series = {scope: history.series(ref, revision, spec.name, scope) for scope in Scope}
        dep, new, old = (series[s] for s in Scope)
        dep_fresh, new_fresh, old_fresh = (_fresh(s) for s in (dep, new, old))
        # while pods are replaced the Deployment's value moves with the mix of new and old pods, which is no trend
        # of either: its own trend counts once every pod is new (and the old pods' rate series are gone)
        mixing = rollout.old_replicas > 0 or old_fresh
        tracks = {scope: self._updated_track((ref, revision, spec.name, scope), spec, series[scope], now,
                                             rollout.desired_replicas, mixing)
                  for scope in Scope}
        base: dict[str, Any] = {"metric": spec.name, "threshold": spec.threshold, "direction": spec.direction}
        if not dep_fresh and not new_fresh:
            cause = dep.last_error or new.last_error or "no samples yet"
            return Assessment(**base, risk=0.0, value=None, unknown=True, reason=f"{spec.name}: no data ({cause})")
        value = dep.last if dep_fresh else new.last
        view = _View(spec, rollout, now, horizon_seconds, self, tracks, dep_fresh, new_fresh, old_fresh, mixing,
                     history.traffic_per_pod(ref, revision), history.traffic_at_start(ref, revision))
        evidence: list[_Evidence] = []
        notes: list[str] = []
        effect = view.release_effect
        if effect is not None and new_fresh and old_fresh:
            self._attributed[(ref, revision, spec.name)] = effect[1]
        for found in (view.current(), view.comparison(notes), view.recurrence(), *view.forecasts()):
            if found is not None:
                evidence.append(found)
        if self.forest is not None:
            evidence, forest_note = self._with_forest(evidence, rollout, spec, history, now)
            if forest_note:
                notes.append(forest_note)
        note = f" ({'; '.join(notes)})" if notes else ""
        if not evidence:
            return Assessment(
                **base, risk=0.0, value=value,
                reason=f"{spec.name}: deployment {_fmt(dep.last)}, new {_fmt(new.last)}, "
                f"old {_fmt(view.old_ref())}, threshold {spec.threshold:g}; {view.quiet_forecast()}{note}",
                forecast=_forecast_band(view),
            )
        best = max(evidence, key=lambda e: e.risk)
        return Assessment(**base, risk=round(best.risk, 4), value=value, predicted_breach=best.breach_at,
                          reason=best.reason + note, forecast=_forecast_band(view))

    # State ------------------------------------------------------------------------------------------------
    def _start_tick(self, now: float) -> None:
        if now == self._tick:
            return
        self._tick = now
        self._ticks_since_sweep += 1
        if self._ticks_since_sweep >= 40:
            self._ticks_since_sweep = 0
            cutoff = now - self.forget_after_seconds
            for key in [k for k, t in self._tracks.items() if t.seen < cutoff]:
                del self._tracks[key]
            live = {k[0] for k in self._tracks}
            for ref in [r for r in self._revisions if r not in live]:
                del self._revisions[ref]

    def _forget(self, ref: DeploymentRef) -> None:
        for key in [k for k in self._tracks if k[0] == ref]:
            del self._tracks[key]
        for attributed in [k for k in self._attributed if k[0] == ref]:
            del self._attributed[attributed]

    def _template(self, ref: DeploymentRef, metric: str) -> DampedTrendForecaster:
        return self.forecasters.get(f"{ref}:{metric}") or self.forecasters.get(metric) or self._default

    def season(self, ref: DeploymentRef, metric: str) -> SeasonalProfile | None:
        return self.seasons.get(f"{ref}:{metric}") if self.seasons else None

    def _updated_track(
        self, key: TrackKey, spec: MetricSpec, series: Series, now: float, desired_replicas: int, mixing: bool
    ) -> _Track:
        per_pod = spec.aggregate == "sum" and spec.denominator is None and spec.quantile is None
        per_pod = per_pod and key[3] is not Scope.DEPLOYMENT
        track = self._tracks.get(key)
        if track is None:
            # a trained sigma describes the Deployment series it was fitted on; new and old pods, fewer of them,
            # are noisier or smoother, so they learn their own
            forecaster = self._template(key[0], key[2]).spawn(keep_sigma=key[3] is Scope.DEPLOYMENT)
            limit = spec.threshold / max(desired_replicas, 1) if per_pod else spec.threshold
            forecaster.min_sigma = max(forecaster.min_sigma, self.sigma_floor_fraction * abs(limit), 1e-12)
            keep = max(self.robust_samples, self.min_new_samples, 3)
            track = _Track(forecaster, times=deque(maxlen=keep), values=deque(maxlen=keep), pods=deque(maxlen=keep),
                           trend=self._new_trend(forecaster.min_sigma))
            self._tracks[key] = track
        track.seen = now
        window = _range_seconds(spec.query)
        if mixing and key[3] is Scope.DEPLOYMENT:
            # while pods are replaced the Deployment's value moves with the mix, which is no trend: its own trend
            # starts once every pod is new and the last one's rate window is full
            track.trend_from = now + window
            if track.trend is not None and track.trend.count:
                track.trend = self._new_trend(track.forecaster.min_sigma)
        season = self.season(key[0], key[2])
        season_scale = 1.0 / max(desired_replicas, 1) if per_pod else 1.0  # a sum's season, shared out per pod
        times = series.times
        if times.size and times[-1] > track.last_time:
            start = int(times.searchsorted(track.last_time, side="right"))
            for t, v, p in zip(times[start:].tolist(), series.values[start:].tolist(),
                               series.pods[start:].tolist(), strict=True):
                if per_pod:  # a sum grows with the pods: compare and project per pod
                    v = v / p if p > 0 else math.nan
                offset = season.offset(t) * season_scale if season is not None else 0.0
                track.forecaster.update(t, v - offset)
                if math.isfinite(v):
                    track.first_time = min(track.first_time, t)
                    track.times.append(t)
                    track.values.append(v)
                    track.pods.append(int(p))
                    assert track.trend is not None
                    # the first samples of new pods look back over a window they did not all serve in: a rate
                    # ramps up over it (a start-up curve, no trend of the release), so the trend starts after it
                    if t >= track.trend_from and (key[3] is not Scope.NEW or t - track.first_time >= window):
                        recent = list(track.values)[-track.forecaster.median_window:]
                        track.trend.update(t, _median_small(recent) - offset)
            track.last_time = float(times[-1])
        return track

    def _new_trend(self, min_sigma: float) -> LocalTrend:
        return LocalTrend(step_seconds=self.step_seconds, memory_seconds=self.trend_memory_seconds,
                          flatten_z=self.flatten_z, min_sigma=min_sigma)

    # Forest -----------------------------------------------------------------------------------------------
    def _forest_score(
        self, rollout: RolloutState, history: MetricHistory, now: float
    ) -> tuple[float, dict[str, float]] | None:
        """The forest's calibrated score of this rollout now, scored in one batch per tick for every rollout in
        the history (scikit-learn's per-call overhead would cost milliseconds per rollout)."""
        assert self.forest is not None
        if self._forest_tick != now:
            self._forest_tick = now
            keys = sorted(history.refs())
            self._forest_cache = dict(zip(keys, self.forest.score_history(history, keys, now), strict=True))
        key = (rollout.ref, rollout.revision)
        if key not in self._forest_cache:
            self._forest_cache[key] = self.forest.score_history(history, [key], now)[0]
        return self._forest_cache[key]

    def _with_forest(
        self, evidence: list[_Evidence], rollout: RolloutState, spec: MetricSpec, history: MetricHistory,
        now: float,
    ) -> tuple[list[_Evidence], str]:
        """The forest's verdict (score >= its fitted threshold) is evidence for the metric it points at, capped at
        `forest_risk_cap`; with `forest_weight` > 0 it also raises that metric's release-specific forecast."""
        scored = self._forest_score(rollout, history, now)
        if scored is None:
            return evidence, "isolation forest: abstained, too many unknown features"
        score, deviations = scored
        if spec.name not in deviations:
            return evidence, ""
        assert self.forest is not None
        top = max(deviations, key=lambda m: deviations[m])
        anomalous = score >= self.forest.threshold_
        note = f"isolation forest {score:.2f}" + (f", anomalous, most unusual metric {top}" if anomalous else "")
        if not anomalous or spec.name != top:
            return evidence, note
        combined = list(evidence)
        if self.forest_weight > 0:
            for i, e in enumerate(evidence):
                if SHARED_CAUSE_RISK_CAP < e.risk < 1.0:
                    boosted = e.risk + (1.0 - e.risk) * self.forest_weight * score
                    combined[i] = _Evidence(boosted, e.breach_at, f"{e.reason}; corroborated by the isolation "
                                            f"forest ({score:.2f})")
        combined.append(_Evidence(self.forest_risk_cap, None,
                                  f"{spec.name}: joint metrics unusual for a healthy rollout (isolation forest "
                                  f"{score:.2f} >= {self.forest.threshold_:.2f}; {spec.name} deviates "
                                  f"{deviations[spec.name]:.1f} robust sd from healthy)"))
        return combined, note


@lru_cache(maxsize=256)
def _range_seconds(query: str) -> float:
    """The longest range window of a PromQL query (0 without one: an instant gauge)."""
    return max((parse_duration(m) for m in RANGE_WINDOW.findall(query)), default=0.0)


def _fresh(series: Series) -> bool:
    return not series.empty and series.trailing_unknown == 0


@dataclass
class _View:
    """One assessment's reading of the tracks: the evidence functions share these figures."""

    spec: MetricSpec
    rollout: RolloutState
    now: float
    horizon: float
    scorer: ForecastScorer
    tracks: dict[Scope, _Track]
    dep_fresh: bool
    new_fresh: bool
    old_fresh: bool
    mixing: bool
    """Old pods still serve (or their rate series linger): the Deployment's value moves with the mix."""
    traffic: tuple[np.ndarray, np.ndarray]
    """(times, requests/s per pod) of the Deployment's traffic (`MetricHistory.traffic_per_pod`), possibly empty."""
    traffic_start: float | None
    """The traffic per pod when the rollout's history began (`MetricHistory.traffic_at_start`)."""
    risks: dict[Scope, tuple[float, TrendForecast] | None] = field(default_factory=dict)

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
        values = list(self.tracks[scope].values)[-self.scorer.robust_samples:]
        if not values:
            return None
        if len(values) == self.scorer.robust_samples:
            return _median(values)
        return min(values, key=lambda v: self.badness(v, scope))

    def old_ref(self) -> float | None:
        """The old pods' level: median over `robust_samples` recent samples."""
        if not self.old_fresh:
            return None
        values = list(self.tracks[Scope.OLD].values)[-self.scorer.robust_samples:]
        return _median(values) if values else None

    def settles(self, scope: Scope) -> bool:
        """The scope is decaying back: at the robust (Theil-Sen) slope of its last `robust_samples` samples it is
        back within the threshold within `settle_seconds`. New pods warming up (JIT, caches, connection pools)
        look like this; a regression stays put. The forecaster's own trend lags too much to tell in time."""
        track = self.tracks[scope]
        keep = self.scorer.robust_samples
        times, values = list(track.times)[-keep:], list(track.values)[-keep:]
        if len(values) < 3 or self.scorer.settle_seconds <= 0:
            return False
        slopes = [(values[j] - values[i]) / (times[j] - times[i])
                  for i in range(len(values)) for j in range(i + 1, len(values)) if times[j] > times[i]]
        toward_good = -self.sign * _median(slopes) if slopes else 0.0
        if toward_good <= 0:
            return False
        excess = self.badness(_median(values[-3:]), scope)
        return excess <= toward_good * self.scorer.settle_seconds

    def enough_new_pods(self) -> bool:
        """Whether the latest new-pod sample covers `min_new_pods` pods (0: the source did not say)."""
        pods = self.tracks[Scope.NEW].pods
        return not pods or pods[-1] == 0 or pods[-1] >= self.scorer.min_new_pods

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
        pairs = self.pairs(self.scorer.robust_samples)
        if not pairs:
            return 0.0, False
        delta = _median([self.sign * (v - o) for _, v, o in pairs])
        noise = math.hypot(self.tracks[Scope.NEW].forecaster.sigma, self.tracks[Scope.OLD].forecaster.sigma)
        return delta, delta > RELEASE_Z * noise

    def shared_note(self) -> str | None:
        """Why a breach is not this release's, or None when it is (or cannot be told apart)."""
        effect = self.release_effect
        if effect is None:
            worse_before = self.scorer._attributed.get((self.rollout.ref, self.rollout.revision, self.spec.name), False)
            if worse_before or len(self.recent_traffic) >= TRAFFIC_BASELINE_SAMPLES:
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
        if self.scorer.traffic_rise is None:
            return []
        times, values = self.traffic
        return values[times >= self.now - self.scorer.trend_memory_seconds].tolist()

    def load_note(self) -> str | None:
        """Why a rise follows the load: the Deployment's traffic per pod (median of its last 3 samples) is
        `traffic_rise` or more above its level before: the lowest within `trend_memory_seconds` (median of 5
        samples), or the level when the rollout began if that was higher. While pods are replaced, pods younger than
        their rate window under-count, and a long rate window makes that dip last: the level at the start, before
        the churn, is no dip. A surge is felt by every pod; once no old pod is left to compare with, it is the only
        witness that the release did not cause the rise."""
        recent, span = self.recent_traffic, TRAFFIC_BASELINE_SAMPLES
        if self.scorer.traffic_rise is None or len(recent) < span:
            return None
        lowest = min(_median(recent[i:i + span]) for i in range(len(recent) - span + 1))
        if self.traffic_start is not None:
            lowest = max(lowest, self.traffic_start)
        now = _median(recent[-3:])
        if not (lowest > 0 and now >= lowest * (1.0 + self.scorer.traffic_rise)):
            return None
        return (f"the Deployment's traffic rose {now / lowest - 1.0:.0%} ({lowest:.3g} -> {now:.3g} requests/s "
                f"per pod) within {format_duration(self.scorer.trend_memory_seconds)}: a rise that follows the load, "
                f"with no old pod left to compare with, is not attributable to this release")

    # Evidence 1 ---------------------------------------------------------------------------------------------
    def current(self) -> _Evidence | None:
        if not self.dep_fresh:
            return None
        level = self.robust_now(Scope.DEPLOYMENT)
        if level is None or not self.spec.breached(level):
            return None
        name, thr = self.spec.name, self.spec.threshold
        head = (f"{name}: deployment {level:.4g} {self.op} {thr:g} now (median of the last "
                f"{min(self.scorer.robust_samples, len(self.tracks[Scope.DEPLOYMENT].values))} samples)")
        shared = self.shared_note()
        if shared:
            return _Evidence(SHARED_CAUSE_RISK_CAP, self.now, f"{head}; {shared}")
        if self.settles(Scope.DEPLOYMENT):
            return _Evidence(SETTLING_RISK_CAP, self.now, f"{head}, but its forecast falls back below within "
                             f"{format_duration(self.scorer.settle_seconds)}: settling, not acting yet")
        return _Evidence(1.0, self.now, head)

    # Evidence 2 ---------------------------------------------------------------------------------------------
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
        closing = max(-_median(slopes), 0.0)
        mean_t = sum(times) / n
        sxx = sum((t - mean_t) ** 2 for t in times)
        ahead = times[-1] + self.scorer.settle_seconds - mean_t
        margin = sum(margins) / n - closing * ahead
        return margin, scatter * math.sqrt(1.0 / n + ahead * ahead / sxx), closing

    def comparison(self, notes: list[str]) -> _Evidence | None:
        """New pods against old pods at the same moments, projected to the whole Deployment: a sequential test.
        Each aligned sample adds one new-minus-old difference; the statistic is the smaller of the mean gap and the
        margin of the projected level beyond the threshold held `settle_seconds` ahead (`held_margin`), in standard
        errors from the scatter of old pods scaled to the new pods' count. A gap many times the scatter counts from
        the first sample; a small one needs more samples; a gap that closes (warm-up) is held back. The risk is
        NEW_POD_BREACH_RISK times the normal CDF of the statistic less RELEASE_Z."""
        scorer = self.scorer
        if not self.new_fresh or not self.old_fresh or self.rollout.old_replicas == 0:
            return None
        new_track = self.tracks[Scope.NEW]
        pairs = self.pairs(scorer.robust_samples)
        pods = new_track.pods[-1] if new_track.pods else 0
        if not self.enough_new_pods():
            notes.append(f"new pods abstained: {pods} new pod(s) < {scorer.min_new_pods}")
            return None
        if len(pairs) < scorer.min_new_samples:
            notes.append(f"new-vs-old abstained: {len(pairs)} aligned sample(s) < {scorer.min_new_samples}")
            return None
        old_ref = self.old_ref()
        assert old_ref is not None
        gaps = [self.sign * (v - o) for _, v, o in pairs]
        margins = [self.badness(old_ref + self.sign * g, Scope.NEW) for g in gaps]
        if margins[-1] < 0 or not self.over(pairs[-1][1], Scope.NEW):
            return None  # the latest sample is within the threshold: no persistent breach
        n = len(pairs)
        delta = self.sign * (sum(gaps) / n)
        per_new_pod = old_ref + delta
        projected = per_new_pod * self.rollout.desired_replicas if self.per_pod else per_new_pod
        name, thr = self.spec.name, self.spec.threshold
        new_now = new_track.values[-1]
        head = (f"{name}: new pods {new_now:.4g} vs old pods {old_ref:.4g} ({delta:+.4g} over {n} "
                f"sample(s), {pods} new pod(s)); with every pod new the deployment reaches {projected:.4g} {self.op} "
                f"{thr:g}")
        effect = self.release_effect
        if self.over(old_ref, Scope.OLD) or (effect is not None and not effect[1]):
            return _Evidence(SHARED_CAUSE_RISK_CAP, self.now, f"{head}, but old pods are as bad (median "
                             f"{old_ref:.4g}): not this release")
        scatter = self.scatter(pods)
        held, error, closing = self.held_margin(pairs, margins, scatter)
        z = min(held, sum(gaps) / n) / error
        confidence = _phi(z - RELEASE_Z)
        breach_at = self._mix_breach_time(new_now, old_ref)
        when = "now" if breach_at <= self.now else f"in {format_duration(breach_at - self.now)}"
        trend = f", closing by {closing * 60:.3g}/min" if closing > 0 else ""
        reason = (f"{head}; margin held {format_duration(scorer.settle_seconds)} on {held:+.3g}{trend}: {z:.1f} "
                  f"standard errors (scatter {scatter:.2g} per sample), confidence {confidence:.2f}")
        if held <= 0:
            return _Evidence(min(SETTLING_RISK_CAP, NEW_POD_BREACH_RISK * confidence), None,
                             f"{reason}: the gap closes, back within the threshold by then: warming up")
        return _Evidence(NEW_POD_BREACH_RISK * confidence, breach_at, f"{reason} (breach {when} as the rollout "
                         f"proceeds)")

    def _mix_breach_time(self, new_value: float, old_value: float) -> float:
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

    # Evidence 3 ---------------------------------------------------------------------------------------------
    def _breach_risk(self, scope: Scope) -> tuple[float, TrendForecast] | None:
        """(risk, forecast) of the scope's local trend, or None before `min_forecast_samples` samples."""
        if scope in self.risks:
            return self.risks[scope]
        self.risks[scope] = result = self._compute_breach_risk(scope)
        return result

    def _compute_breach_risk(self, scope: Scope) -> tuple[float, TrendForecast] | None:
        track = self.tracks[scope]
        trend = track.trend
        if trend is None or trend.count < self.scorer.min_forecast_samples:
            return None
        restarted = math.isfinite(track.trend_from)
        if restarted and track.last_time - track.trend_from < self.scorer.trend_memory_seconds / 2:
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
        weight = 1.0 - self.scorer.urgency_discount * min(at / self.horizon, 1.0)
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
        season = self.scorer.season(self.rollout.ref, self.spec.name)
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

    def recurrence(self) -> _Evidence | None:
        """A count of events (restarts) that recurs in the new pods (at least `recurring_events` within the window,
        on the last two samples) while old pods stay below one, and goes on: either the restarts keep new pods
        from being ready (a crash loop: the kubelet backs off, the pod never serves), or the count still rises on
        each of the last two samples. New pods that restarted a few times and serve again (counter resets, an
        OOM kill or two) are worth an alert, not an action: one or two events are no loop."""
        if not self.counts_events or not self.new_fresh or self.spec.direction is not Direction.ABOVE:
            return None
        values = list(self.tracks[Scope.NEW].values)
        needed = min(float(self.scorer.recurring_events), self.spec.threshold)
        if len(values) < 2 or min(values[-2:]) < needed:
            return None
        name, thr = self.spec.name, self.spec.threshold
        old = self.old_ref()
        rollout = self.rollout
        unready = rollout.updated_replicas - rollout.ready_new_replicas
        rising = len(values) >= 3 and values[-3] < values[-2] < values[-1]
        head = (f"{name}: new pods {values[-1]:.4g} (>= {needed:g} events on the last 2 samples: recurring) while "
                f"old pods {_fmt(old)}; threshold {thr:g}: a count is not extrapolated")
        if old is not None and old >= 1.0:
            return _Evidence(SHARED_CAUSE_RISK_CAP, None, f"{head}, but old pods restart too: not this release")
        if old is None:
            shared = self.shared_note()
            if shared:
                return _Evidence(SHARED_CAUSE_RISK_CAP, None, f"{head}; {shared}")
        if unready <= 0 and not rising:
            return _Evidence(SETTLING_RISK_CAP, None, f"{head}; every new pod is ready and the count no longer "
                             f"rises: restarts the pods recovered from, no loop")
        why = (f"{unready} of {rollout.updated_replicas} new pod(s) not ready: a crash loop" if unready > 0 else
               f"still rising ({values[-3]:.4g}, {values[-2]:.4g}, {values[-1]:.4g})")
        return _Evidence(NEW_POD_BREACH_RISK, None, f"{head}; {why}, it goes on (P(breach within "
                         f"{format_duration(self.horizon)}) = {NEW_POD_BREACH_RISK:.2f})")

    def forecasts(self) -> list[_Evidence | None]:
        found: list[_Evidence | None] = []
        if self.counts_events:
            return found
        old = self._breach_risk(Scope.OLD) if self.old_fresh else None
        old_level = self.old_ref()
        for scope, label, fresh in ((Scope.DEPLOYMENT, "deployment", self.dep_fresh and not self.mixing),
                                    (Scope.NEW, "new pods", self.new_fresh and self.enough_new_pods())):
            if not fresh:
                continue
            result = self._breach_risk(scope)
            if result is None:
                continue
            risk, fc = result
            if risk < 0.05:
                continue
            name, thr = self.spec.name, self.limit(scope)
            if thr != self.spec.threshold:
                label += " (per pod)"
            reach = self.reach(scope)
            within = format_duration(reach)
            when = f"reaches it in {format_duration(fc.seconds)}" if fc.seconds is not None else "stays short of it"
            shape = ("keeping its pace" if fc.damping_seconds is None else
                     f"levelling off with time constant {format_duration(fc.damping_seconds)} at the flattest the "
                     f"data allows")
            reason = (f"{name}: {label} {fc.level:.4g} trending {fc.slope * 60:+.3g}/min ({shape}), forecast "
                      f"{fc.forecast:.4g} ± {1.96 * fc.sd:.2g} in {within}; threshold {thr:g}: mean {when}, "
                      f"P(breach within {within}) = {fc.probability:.2f}{self.season_note(scope)}")
            if reach < self.horizon:
                reason += (f"; a trend of {format_duration(reach / EXTRAPOLATION_FACTOR)} is extrapolated "
                           f"{EXTRAPOLATION_FACTOR:g} times as far, not the whole {format_duration(self.horizon)}")
            if scope is Scope.NEW:
                reason += "; the deployment follows as the rollout completes"
            if risk > SETTLING_RISK_CAP and self.settles(scope):
                risk = SETTLING_RISK_CAP
                reason += (f"; but it falls back below within {format_duration(self.scorer.settle_seconds)}: "
                           f"warming up or settling")
            if risk > SHARED_CAUSE_RISK_CAP:
                shared = self.shared_note()
                alone = self.season_alone_probability(scope)
                if not shared and alone is not None and alone >= self.scorer.shared_fraction * fc.probability:
                    shared = (f"the trained season alone takes it there (P = {alone:.2f} with no trend of its "
                              f"own): the time of day's, not this release's")
                if old is not None and old[1].probability >= 0.2 and (
                        old[1].probability >= self.scorer.shared_fraction * fc.probability):
                    shared = f"old pods forecast to breach too (P = {old[1].probability:.2f}): not this release"
                elif old_level is not None and self.over(old_level, Scope.OLD):
                    shared = f"old pods breach too ({old_level:.4g}): not this release"
                if shared:
                    risk = SHARED_CAUSE_RISK_CAP
                    reason += f"; {shared}"
            breach_at = self.now + fc.seconds if fc.seconds is not None else None
            found.append(_Evidence(risk, breach_at, reason))
        return found

    def quiet_forecast(self) -> str:
        within = format_duration(self.horizon)
        if self.mixing and not self.counts_events:
            return (f"no breach predicted within {within} (the deployment's own trend waits until every pod is new; "
                    f"neither the new pods' trend nor their comparison with old pods predicts one)")
        result = self._breach_risk(Scope.DEPLOYMENT) if self.dep_fresh and not self.counts_events else None
        if result is None:
            return f"no breach predicted within {within} (" + (
                "a count is not extrapolated)" if self.counts_events else "forecast not ready)")
        fc = result[1]
        within = format_duration(self.reach(Scope.DEPLOYMENT))
        return (f"forecast {fc.forecast:.4g} ± {1.96 * fc.sd:.2g}, P(breach within {within}) = "
                f"{fc.probability:.2f}; no breach predicted")


def _forecast_band(view: _View) -> ForecastBand | None:
    """The forecast the status page draws: the Deployment's local trend once every pod is new, the new pods' while
    pods mix (their trend is what the Deployment follows). None for counts, per-pod limits or too few samples."""
    if view.counts_events:
        return None
    scope = Scope.NEW if view.mixing else Scope.DEPLOYMENT
    fresh = view.new_fresh if view.mixing else view.dep_fresh
    if not fresh or view.limit(scope) != view.spec.threshold:
        return None
    result = view._breach_risk(scope)
    if result is None:
        return None
    fc = result[1]
    return ForecastBand(scope=scope, start=view.now, level=fc.level, until=view.now + view.reach(scope),
                        mean=fc.forecast, low=fc.forecast - 1.96 * fc.sd, high=fc.forecast + 1.96 * fc.sd)
