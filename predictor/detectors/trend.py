"""Threshold-and-trend scoring: the untrained baseline behind the Scorer interface.

Three kinds of evidence, the strongest wins:
1. the Deployment already breaches the threshold;
2. the new pods breach it while the old pods do not, so the Deployment will once every pod is new;
3. a significant linear trend of the new pods reaches it within the horizon. Not the Deployment's own trend:
   while pods are replaced its value moves with the mix of new and old pods, which is no trend of either.
Evidence that old pods share (a traffic surge, a slow dependency) is capped below acting risk: the release
is not its cause.
"""

from __future__ import annotations

from dataclasses import dataclass

from predictor.config import MetricSpec, format_duration
from predictor.domain import Assessment, Direction, RolloutState, Scope
from predictor.features import MetricHistory, Series, Trend, fit_trend, mix_breach_time

SHARED_CAUSE_RISK_CAP = 0.5
"""Risk given to a breach that old pods show too: worth an alert, not an action on this rollout."""


def _fresh(series: Series) -> bool:
    return not series.empty and series.trailing_unknown == 0


def _fmt(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.4g}"


def risk_for_time_to_breach(seconds: float, horizon_seconds: float) -> float:
    """1.0 for a breach now, falling linearly to 0.5 at the horizon, 0 beyond it."""
    if seconds > horizon_seconds:
        return 0.0
    return 1.0 - 0.5 * max(seconds, 0.0) / horizon_seconds


@dataclass(frozen=True)
class _Evidence:
    risk: float
    breach_at: float | None
    reason: str


@dataclass(frozen=True)
class ThresholdTrendScorer:
    """Scores a metric from its recent history.

    `min_t_stat`: how significant a trend must be to count. `warmup_seconds` (default 90): samples of the new pods
    this soon after the rollout started are left out of trends, since a new pod's rates ramp up over the query's
    range window and its caches warm. `max_extrapolation` (default 3): a trend is never extended further ahead than
    this many times the span of samples it was fitted on.
    """

    min_t_stat: float = 3.0
    min_trend_points: int = 4
    warmup_seconds: float = 90.0
    max_extrapolation: float = 3.0

    def assess(
        self, rollout: RolloutState, spec: MetricSpec, history: MetricHistory, now: float, horizon_seconds: float
    ) -> Assessment:
        dep, new, old = (history.series(rollout.ref, rollout.revision, spec.name, s) for s in Scope)
        base = {"metric": spec.name, "threshold": spec.threshold, "direction": spec.direction}
        if not _fresh(dep) and not _fresh(new):
            cause = dep.last_error or new.last_error or "no samples yet"
            return Assessment(**base, risk=0.0, value=None, unknown=True, reason=f"{spec.name}: no data ({cause})")
        old_now = old.last if _fresh(old) else None
        old_breached = old_now is not None and spec.breached(old_now)
        evidence = [
            *self._level(spec, dep, new, old_now, old_breached, rollout, now),
            self._trend(spec, new, old, rollout, now, horizon_seconds),
        ]
        evidence = [e for e in evidence if e is not None]
        value = dep.last if _fresh(dep) else new.last
        if not evidence:
            return Assessment(
                **base, risk=0.0, value=value,
                reason=f"{spec.name}: deployment {_fmt(dep.last)}, new {_fmt(new.last)}, old {_fmt(old_now)}, "
                f"threshold {spec.threshold:g}; no breach predicted within {format_duration(horizon_seconds)}",
            )
        best = max(evidence, key=lambda e: e.risk)
        return Assessment(**base, risk=best.risk, value=value, predicted_breach=best.breach_at, reason=best.reason)

    def _level(
        self, spec: MetricSpec, dep: Series, new: Series, old_now: float | None, old_breached: bool,
        rollout: RolloutState, now: float,
    ) -> list[_Evidence | None]:
        op = ">=" if spec.direction is Direction.ABOVE else "<="
        found: list[_Evidence | None] = []
        if _fresh(dep) and dep.last is not None and spec.breached(dep.last):
            risk = SHARED_CAUSE_RISK_CAP if old_breached else 1.0
            shared = f"; old pods too ({_fmt(old_now)}): not caused by this release" if old_breached else ""
            found.append(_Evidence(risk, now, f"{spec.name}: deployment {_fmt(dep.last)} {op} {spec.threshold:g}"
                                   f" now{shared}"))
        if _fresh(new) and new.last is not None and spec.breached(new.last):
            if old_breached:
                found.append(_Evidence(SHARED_CAUSE_RISK_CAP, now, f"{spec.name}: new pods {_fmt(new.last)} {op} "
                                       f"{spec.threshold:g} but old pods too ({_fmt(old_now)})"))
            else:
                breach_at = now if old_now is None else mix_breach_time(spec.threshold, new.last, old_now, rollout, now)
                found.append(_Evidence(
                    0.95, breach_at,
                    f"{spec.name}: new pods {_fmt(new.last)} {op} {spec.threshold:g} while old pods "
                    f"{_fmt(old_now)}; the deployment follows as the rollout completes "
                    f"(breach in {format_duration(breach_at - now)})",
                ))
        return found

    def _trend(
        self, spec: MetricSpec, new: Series, old: Series, rollout: RolloutState, now: float, horizon: float
    ) -> _Evidence | None:
        window = min(horizon, now - (rollout.started_at + self.warmup_seconds))
        if window <= 0:
            return None
        trend = fit_trend(new, now, window, self.min_trend_points)
        seconds = self._significant_time_to(trend, spec)
        if trend is None or seconds is None or seconds > self.max_extrapolation * trend.span_seconds:
            return None
        risk = risk_for_time_to_breach(seconds, horizon)
        if risk <= 0:
            return None
        shared = ""
        old_seconds = self._significant_time_to(fit_trend(old, now, horizon, self.min_trend_points), spec)
        if old_seconds is not None and old_seconds <= 2 * horizon:
            risk = min(risk, SHARED_CAUSE_RISK_CAP)
            shared = f"; old pods trend too (breach in {format_duration(old_seconds)}): not this release"
        return _Evidence(
            risk, now + seconds,
            f"{spec.name}: new pods {trend.level:.4g} trending {trend.slope * 60:+.3g}/min "
            f"(t={trend.t_stat:.1f}, {trend.points} samples) reaches {spec.threshold:g} in "
            f"{format_duration(seconds)}{shared}",
        )

    def _significant_time_to(self, trend: Trend | None, spec: MetricSpec) -> float | None:
        if trend is None:
            return None
        toward = trend.slope > 0 if spec.direction is Direction.ABOVE else trend.slope < 0
        if not toward or abs(trend.t_stat) < self.min_t_stat:
            return None
        return trend.time_to(spec.threshold)
