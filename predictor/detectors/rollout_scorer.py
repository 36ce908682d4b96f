"""Rollout-aware forecast scoring: the trained drop-in for `ThresholdTrendScorer` behind the Scorer interface.

The engine calls `assess` once per rollout, metric and tick. Per (Deployment, revision, metric, scope) the scorer
keeps a damped-trend forecaster and a few recent samples, and feeds them only the samples it has not seen yet, so
a tick costs the same whatever the age of the rollout. Each assessment reads the tracks once (`Reading`, in
`detectors/evidence_reading`) and asks the named pieces of evidence in `detectors/evidence` (a breach now, new pods
against old pods, recurring events, pod states, local trends; and a trained isolation forest's verdict): the
strongest wins.

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
from functools import lru_cache
from typing import Any

from predictor.config import MetricSpec, parse_duration
from predictor.detectors.evidence import (
    Evidence,
    gather,
    quiet_forecast,
    still_building,
    strongest,
)
from predictor.detectors.evidence_reading import (
    Reading,
    Track,
    fmt,
)
from predictor.detectors.forecast import DampedTrendForecaster, LocalTrend, _median_small
from predictor.detectors.forest import RolloutIsolationForest
from predictor.detectors.season import SeasonalProfile
from predictor.detectors.trend import SHARED_CAUSE_RISK_CAP
from predictor.domain import Assessment, DeploymentRef, ForecastBand, RolloutState, Scope
from predictor.features import MetricHistory, Series

DEFAULT_LIVE_PARAMS: Mapping[str, float] = {"alpha": 0.3, "beta": 0.05, "phi": 0.96}
"""Smoothing parameters of a series without a trained forecaster: quick to follow a regression within a few
samples (alpha), a trend that builds over about ten samples (beta) and levels off within a few minutes (phi)."""
NEGLIGIBLE_PROBABILITY = 1e-6
"""Below this bound of the breach probability a forecast is not computed step by step."""
RANGE_WINDOW = re.compile(r"\[((?:\d+(?:\.\d+)?(?:ms|[smhdwy]))+)(?::[^\]]*)?\]")
"""A PromQL range selector (`[1m]`, `[5m:15s]`): how far back each sample of the query looks."""

TrackKey = tuple[DeploymentRef, int, str, Scope]


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
    - `ready_allowance_seconds`: how long new pods may stay unready while old pods are ready, where the rollout
      source cannot read it from the pod template (`RolloutState.ready_allowance_seconds`; default 300 s).
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
        ready_allowance_seconds: float = 300.0,
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
        self.ready_allowance_seconds = ready_allowance_seconds
        self._validate()
        self._default = DampedTrendForecaster.from_params(
            alpha=self.default_params["alpha"], beta=self.default_params["beta"], phi=self.default_params["phi"],
            step_seconds=step_seconds,
        )
        self._tracks: dict[TrackKey, Track] = {}
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
        if not (self.ready_allowance_seconds > 0 and math.isfinite(self.ready_allowance_seconds)):
            raise ValueError(f"ready_allowance_seconds: expected a positive number of seconds, got "
                             f"{self.ready_allowance_seconds!r}")
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
        reading, dep, new = self._read(rollout, spec, history, now, horizon_seconds)
        base: dict[str, Any] = {"metric": spec.name, "threshold": spec.threshold, "direction": spec.direction}
        if not reading.dep_fresh and not reading.new_fresh:
            cause = dep.last_error or new.last_error or "no samples yet"
            return Assessment(**base, risk=0.0, value=None, unknown=True, reason=f"{spec.name}: no data ({cause})")
        value = dep.last if reading.dep_fresh else new.last
        evidence, notes = gather(reading)
        if self.forest is not None:
            evidence, forest_note = self._with_forest(evidence, rollout, spec, history, now)
            if forest_note:
                notes.append(forest_note)
        note = f" ({'; '.join(notes)})" if notes else ""
        best = strongest(evidence)
        base["building"] = still_building(reading)
        if best is None:
            return Assessment(
                **base, risk=0.0, value=value,
                reason=f"{spec.name}: deployment {fmt(dep.last)}, new {fmt(new.last)}, "
                f"old {fmt(reading.old_ref())}, threshold {spec.threshold:g}; {quiet_forecast(reading)}{note}",
                forecast=forecast_band(reading),
            )
        return Assessment(**base, risk=round(best.risk, 4), value=value, predicted_breach=best.breach_at,
                          reason=best.reason + note, decisive=best.decisive, forecast=forecast_band(reading))

    def read(
        self, rollout: RolloutState, spec: MetricSpec, history: MetricHistory, now: float, horizon_seconds: float
    ) -> Reading:
        """Feed the tracks the samples they have not seen and read them: what `assess` hands every piece of
        evidence (tests read single pieces through it)."""
        return self._read(rollout, spec, history, now, horizon_seconds)[0]

    def _read(
        self, rollout: RolloutState, spec: MetricSpec, history: MetricHistory, now: float, horizon_seconds: float
    ) -> tuple[Reading, Series, Series]:
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
        reading = Reading(spec, rollout, now, horizon_seconds, self, tracks, dep_fresh, new_fresh, old_fresh, mixing,
                          history.traffic_per_pod(ref, revision), history.traffic_at_start(ref, revision),
                          season=self.season(ref, spec.name),
                          worse_before=self._attributed.get((ref, revision, spec.name), False))
        effect = reading.release_effect
        if effect is not None and new_fresh and old_fresh:
            self._attributed[(ref, revision, spec.name)] = effect[1]
        return reading, dep, new

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
    ) -> Track:
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
            track = Track(forecaster, times=deque(maxlen=keep), values=deque(maxlen=keep), pods=deque(maxlen=keep),
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
        self, evidence: list[Evidence], rollout: RolloutState, spec: MetricSpec, history: MetricHistory,
        now: float,
    ) -> tuple[list[Evidence], str]:
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
                    combined[i] = Evidence(boosted, e.breach_at, f"{e.reason}; corroborated by the isolation "
                                           f"forest ({score:.2f})", decisive=e.decisive)
        combined.append(Evidence(self.forest_risk_cap, None,
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


BAND_POINTS = 12
"""Points of the forecast's path the status page draws (its mean as the model moves it; the band's width grows with
the mean's way to the horizon, exact there)."""


def forecast_band(reading: Reading) -> ForecastBand | None:
    """The forecast the status page draws: the Deployment's local trend once every pod is new, the new pods' while
    pods mix (their trend is what the Deployment follows). None for counts, per-pod limits or too few samples."""
    if reading.counts_events:
        return None
    scope = Scope.NEW if reading.mixing else Scope.DEPLOYMENT
    fresh = reading.new_fresh if reading.mixing else reading.dep_fresh
    if not fresh or reading.limit(scope) != reading.spec.threshold:
        return None
    result = reading.trend_risk(scope)
    if result is None:
        return None
    fc = result[1]
    lag, reach = reading.lag(scope), reading.reach(scope)
    start, until, half = reading.now - lag, reading.now + reach, 1.96 * fc.sd
    end_shape = fc.path_shape(reach + lag)
    path = []
    for step in range(1, BAND_POINTS + 1):
        ahead = (reach + lag) * step / BAND_POINTS
        share = fc.path_shape(ahead) / end_shape if end_shape > 0 else step / BAND_POINTS
        mean = fc.level + share * (fc.forecast - fc.level)
        path.append((start + ahead, mean, mean - share * half, mean + share * half))
    return ForecastBand(scope=scope, start=start, level=fc.level, until=until, mean=fc.forecast,
                        low=fc.forecast - half, high=fc.forecast + half, path=tuple(path))
