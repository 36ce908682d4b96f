"""`predictor train`: refit the forecast scorer's models on Prometheus history; promote them only if they validate
no worse than the model the daemon would use now. Called by the CLI and the retraining CronJob.

1. **Collect** what the live loop would have seen, tick by tick at `policy.interval`: the rollout state of every
   targeted Deployment from kube-state-metrics (`KubeStateMetricsRolloutSource.list_rollouts(t)`), the rollouts in
   scope (`policy.in_scope`), and per metric the same per-scope observations `PrometheusMetricSource.fetch` gives.
   Rollout state costs one `list_rollouts` (about 15 small instant queries) per tick, so it is read every
   `policy.bake` (coarse ticks) and tick by tick only around coarse ticks with a rollout in scope: a Deployment is
   in scope for at least `bake` (rolling out, then baking), so no rollout falls between two coarse ticks.
   Metrics cost one range query per metric (two with a denominator) per stretch of ticks with rollouts in scope.
   The range query runs the metric's own template, rendered for every rollout of the stretch (the union of their
   pod-template-hashes), at the tick times; at each tick `split.split_observations` then keeps only the pods of
   the rollouts in scope then, exactly as the live instant query does. This is identical because a range query
   evaluates the expression at each step as an instant query at that time would, and the templates give one
   series per pod (`by (namespace, pod)`), so matching more pods adds series but changes none.
2. **Leave out** every stretch a Deployment was in scope during which we (or a person) acted or the daemon saw
   risk, found in what Prometheus has: (a) the daemon's own `predictor_rollout_risk{namespace,deployment,metric}`
   gauge at or above `policy.risk_threshold` (if the daemon is scraped), (b) `ALERTS{alertname=
   "PredictedSLOBreach"}` (if a Prometheus rule of that name exists), (c) kube-state-metrics: the Deployment
   paused, or its current ReplicaSet a rollback to an older template (needs the revision annotation exported),
   (d) `kube_deployment_annotations{annotation_predictor_io_acted_revision}` naming a revision of the stretch (if
   kube-state-metrics exports that annotation). What is left are healthy rollouts.
3. **Split** the healthy rollouts by start time: the earlier ones holding about `1 - validation_fraction` of the
   in-scope ticks train, the later ones validate.
4. **Fit** per metric a `DampedTrendForecaster` on the Deployment-scope series of the training rollouts (each
   rollout's series centred on its own median, so that the junctions between rollouts are no level shifts), and
   one per Deployment and metric where that Deployment alone has `min_deployment_samples`; and a
   `RolloutIsolationForest` (with its calibrator) on the feature vectors the scorer computes at each training tick.
   Where the window covers `season_min_cycles` days, also per Deployment and metric a `SeasonalProfile` (Holt-Winters
   ETS(A,Ad,A) on 15-minute bins) of the Deployment's whole history, every pod and revision (one range query per
   metric at `season_step_seconds`), kept only where the season lowers the AIC.
5. **Validate** the candidate and the current model (the newest usable artifact in `out_dir`, else the untrained
   forecast scorer) on the same validation rollouts, replaying the engine's tick (history, `ForecastScorer.assess`,
   `policy.decide`): false alarms, false actions, forest alarms, and the error of 1..horizon-step forecasts.
6. **Promote** (write a new version with `save_artifact`) unless the candidate is worse (see `PROMOTION_RULE`).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from predictor import policy as policy_rules
from predictor.config import Config, MetricSpec, format_time
from predictor.detectors.base import Scorer
from predictor.detectors.forecast import DampedTrendForecaster
from predictor.detectors.forest import RolloutIsolationForest, feature_names, history_features
from predictor.detectors.rollout_scorer import DEFAULT_LIVE_PARAMS, ForecastScorer
from predictor.detectors.season import SeasonalProfile
from predictor.domain import Action, Assessment, DeploymentRef, Observation, RolloutState, Scope
from predictor.features import MetricHistory
from predictor.models import SEASON_PREFIX, save_artifact
from predictor.ports import RolloutSource
from predictor.promql import QueryForm
from predictor.scoring import MODEL_NAME, newest_usable_artifact
from predictor.sources.prometheus import MAX_BATCH_QUERY_CHARS, RangeSeries, batches, parse_le
from predictor.sources.split import (
    SCOPE_LABEL,
    SCOPES,
    PodSample,
    ScopeValue,
    aggregate_value,
    batch_query,
    deployment_values,
    needed_scopes,
    render_history_query,
    render_history_scope_query,
    render_query,
    render_scope_query,
    scope_key,
    scope_observations,
    split_observations,
    unknown_observations,
)

log = logging.getLogger(__name__)

FALSE_ALARM_TOLERANCE = 0.01
"""Share of healthy validation ticks by which the candidate's false-alarm rate may exceed the current model's."""
FORECAST_ERROR_TOLERANCE = 0.10
"""Relative amount by which the candidate's forecast error may exceed the current model's."""
PROMOTION_RULE = (
    "The candidate is worse, and not promoted, when on the same healthy validation rollouts (1) it would have "
    "acted (policy.decide with the configured hysteresis) on more of them than the current model, or (2) its "
    f"false-alarm rate (share of scored ticks at risk >= policy.risk_threshold) exceeds the current model's by "
    f"more than {FALSE_ALARM_TOLERANCE:g}, or (3) its forecast error (mean over metrics of the mean absolute error "
    f"of the 1..horizon-step forecasts of the Deployment's value, divided by |threshold|) exceeds the current "
    f"model's by more than {FORECAST_ERROR_TOLERANCE:.0%}. The current model is the newest usable artifact in the "
    "output directory, else the untrained forecast scorer (what the daemon would run without the candidate)."
)
ACTED_REVISION_LABEL = "annotation_predictor_io_acted_revision"
"""kube-state-metrics' label for the `predictor.io/acted-revision` annotation (with
`--metric-annotations-allowlist=deployments=[predictor.io/acted-revision]`)."""
SIGMA_FLOOR_FRACTION = 0.01
"""As `ForecastScorer.sigma_floor_fraction`: the forecast error's interval coverage uses the same sigma floor."""
MIN_FORECAST_SAMPLES = 6
"""As `ForecastScorer.min_forecast_samples`: forecasts are scored from this many samples of a revision on."""


class TrainingError(ValueError):
    """Bad arguments, or too little usable data in the window; the message names what is missing."""


class TrainingSourceError(RuntimeError):
    """Prometheus (metrics or kube-state-metrics) could not be read; the message names the query and the cause."""


class RangeSource(Protocol):
    def fetch_range(self, query: str, start: float, end: float, step: float) -> list[RangeSeries]:
        """(labels, times, values) per series of a range query. Raises on failure."""
        ...


@dataclass(frozen=True)
class TrainSettings:
    """How much data training needs and how it fits; the defaults suit a week of history at a 15 s tick."""

    min_samples: int = 240
    """Known Deployment-level samples each metric needs in the training rollouts (240 = 1 h at 15 s)."""
    min_deployment_samples: int = 240
    """Samples one Deployment needs for a forecaster of its own; with fewer it uses the metric's."""
    validation_fraction: float = 0.25
    """Share of the healthy in-scope ticks, the latest rollouts, held back for validation."""
    max_fit_samples: int = 20_000
    """The forecasters are fitted on at most this many of the latest samples (statsmodels' fit grows with it)."""
    n_estimators: int = 100
    forest_alarm_rate: float = 0.01
    """Share of healthy vectors the isolation forest's verdict may flag (its calibrated threshold)."""
    random_state: int | None = None
    """The forest's seed; None derives it from the window start, so retraining the same window gives the same
    model."""
    season_period_seconds: float = 86400.0
    """The season of the seasonal profiles (a day); fitted only where the window covers `season_min_cycles`."""
    season_min_cycles: int = 2
    season_bin_seconds: float = 900.0
    """Resolution of a seasonal profile (15 minutes)."""
    season_step_seconds: float = 300.0
    """Step of the history range queries the profiles are fitted on (3 samples per bin)."""

    def check(self) -> None:
        if self.min_samples < 10 or self.min_deployment_samples < 10:
            raise TrainingError(f"min_samples and min_deployment_samples: expected >= 10, got {self.min_samples} and "
                                f"{self.min_deployment_samples}")
        if not 0.05 <= self.validation_fraction <= 0.5:
            raise TrainingError(f"validation_fraction: expected 0.05..0.5, got {self.validation_fraction!r}")
        if not 0 < self.season_step_seconds <= self.season_bin_seconds:
            raise TrainingError(f"season_step_seconds: expected 0 < step <= season_bin_seconds "
                                f"{self.season_bin_seconds:g}, got {self.season_step_seconds!r}")
        try:
            self.season_template().check_params()
        except ValueError as exc:
            raise TrainingError(f"season settings: {exc}") from exc

    def season_template(self) -> SeasonalProfile:
        return SeasonalProfile(period_seconds=self.season_period_seconds, bin_seconds=self.season_bin_seconds,
                               min_cycles=self.season_min_cycles)


@dataclass(frozen=True)
class TrainResult:
    """What `train` did. `artifact` is the new version's directory when promoted, else None."""

    promoted: bool
    reason: str
    artifact: Path | None
    figures: Mapping[str, Any]
    """The candidate's validation figures."""
    current_figures: Mapping[str, Any]
    """The current model's figures on the same validation rollouts."""
    current_model: str
    """'untrained' or the current artifact's path."""
    data_summary: Mapping[str, Any]
    model_objects: Mapping[str, Any] = field(repr=False)
    """The candidate's forecasters (by key) and forest ("forest"), as saved or as they would have been."""

    def summary(self) -> str:
        """A few lines for the CLI and the job's log."""
        data = self.data_summary
        window, training, validation = data["window"], data["training"], data["validation"]
        left_out = data["left_out"]
        lines = [
            f"training window {window['start']} – {window['end']}: {data['rollouts_in_scope']} rollout stretch(es) in "
            f"scope, {len(left_out)} left out",
        ]
        lines += [f"  left out {item['deployment']} {item['start']} – {item['end']}: {'; '.join(item['reasons'])}"
                  for item in left_out]
        samples = training["samples"]
        lines.append(f"trained on {training['rollouts']} rollout(s) {training['start']} – {training['end']}, "
                     f"{min(samples.values()) if samples else 0}..{max(samples.values()) if samples else 0} samples "
                     f"per metric; validated on {validation['rollouts']} rollout(s) {validation['start']} – "
                     f"{validation['end']}")
        seasons, no_season = data.get("seasons", {}), data.get("no_season", {})
        why = "; ".join(f"{key}: {reason}" for key, reason in sorted(no_season.items())[:3])
        more = " ..." if len(no_season) > 3 else ""
        lines.append(f"seasonal profiles: {', '.join(sorted(seasons)) or 'none'}"
                     + (f" (none for {len(no_season)}: {why}{more})" if no_season else ""))
        lines.append(f"candidate: {describe_figures(self.figures)}")
        lines.append(f"current ({self.current_model}): {describe_figures(self.current_figures)}")
        if self.promoted:
            lines.append(f"promoted: {self.artifact}")
        else:
            lines.append(f"not promoted: {self.reason}")
        return "\n".join(lines)


def describe_figures(figures: Mapping[str, Any]) -> str:
    forest = figures.get("forest_alarm_rate")
    error = figures.get("forecast_error")
    return (f"false alarms {figures['false_alarm_ticks']}/{figures['ticks']} ticks "
            f"({figures['false_alarm_rate']:.1%}), false actions {figures['false_actions']}/{figures['rollouts']} "
            f"rollouts, forecast error {'n/a' if error is None else f'{error:.4f}'}, forest alarms "
            f"{'n/a' if forest is None else f'{forest:.1%}'}")


# --- collection ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stretch:
    """Consecutive ticks during which one Deployment was in scope (one rollout, its bake, maybe its rollback)."""

    ref: DeploymentRef
    ticks: tuple[int, ...]
    """Indices into `Collected.times`."""


@dataclass
class Collected:
    """What the live loop would have seen over the window: in-scope rollout states and observations per tick."""

    times: list[float]
    states: dict[int, dict[DeploymentRef, RolloutState]]
    """Per scanned tick with anything in scope: the in-scope rollouts."""
    observations: dict[int, dict[str, list[Observation]]]
    """Per such tick and metric: the observations of the in-scope rollouts."""
    stretches: list[Stretch]
    rollout_reads: int
    range_queries: int

    def state(self, ref: DeploymentRef, tick: int) -> RolloutState:
        return self.states[tick][ref]

    def deployment_values(self, stretch: Stretch, metric: str) -> list[tuple[int, int, float | None]]:
        """(tick, revision, Deployment-scope value or None) over a stretch."""
        out = []
        for tick in stretch.ticks:
            value = None
            for obs in self.observations[tick][metric]:
                if obs.ref == stretch.ref and obs.scope is Scope.DEPLOYMENT:
                    value = obs.value if obs.known else None
                    break
            out.append((tick, self.states[tick][stretch.ref].revision, value))
        return out


def collect(
    config: Config, *, start: float, end: float, source: RangeSource, rollouts: RolloutSource
) -> Collected:
    """Rollout states and observations at every tick of [start, end] (aligned to the tick) with a rollout in scope."""
    step = config.policy.interval_seconds
    first = math.ceil(start / step) * step
    count = math.floor((end - first) / step + 1e-9) + 1
    times = [first + i * step for i in range(max(count, 0))]
    states, reads = _scan(rollouts, config, times)
    stretches = _stretches(states)
    observations: dict[int, dict[str, list[Observation]]] = {i: {} for i in states}
    queries = 0
    for period in _runs(sorted(states)):
        union = _distinct_states(s for i in period for s in states[i].values())
        t0, t1 = times[period[0]], times[period[-1]]
        for spec in config.metrics:
            if spec.form is QueryForm.AGGREGATE:
                queries += _collect_aggregate(source, spec, union, period, times, step, states, observations)
                continue
            numerator = _range_samples(source, spec, spec.query, union, t0, t1, step, "query")
            denominator = None
            queries += 1
            if spec.denominator is not None:
                denominator = _range_samples(source, spec, spec.denominator, union, t0, t1, step, "denominator")
                queries += 1
            for i in period:
                observations[i][spec.name] = _split_at(spec, list(states[i].values()), times[i], numerator,
                                                       denominator)
    log.info("collected %d tick(s) with rollouts in scope (%d rollout reads, %d range queries), %d stretch(es)",
             len(states), reads, queries, len(stretches))
    return Collected(times, states, observations, stretches, reads, queries)


def _scan(
    rollouts: RolloutSource, config: Config, times: Sequence[float]
) -> tuple[dict[int, dict[DeploymentRef, RolloutState]], int]:
    """In-scope rollout states at the ticks that have any: coarse ticks every `bake`, then every tick between the
    coarse neighbours of a coarse tick with rollouts in scope, trimmed to those rollouts' start and bake end."""
    policy = config.policy
    step = policy.interval_seconds
    n = len(times)
    if n == 0:
        return {}, 0
    every = max(1, int(policy.bake_seconds // step))
    coarse = list(range(0, n, every))
    if coarse[-1] != n - 1:
        coarse.append(n - 1)
    reads = 0

    def read(i: int) -> dict[DeploymentRef, RolloutState]:
        nonlocal reads
        reads += 1
        try:
            listed = rollouts.list_rollouts(times[i])
        except Exception as exc:
            raise TrainingSourceError(f"rollout state at {format_time(times[i])}: {exc}") from exc
        return {s.ref: s for s in listed if policy_rules.in_scope(s, times[i], policy)}

    def index_after(t: float) -> int:
        return min(n - 1, max(0, math.ceil((t - times[0]) / step - 1e-9)))

    def index_before(t: float) -> int:
        return min(n - 1, max(0, math.floor((t - times[0]) / step + 1e-9)))

    found = {i: read(i) for i in coarse}
    wanted: set[int] = set()
    for k, i in enumerate(coarse):
        in_scope = found[i]
        if not in_scope:
            continue
        low = coarse[k - 1] + 1 if k else i
        high = coarse[k + 1] if k + 1 < len(coarse) else i
        low = max(low, min(i, index_after(min(s.started_at for s in in_scope.values()))))
        ends = [s.completed_at + policy.bake_seconds if s.completed_at is not None else math.inf
                for s in in_scope.values()]
        if max(ends) < math.inf:
            high = min(high, max(i, index_before(max(ends))))
        wanted.update(range(low, high + 1))
    for i in sorted(wanted - set(coarse)):
        found[i] = read(i)
    return {i: s for i, s in sorted(found.items()) if s}, reads


def _runs(indices: Sequence[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for i in indices:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def _stretches(states: Mapping[int, Mapping[DeploymentRef, RolloutState]]) -> list[Stretch]:
    by_ref: dict[DeploymentRef, list[int]] = defaultdict(list)
    for i in sorted(states):
        for ref in states[i]:
            by_ref[ref].append(i)
    found = [Stretch(ref, tuple(run)) for ref, ticks in by_ref.items() for run in _runs(ticks)]
    return sorted(found, key=lambda s: (s.ticks[0], s.ref))


def _distinct_states(states: Iterable[RolloutState]) -> list[RolloutState]:
    seen: dict[tuple[DeploymentRef, str | None, tuple[str, ...]], RolloutState] = {}
    for state in states:
        seen.setdefault((state.ref, state.new_hash, state.old_hashes), state)
    return list(seen.values())


_TickSamples = dict[int, tuple[list[PodSample], int]]
"""Per tick time in ms: the per-pod samples and how many series lacked namespace/pod labels."""


def _range_samples(
    source: RangeSource, spec: MetricSpec, template: str, union: Sequence[RolloutState], start: float,
    end: float, step: float, which: str,
) -> _TickSamples:
    """One range query of `template` rendered for `union`, cut into per-tick pod samples as
    `PrometheusMetricSource` cuts an instant result (`le` parsed for a quantile's query)."""
    out: _TickSamples = defaultdict(lambda: ([], 0))
    _add_range(source, spec, render_query(template, union), start, end, step, which, out)
    return dict(out)


def _add_range(
    source: RangeSource, spec: MetricSpec, promql: str, start: float, end: float, step: float, which: str,
    out: defaultdict[int, tuple[list[PodSample], int]],
) -> None:
    """Run one range query and add its per-pod samples to `out` by time (ms), counting series without labels."""
    try:
        matrix = source.fetch_range(promql, start, end, step)
    except Exception as exc:
        raise TrainingSourceError(f"metric {spec.name}: {which} range query {format_time(start)} – "
                                  f"{format_time(end)} failed: {exc} (query: {promql})") from exc
    for labels, times, values in matrix:
        namespace, pod = labels.get("namespace"), labels.get("pod")
        le = parse_le(labels.get("le")) if spec.quantile is not None and which == "query" else None
        for t, value in zip(times.tolist(), values.tolist(), strict=True):
            samples, unlabelled = out[_ms(t)]
            if not namespace or not pod:
                out[_ms(t)] = (samples, unlabelled + 1)
            else:
                samples.append(PodSample(namespace, pod, float(value), le))


_PartSeries = dict[str, dict[int, list[float]]]
"""Per part of a batched aggregate range query (a scope of one rollout state): its values by time (ms)."""


def _part_key(state: RolloutState, scope: Scope) -> str:
    """A scope of one rollout state: a stretch may hold several states (revisions) of one Deployment."""
    return f"{scope_key(state.ref, scope)}/{state.new_hash}/{','.join(state.old_hashes)}"


def _aggregate_range(
    source: RangeSource, spec: MetricSpec, parts: Sequence[tuple[str, str]], start: float, end: float, step: float,
    which: str,
) -> tuple[_PartSeries, int]:
    """Aggregate-form parts in range queries batched as `PrometheusMetricSource` batches instant ones; the values
    by part and time, and how many queries that took."""
    out: _PartSeries = defaultdict(lambda: defaultdict(list))
    groups = batches(parts, MAX_BATCH_QUERY_CHARS)
    for batch in groups:
        promql = batch[0][1] if len(batch) == 1 else batch_query(batch)
        try:
            matrix = source.fetch_range(promql, start, end, step)
        except Exception as exc:
            raise TrainingSourceError(f"metric {spec.name}: {which} range query {format_time(start)} – "
                                      f"{format_time(end)} failed: {exc} (query: {promql[:300]})") from exc
        for labels, times, values in matrix:
            key = batch[0][0] if len(batch) == 1 else labels.get(SCOPE_LABEL, "")
            for t, value in zip(times.tolist(), values.tolist(), strict=True):
                out[key][_ms(t)].append(float(value))
    return out, len(groups)


def _collect_aggregate(
    source: RangeSource, spec: MetricSpec, union: Sequence[RolloutState], period: Sequence[int],
    times: Sequence[float], step: float, states: Mapping[int, Mapping[DeploymentRef, RolloutState]],
    observations: dict[int, dict[str, list[Observation]]],
) -> int:
    """The observations of an aggregate-form metric over one stretch of ticks, as the live source gives them at
    each tick: each scope of each rollout state in range queries; returns how many queries it took."""
    t0, t1 = times[period[0]], times[period[-1]]
    tables: list[_PartSeries] = []
    queries = 0
    for which, template in (("query", spec.query), ("denominator", spec.denominator)):
        if template is None:
            continue
        parts = [(_part_key(s, scope), render_scope_query(template, s, scope)) for s in union
                 for scope in needed_scopes(s)]
        table, count = _aggregate_range(source, spec, parts, t0, t1, step, which)
        tables.append(table)
        queries += count
    for i in period:
        watched = list(states[i].values())
        ms = _ms(times[i])

        def at_tick(table: _PartSeries, watched: list[RolloutState] = watched, ms: int = ms) -> dict[str, list[float]]:
            return {scope_key(s.ref, scope): table.get(_part_key(s, scope), {}).get(ms, [])
                    for s in watched for scope in SCOPES}

        observations[i][spec.name] = scope_observations(
            spec, watched, at_tick(tables[0]), times[i],
            denominator=at_tick(tables[1]) if spec.denominator is not None else None)
    return queries


def _split_at(
    spec: MetricSpec, watched: list[RolloutState], at: float, numerator: _TickSamples,
    denominator: _TickSamples | None,
) -> list[Observation]:
    found: list[list[PodSample]] = []
    for which, table in (("query", numerator), ("denominator", denominator)):
        if table is None:
            continue
        samples, unlabelled = table.get(_ms(at), ([], 0))
        if unlabelled and not samples:
            return unknown_observations(watched, spec.name, at, f"{spec.name}: {which} returned {unlabelled} series "
                                        "without 'namespace' and 'pod' labels (aggregate with `by (namespace, pod)`)")
        found.append(samples)
    return split_observations(spec, watched, found[0], at, denominator=found[1] if denominator is not None else None)


def _ms(t: float) -> int:
    """Times as integer milliseconds, Prometheus's resolution, so range results and ticks match exactly."""
    return round(t * 1000)


# --- leaving out periods of past actions ------------------------------------------------------------------------


@dataclass(frozen=True)
class ActionMark:
    """One sign that a Deployment was at risk or acted on: its source, when, which revision (when known), what."""

    kind: str
    time: float
    revision: int | None
    text: str


def find_action_marks(
    config: Config, source: RangeSource, start: float, end: float
) -> tuple[dict[tuple[str, str], list[ActionMark]], dict[str, str]]:
    """Marks per (namespace, deployment) from the daemon's risk gauge, PredictedSLOBreach ALERTS and the
    acted-revision annotation, and what each source showed (for the data summary)."""
    step = config.policy.interval_seconds
    threshold = config.policy.risk_threshold
    namespaces = {t.namespace for t in config.targets}
    queries = {
        "predictor_rollout_risk": (
            f"max by (namespace, exported_namespace, deployment, metric) (predictor_rollout_risk) >= {threshold!r}"),
        "ALERTS{alertname=\"PredictedSLOBreach\"}": (
            'max by (namespace, exported_namespace, deployment) '
            '(ALERTS{alertname="PredictedSLOBreach", alertstate="firing"})'),
        "kube_deployment_annotations acted-revision": (
            f'max by (namespace, deployment, {ACTED_REVISION_LABEL}) '
            f'(kube_deployment_annotations{{{ACTED_REVISION_LABEL}!=""}})'),
    }
    marks: dict[tuple[str, str], list[ActionMark]] = defaultdict(list)
    status: dict[str, str] = {}
    for name, promql in queries.items():
        try:
            matrix = source.fetch_range(promql, start, end, step)
        except Exception as exc:
            raise TrainingSourceError(f"cannot tell which rollouts were acted on: {name} range query failed: {exc} "
                                      f"(query: {promql})") from exc
        points = 0
        for labels, times, values in matrix:
            # scraped without honor_labels, the Deployment's namespace label becomes exported_namespace
            namespace = labels.get("exported_namespace") or labels.get("namespace", "")
            deployment = labels.get("deployment", "")
            if namespace not in namespaces or not deployment or times.size == 0:
                continue
            points += int(times.size)
            key = (namespace, deployment)
            if name == "predictor_rollout_risk":
                metric = labels.get("metric", "?")
                marks[key].extend(ActionMark(name, t, None, f"predictor_rollout_risk{{metric=\"{metric}\"}} {v:.2f} >= "
                                        f"{threshold:g} at {format_time(t)}")
                                  for t, v in zip(times.tolist(), values.tolist(), strict=True))
            elif name.startswith("ALERTS"):
                marks[key].extend(ActionMark(name, t, None, f"PredictedSLOBreach firing at {format_time(t)}")
                                  for t in times.tolist())
            else:
                try:
                    revision = int(labels.get(ACTED_REVISION_LABEL, ""))
                except ValueError:
                    continue
                marks[key].append(ActionMark(name, float(times[0]), revision, f"predictor.io/acted-revision={revision} "
                                        f"(kube-state-metrics, from {format_time(float(times[0]))})"))
        status[name] = f"{points} point(s) on targeted Deployments" if points else "no series on targeted Deployments"
    return dict(marks), status


def leave_out_reasons(collected: Collected, stretch: Stretch, marks: Sequence[ActionMark], margin: float) -> list[str]:
    """Why a stretch is not healthy data (empty: it is). One reason per kind, its first occurrence."""
    times = collected.times
    start, end = times[stretch.ticks[0]], times[stretch.ticks[-1]]
    revisions = {collected.state(stretch.ref, i).revision for i in stretch.ticks}
    reasons: dict[str, str] = {}
    for i in stretch.ticks:
        state = collected.state(stretch.ref, i)
        if state.paused and "paused" not in reasons:
            reasons["paused"] = (f"paused at {format_time(times[i])} (revision {state.revision}; by the predictor or "
                                 f"a person)")
        if state.is_rollback and "rollback" not in reasons:
            reasons["rollback"] = (f"revision {state.revision} at {format_time(times[i])} is a rollback to an older "
                                   f"template (the previous revision was undone)")
    for mark in sorted(marks, key=lambda m: m.time):
        if mark.kind in reasons:
            continue
        if mark.revision is not None:
            if mark.revision in revisions:
                reasons[mark.kind] = mark.text
        elif start - margin <= mark.time <= end + margin:
            reasons[mark.kind] = mark.text
    return list(reasons.values())


# --- fitting --------------------------------------------------------------------------------------------------------


def fit_forecasters(
    collected: Collected, stretches: Sequence[Stretch], specs: Sequence[MetricSpec], step: float,
    settings: TrainSettings,
) -> tuple[dict[str, DampedTrendForecaster], dict[str, int]]:
    """Per metric (key `<metric>`) and per Deployment with enough samples (key `<namespace>/<name>:<metric>`):
    a forecaster fitted on the Deployment-level series of `stretches`, each centred on its median."""
    forecasters: dict[str, DampedTrendForecaster] = {}
    samples: dict[str, int] = {}
    for spec in specs:
        pooled: list[np.ndarray] = []
        per_ref: dict[DeploymentRef, list[np.ndarray]] = defaultdict(list)
        for stretch in stretches:
            known = np.array([v for _, _, v in collected.deployment_values(stretch, spec.name) if v is not None])
            if known.size == 0:
                continue
            centred = known - float(np.median(known))
            pooled.append(centred)
            per_ref[stretch.ref].append(centred)
        samples[spec.name] = int(sum(p.size for p in pooled))
        if samples[spec.name] < settings.min_samples:
            continue
        forecasters[spec.name] = _fit_one(pooled, step, settings)
        for ref, parts in sorted(per_ref.items()):
            if sum(p.size for p in parts) >= settings.min_deployment_samples:
                forecasters[f"{ref}:{spec.name}"] = _fit_one(parts, step, settings)
    return forecasters, samples


def _fit_one(parts: Sequence[np.ndarray], step: float, settings: TrainSettings) -> DampedTrendForecaster:
    series = np.concatenate(parts)[-settings.max_fit_samples:]
    return DampedTrendForecaster(step_seconds=step).fit(series)


def fit_forest(
    collected: Collected, stretches: Sequence[Stretch], config: Config, settings: TrainSettings, random_state: int,
) -> tuple[RolloutIsolationForest, int]:
    """The isolation forest on the feature vectors the scorer would compute at each training tick (one per rollout
    in scope), in time order; the latest quarter calibrates it."""
    metrics = [spec.name for spec in config.metrics]
    forest = RolloutIsolationForest(metrics, n_estimators=settings.n_estimators, random_state=random_state,
                                    alarm_rate=settings.forest_alarm_rate)
    rows: list[np.ndarray] = []

    def collect_rows(history: MetricHistory, watched: Sequence[RolloutState], now: float) -> None:
        keys = [(s.ref, s.revision) for s in watched]
        rows.extend(history_features(history, keys, metrics, now, forest.rate_window_seconds))

    _walk(collected, stretches, config, collect_rows)
    if not rows:
        raise TrainingError("no feature vectors for the isolation forest")
    try:
        forest.fit(np.vstack(rows))
    except ValueError as exc:
        raise TrainingError(f"isolation forest: {exc}") from exc
    return forest, len(rows)


MAX_RANGE_POINTS = 10_000
"""Points per series a history range query asks for at most (Prometheus refuses more than 11,000)."""


def fit_seasons(
    config: Config, source: RangeSource, refs: Sequence[DeploymentRef], start: float, end: float,
    settings: TrainSettings,
) -> tuple[dict[str, SeasonalProfile], dict[str, str]]:
    """Per Deployment and metric (key `<namespace>/<name>:<metric>`): a `SeasonalProfile` fitted on the
    Deployment's whole history over [start, end] (every pod, every revision, a range query at
    `season_step_seconds`), kept where the window covers the season and the season lowers the AIC. Returns the
    profiles and, per key (or `*` for all), why none was kept."""
    need = settings.season_min_cycles * settings.season_period_seconds
    if end - start < need or not refs:
        why = (f"the window covers {(end - start) / 3600:.1f} h, a {settings.season_period_seconds / 3600:g} h "
               f"season needs {need / 3600:g} h" if refs else "no Deployment to fit")
        return {}, {"*": why}
    step = settings.season_step_seconds
    profiles: dict[str, SeasonalProfile] = {}
    skipped: dict[str, str] = {}
    for spec in config.metrics:
        if spec.form is QueryForm.AGGREGATE:
            series = _aggregate_history(source, spec, refs, start, end, step)
        else:
            series = _per_pod_history(source, spec, refs, start, end, step)
        for ref, (times, values) in sorted(series.items()):
            key = f"{ref}:{spec.name}"
            try:
                profile = settings.season_template().fit(times, values) if times else None
            except ValueError as exc:
                skipped[key] = str(exc)
                continue
            if profile is None:
                skipped[key] = "no samples"
            elif not profile.significant_:
                skipped[key] = (f"no season: AIC {profile.aic_seasonal_:.1f} with it, {profile.aic_plain_:.1f} "
                                f"without")
            else:
                profiles[key] = profile
    log.info("seasonal profiles: %d kept, %d not (%s)", len(profiles), len(skipped),
             "; ".join(f"{k}: {v}" for k, v in sorted(skipped.items())[:5]) or "none")
    return profiles, skipped


_History = dict[DeploymentRef, tuple[list[float], list[float | None]]]


def _per_pod_history(
    source: RangeSource, spec: MetricSpec, refs: Sequence[DeploymentRef], start: float, end: float, step: float
) -> _History:
    numerator = _history_samples(source, spec, spec.query, refs, start, end, step, "query")
    denominator = (_history_samples(source, spec, spec.denominator, refs, start, end, step, "denominator")
                   if spec.denominator is not None else {})
    series: _History = {ref: ([], []) for ref in refs}
    for at in sorted(set(numerator) | set(denominator)):
        values = deployment_values(spec, refs, numerator.get(at, []), denominator.get(at, []))
        for ref, value in values.items():
            series[ref][0].append(at / 1000.0)
            series[ref][1].append(value.value)
    return series


def _aggregate_history(
    source: RangeSource, spec: MetricSpec, refs: Sequence[DeploymentRef], start: float, end: float, step: float
) -> _History:
    """Each Deployment's value over its whole history: an aggregate-form query over all its pods, per Deployment,
    batched, in range queries of at most MAX_RANGE_POINTS points."""
    tables: list[_PartSeries] = []
    for which, template in (("query", spec.query), ("denominator", spec.denominator)):
        if template is None:
            continue
        parts = [(str(ref), render_history_scope_query(template, ref)) for ref in refs]
        merged: _PartSeries = defaultdict(dict)
        t0 = math.ceil(start / step) * step
        while t0 <= end:
            t1 = min(end, t0 + step * (MAX_RANGE_POINTS - 1))
            table, _ = _aggregate_range(source, spec, parts, t0, t1, step, which)
            for key, by_time in table.items():
                merged[key].update(by_time)
            t0 = t1 + step
        tables.append(merged)
    series: _History = {}
    for ref in refs:
        numerator = tables[0].get(str(ref), {})
        denominator = tables[1].get(str(ref), {}) if len(tables) > 1 else {}
        stamps = sorted(set(numerator) | set(denominator))
        values: list[ScopeValue] = [aggregate_value(spec, numerator.get(at), denominator.get(at)) for at in stamps]
        series[ref] = ([at / 1000.0 for at in stamps], [v.value for v in values])
    return series


def _history_samples(
    source: RangeSource, spec: MetricSpec, template: str, refs: Sequence[DeploymentRef], start: float, end: float,
    step: float, which: str,
) -> dict[int, list[PodSample]]:
    """Per time (ms): the per-pod samples of `template` over every pod of `refs`, in range queries of at most
    MAX_RANGE_POINTS points."""
    promql = render_history_query(template, refs)
    out: defaultdict[int, tuple[list[PodSample], int]] = defaultdict(lambda: ([], 0))
    t0 = math.ceil(start / step) * step
    while t0 <= end:
        t1 = min(end, t0 + step * (MAX_RANGE_POINTS - 1))
        _add_range(source, spec, promql, t0, t1, step, which, out)
        t0 = t1 + step
    return {at: samples for at, (samples, _) in out.items()}


def _walk(
    collected: Collected, stretches: Sequence[Stretch], config: Config,
    visit: Callable[[MetricHistory, list[RolloutState], float], None],
) -> None:
    """The engine's history over the ticks of `stretches`: per tick, forget replaced revisions, add the in-scope
    rollouts' observations, then call `visit(history, watched, now)`."""
    members = {(s.ref, i) for s in stretches for i in s.ticks}
    history = MetricHistory(config.policy.lookback_seconds)
    for i in sorted({i for _, i in members}):
        now = collected.times[i]
        watched = [state for ref, state in collected.states[i].items() if (ref, i) in members]
        current = {s.ref: s.revision for s in watched}
        for ref, revision in history.refs():
            if current.get(ref) != revision:
                history.forget(ref, keep_revision=current.get(ref))
        for spec in config.metrics:
            by_ref: dict[DeploymentRef, list[Observation]] = defaultdict(list)
            for obs in collected.observations[i][spec.name]:
                if obs.ref in current:
                    by_ref[obs.ref].append(obs)
            for ref, items in by_ref.items():
                history.add(current[ref], items)
        visit(history, watched, now)


# --- validation -----------------------------------------------------------------------------------------------------


def validate(
    collected: Collected, stretches: Sequence[Stretch], config: Config, scorer: Scorer,
    templates: Mapping[str, DampedTrendForecaster], forest: RolloutIsolationForest | None,
    seasons: Mapping[str, SeasonalProfile] | None = None,
) -> dict[str, Any]:
    """Replay the engine's tick with `scorer` over the healthy validation `stretches` (history, `assess` per
    metric, `policy.decide`), and score the forecasts of `templates` (the model's forecasters; the scorer's
    default parameters where a metric has none). Figures: see `PROMOTION_RULE`."""
    policy = config.policy
    memory: dict[DeploymentRef, policy_rules.RolloutMemory] = {}
    counts = {"ticks": 0, "false_alarm_ticks": 0, "scorer_errors": 0}
    rollouts: set[tuple[DeploymentRef, int]] = set()
    acted: set[tuple[DeploymentRef, int]] = set()
    forest_rows: list[np.ndarray] = []

    def tick(history: MetricHistory, watched: list[RolloutState], now: float) -> None:
        for ref in [r for r in memory if r not in {s.ref for s in watched}]:
            del memory[ref]
        for state in watched:
            assessments = [_assess(scorer, state, spec, history, now, policy.horizon_seconds, counts)
                           for spec in config.metrics]
            previous = memory.get(state.ref)
            memory[state.ref], decision = policy_rules.decide(previous, state, assessments, now, policy)
            known = [a for a in assessments if not a.unknown]
            rollouts.add((state.ref, state.revision))
            if not known:
                continue
            counts["ticks"] += 1
            if max(a.risk for a in known) >= policy.risk_threshold:
                counts["false_alarm_ticks"] += 1
            if decision.action is not Action.NONE:
                acted.add((state.ref, state.revision))
        if forest is not None and watched:
            keys = [(s.ref, s.revision) for s in watched]
            forest_rows.append(history_features(history, keys, list(forest.metrics), now, forest.rate_window_seconds))

    _walk(collected, stretches, config, tick)
    forest_rate = None
    if forest is not None and forest_rows:
        scores = forest.score(np.vstack(forest_rows))  # one batch: scikit-learn's overhead is per call
        scored = scores[np.isfinite(scores)]
        forest_rate = float(np.mean(scored >= forest.threshold_)) if scored.size else None
    forecast = forecast_errors(collected, stretches, config, templates, seasons)
    relative = [f["relative_error"] for f in forecast.values() if f["relative_error"] is not None]
    return {
        "ticks": counts["ticks"],
        "false_alarm_ticks": counts["false_alarm_ticks"],
        "false_alarm_rate": counts["false_alarm_ticks"] / counts["ticks"] if counts["ticks"] else 0.0,
        "rollouts": len(rollouts),
        "false_actions": len(acted),
        "false_action_rate": len(acted) / len(rollouts) if rollouts else 0.0,
        "forest_alarm_rate": forest_rate,
        "forecast_error": float(np.mean(relative)) if relative else None,
        "forecast": forecast,
        "scorer_errors": counts["scorer_errors"],
    }


def _assess(
    scorer: Scorer, state: RolloutState, spec: MetricSpec, history: MetricHistory, now: float, horizon: float,
    counts: dict[str, int],
) -> Assessment:
    """As the engine: a scorer that fails gives an unknown assessment."""
    try:
        return scorer.assess(state, spec, history, now, horizon)
    except Exception as exc:
        counts["scorer_errors"] += 1
        return Assessment(metric=spec.name, risk=0.0, value=None, threshold=spec.threshold,
                          direction=spec.direction, unknown=True, reason=f"{spec.name}: scorer failed: {exc}")


def forecast_errors(
    collected: Collected, stretches: Sequence[Stretch], config: Config, templates: Mapping[str, DampedTrendForecaster],
    seasons: Mapping[str, SeasonalProfile] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per metric: mean absolute error of the 1..horizon-step forecasts of the Deployment-level value, from every
    sample of a revision once its forecaster (spawned as the scorer spawns it) has `MIN_FORECAST_SAMPLES`, against
    the known values that followed; also relative to |threshold| and the coverage of the 95 % interval. Where
    `seasons` has the Deployment's profile, the forecaster sees the values without the season and the season is
    added back to its forecasts, as the scorer does."""
    step = config.policy.interval_seconds
    steps = max(1, math.ceil(config.policy.horizon_seconds / step))
    default = DampedTrendForecaster.from_params(alpha=DEFAULT_LIVE_PARAMS["alpha"], beta=DEFAULT_LIVE_PARAMS["beta"],
                                                phi=DEFAULT_LIVE_PARAMS["phi"], step_seconds=step)
    out: dict[str, dict[str, Any]] = {}
    for spec in config.metrics:
        total, count, covered = 0.0, 0, 0
        for stretch in stretches:
            template = templates.get(f"{stretch.ref}:{spec.name}") or templates.get(spec.name) or default
            season = (seasons or {}).get(f"{stretch.ref}:{spec.name}")
            rows = collected.deployment_values(stretch, spec.name)
            for revision in dict.fromkeys(r for _, r, _ in rows):
                part = [(i, v) for i, r, v in rows if r == revision]
                dense = np.array([np.nan if v is None else v for _, v in part])
                forecaster = template.spawn(keep_sigma=True)
                forecaster.min_sigma = max(forecaster.min_sigma, SIGMA_FLOOR_FRACTION * abs(spec.threshold), 1e-12)
                for k, (i, value) in enumerate(part):
                    if value is None:
                        continue
                    now = collected.times[i]
                    forecaster.update(now, value - (season.offset(now) if season is not None else 0.0))
                    future = dense[k + 1:k + 1 + steps]
                    if forecaster.n_updates_ < MIN_FORECAST_SAMPLES or future.size == 0:
                        continue
                    mean, sd = forecaster.forecast(future.size)
                    if season is not None:
                        mean = mean + season.offsets(now + step * np.arange(1, future.size + 1))
                    known = np.isfinite(future)
                    errors = np.abs(mean[known] - future[known])
                    total += float(errors.sum())
                    count += int(known.sum())
                    covered += int(np.sum(errors <= 1.96 * sd[known]))
        mae = total / count if count else None
        scale = abs(spec.threshold)
        out[spec.name] = {
            "pairs": count,
            "mae": mae,
            "relative_error": None if mae is None else (mae / scale if scale > 0 else mae),
            "coverage_95": covered / count if count else None,
        }
    return out


def worse_than(candidate: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Why the candidate is worse than the current model on the same validation rollouts (empty: it is not)."""
    problems = []
    if candidate["false_actions"] > current["false_actions"]:
        problems.append(f"it would have acted on {candidate['false_actions']} healthy validation rollout(s), the "
                        f"current model on {current['false_actions']}")
    if candidate["false_alarm_rate"] > current["false_alarm_rate"] + FALSE_ALARM_TOLERANCE:
        problems.append(f"false-alarm rate {candidate['false_alarm_rate']:.2%} > {current['false_alarm_rate']:.2%} "
                        f"+ {FALSE_ALARM_TOLERANCE:.0%} of the current model")
    mine, theirs = candidate["forecast_error"], current["forecast_error"]
    if mine is not None and theirs is not None and mine > theirs * (1.0 + FORECAST_ERROR_TOLERANCE) + 1e-12:
        problems.append(f"forecast error {mine:.4f} > {1.0 + FORECAST_ERROR_TOLERANCE:g} x {theirs:.4f} of the "
                        f"current model")
    return problems


# --- the job --------------------------------------------------------------------------------------------------------


def train(
    config: Config,
    *,
    start: float,
    end: float,
    out_dir: Path,
    source: RangeSource | None = None,
    rollouts: RolloutSource | None = None,
    now: float | None = None,
    settings: TrainSettings | None = None,
) -> TrainResult:
    """Train on [start, end], validate, and write `<out_dir>/rollout-risk/<version>/` unless the candidate is worse
    than the current model. `source` (range queries) and `rollouts` default to Prometheus and kube-state-metrics
    as configured; `now` (default: the wall clock) stamps the version and caps `end`.

    Raises TrainingError (bad window, too little data; the message names what is missing) and
    TrainingSourceError (Prometheus could not be read)."""
    settings = settings or TrainSettings()
    settings.check()
    created = time.time() if now is None else now
    end = min(end, created)
    if not (math.isfinite(start) and math.isfinite(end)) or start >= end:
        raise TrainingError(f"training window: expected --from before --to (and before now), got "
                            f"{format_time(start)} – {format_time(end)}")
    if not config.targets or not config.metrics:
        raise TrainingError("config: expected at least one target and one metric")
    window = f"training window {format_time(start)} – {format_time(end)}"
    if source is None or rollouts is None:
        from predictor.rollouts.replay import KubeStateMetricsRolloutSource
        from predictor.sources.prometheus import PrometheusMetricSource

        source = source or PrometheusMetricSource(config.prometheus)
        rollouts = rollouts or KubeStateMetricsRolloutSource(config.prometheus, config.targets,
                                                             resolution_seconds=config.policy.interval_seconds)
    step = config.policy.interval_seconds

    collected = collect(config, start=start, end=end, source=source, rollouts=rollouts)
    if not collected.stretches:
        raise TrainingError(f"{window}: no targeted Deployment was rolling out or baking (kube-state-metrics shows "
                            f"none in scope); need rollouts to learn from")
    marks, sources = find_action_marks(config, source, start, end)
    margin = max(60.0, 2.0 * step)
    left_out: list[tuple[Stretch, list[str]]] = []
    healthy: list[Stretch] = []
    for stretch in collected.stretches:
        reasons = leave_out_reasons(collected, stretch, marks.get((stretch.ref.namespace, stretch.ref.name), []),
                                    margin)
        if reasons:
            left_out.append((stretch, reasons))
        else:
            healthy.append(stretch)
    for stretch, reasons in left_out:
        log.info("leaving out %s %s – %s: %s", stretch.ref, format_time(collected.times[stretch.ticks[0]]),
                 format_time(collected.times[stretch.ticks[-1]]), "; ".join(reasons))
    training, validation = _split(healthy, settings.validation_fraction, window, len(left_out))

    forecasters, samples = fit_forecasters(collected, training, config.metrics, step, settings)
    short = [f"{samples[spec.name]} samples of {spec.name}" for spec in config.metrics
             if samples[spec.name] < settings.min_samples]
    if short:
        raise TrainingError(f"{window}: {', '.join(short)} in {len(training)} healthy training rollout(s), need >= "
                            f"{settings.min_samples} of each (widen --from/--to, or check the metric's query)")
    random_state = settings.random_state if settings.random_state is not None else int(start) % 2**32
    try:
        forest, rows = fit_forest(collected, training, config, settings, random_state)
    except TrainingError as exc:
        raise TrainingError(f"{window}: {exc}") from exc
    seasons, no_season = fit_seasons(config, source, sorted({s.ref for s in collected.stretches}), start, end,
                                     settings)
    objects: dict[str, Any] = {**forecasters, **{SEASON_PREFIX + k: v for k, v in seasons.items()}, "forest": forest}
    candidate_scorer = ForecastScorer(step_seconds=step, forecasters=forecasters, seasons=seasons, forest=forest)
    figures = validate(collected, validation, config, candidate_scorer, forecasters, forest, seasons)

    current = newest_usable_artifact(out_dir, config, log=log)
    if current is None:
        current_model = "untrained"
        current_figures = validate(collected, validation, config, ForecastScorer(step_seconds=step), {}, None)
    else:
        artifact, current_scorer = current
        current_model = str(artifact.path)
        current_figures = validate(collected, validation, config, current_scorer, artifact.forecasters(),
                                   artifact.forest(), artifact.seasons())
    problems = worse_than(figures, current_figures)

    summary = _data_summary(collected, start, end, training, validation, left_out, samples, rows, sources,
                            forecasters, seasons, no_season)
    if problems:
        reason = f"the candidate validates worse than the current model ({current_model}): {'; '.join(problems)}"
        log.info("not promoting: %s", reason)
        return TrainResult(False, reason, None, figures, current_figures, current_model, summary, objects)
    metadata = {
        "training_window": {"start": start, "end": end},
        "feature_names": feature_names([spec.name for spec in config.metrics]),
        "thresholds": {
            "risk_threshold": config.policy.risk_threshold,
            "forest_verdict": forest.threshold_,
            "forest_alarm_rate": forest.alarm_rate,
            "metrics": {spec.name: {"threshold": spec.threshold, "direction": str(spec.direction)}
                        for spec in config.metrics},
        },
        "validation": {
            "candidate": figures,
            "current": {"model": current_model, **current_figures},
            "promotion_rule": PROMOTION_RULE,
            "decision": f"promoted: not worse than the current model ({current_model})",
            "forest_calibration": forest.validation_,
        },
        "config": _config_summary(config, settings, random_state),
        "data_summary": summary,
    }
    path = save_artifact(out_dir, MODEL_NAME, objects, _plain(metadata), created=created)
    reason = f"not worse than the current model ({current_model})"
    log.info("promoted %s: %s", path, reason)
    return TrainResult(True, reason, path, figures, current_figures, current_model, summary, objects)


def _split(
    healthy: Sequence[Stretch], validation_fraction: float, window: str, left_out: int
) -> tuple[list[Stretch], list[Stretch]]:
    """The earlier rollouts holding about 1 - validation_fraction of the healthy ticks train, the rest validate."""
    if len(healthy) < 2:
        raise TrainingError(f"{window}: {len(healthy)} healthy rollout(s) ({left_out} left out for past actions), "
                            f"need >= 2: the earlier to fit on, a later one to validate on")
    ordered = sorted(healthy, key=lambda s: (s.ticks[0], s.ref))
    shares = np.cumsum([len(s.ticks) for s in ordered]) / sum(len(s.ticks) for s in ordered)
    # the cut whose training share is nearest 1 - validation_fraction (ties: more training), one rollout at least
    # on each side
    cut = min(range(1, len(ordered)), key=lambda k: (abs(shares[k - 1] - (1.0 - validation_fraction)), -k))
    return ordered[:cut], ordered[cut:]


def _span(collected: Collected, stretches: Sequence[Stretch]) -> dict[str, Any]:
    if not stretches:
        return {"rollouts": 0, "ticks": 0, "start": None, "end": None, "deployments": []}
    return {
        "rollouts": len(stretches),
        "ticks": sum(len(s.ticks) for s in stretches),
        "start": format_time(min(collected.times[s.ticks[0]] for s in stretches)),
        "end": format_time(max(collected.times[s.ticks[-1]] for s in stretches)),
        "deployments": sorted({str(s.ref) for s in stretches}),
    }


def _data_summary(
    collected: Collected, start: float, end: float, training: Sequence[Stretch], validation: Sequence[Stretch],
    left_out: Sequence[tuple[Stretch, list[str]]], samples: Mapping[str, int], rows: int,
    sources: Mapping[str, str], forecasters: Mapping[str, DampedTrendForecaster],
    seasons: Mapping[str, SeasonalProfile], no_season: Mapping[str, str],
) -> dict[str, Any]:
    return {
        "window": {"start": format_time(start), "end": format_time(end), "ticks": len(collected.times)},
        "rollouts_in_scope": len(collected.stretches),
        "ticks_in_scope": len(collected.states),
        "rollout_reads": collected.rollout_reads,
        "range_queries": collected.range_queries,
        "training": {**_span(collected, training), "samples": dict(samples), "forest_rows": rows},
        "validation": _span(collected, validation),
        "left_out": [
            {"deployment": str(stretch.ref), "start": format_time(collected.times[stretch.ticks[0]]),
             "end": format_time(collected.times[stretch.ticks[-1]]),
             "revisions": sorted({collected.state(stretch.ref, i).revision for i in stretch.ticks}),
             "reasons": reasons}
            for stretch, reasons in left_out
        ],
        "action_sources": {**sources, "kube-state-metrics paused/rollback": "read at every in-scope tick"},
        "forecasters": {
            key: {"alpha": f.alpha_, "beta": f.beta_, "phi": f.phi_, "sigma": f.sigma_, "n_train": f.n_train_,
                  "converged": f.converged_}
            for key, f in forecasters.items()
        },
        "seasons": {
            key: {"amplitude": p.amplitude, "aic_seasonal": p.aic_seasonal_, "aic_plain": p.aic_plain_,
                  "bins": p.n_bins_, "period_seconds": p.period_seconds}
            for key, p in seasons.items()
        },
        "no_season": dict(no_season),
    }


def _config_summary(config: Config, settings: TrainSettings, random_state: int) -> dict[str, Any]:
    policy = config.policy
    return {
        "step_seconds": policy.interval_seconds,
        "horizon_seconds": policy.horizon_seconds,
        "lookback_seconds": policy.lookback_seconds,
        "bake_seconds": policy.bake_seconds,
        "consecutive_ticks": policy.consecutive_ticks,
        "risk_threshold": policy.risk_threshold,
        "targets": [{"namespace": t.namespace, "selector": t.selector, "names": list(t.names)}
                    for t in config.targets],
        "metrics": [
            {"name": spec.name, "threshold": spec.threshold, "direction": str(spec.direction),
             "query_sha256": hashlib.sha256(f"{spec.query}\n{spec.denominator or ''}".encode()).hexdigest()}
            for spec in config.metrics
        ],
        "settings": {**asdict(settings), "random_state": random_state},
    }


def _plain(value: Any) -> Any:
    """JSON-safe copy: numpy scalars to floats, non-finite floats to None."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
