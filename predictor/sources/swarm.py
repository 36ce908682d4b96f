"""The MetricSource of Docker Swarm services: the Prometheus queries of a tick, per task instead of per pod.

The daemon builds one `SwarmMetricSource` beside the `SwarmRolloutSource` when the targets are Swarm services.
Each tick it renders a metric's template once for all rollouts (`{service}`: the service names, `{tasks}`: the
task names `<service>.<slot>.<task id>` of their new and old tasks, both as escaped regexes), runs it at the
tick's time, reads each series' task name from the label its target names (`task_label`), assigns it to the
service's new or old tasks by the task's template, and combines per scope by the rules the Kubernetes split
uses (`sources/split.combine_pods`). A spec with `limit` (the built-in pack's memory and CPU) divides each
task's value by the service spec's `Resources.Limits` first.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from predictor.config import MetricSpec, PrometheusConfig
from predictor.domain import DeploymentRef, Observation, RolloutState, Scope
from predictor.sources.prometheus import PrometheusClient, QueryError, parse_le
from predictor.sources.split import (
    NEVER_MATCHES,
    SCOPES,
    PodSample,
    ScopeValue,
    combine_pods,
    escape_promql_string,
    escape_regex,
    unknown_observations,
)

_LOG = logging.getLogger(__name__)

NANO = 1e9


def _alternation(values: Iterable[str]) -> str:
    unique = sorted(set(values))
    return "|".join(escape_regex(v) for v in unique) if unique else NEVER_MATCHES


def render_swarm_query(template: str, rollouts: Sequence[RolloutState]) -> str:
    """Replace exactly `{service}` and `{tasks}` by escaped regexes of the rollouts' services and tasks."""
    values = {
        "service": _alternation(r.ref.name for r in rollouts),
        "tasks": _alternation(p.name for r in rollouts for p in (*r.new_pods, *r.old_pods)),
    }
    for key, value in values.items():
        template = template.replace("{" + key + "}", escape_promql_string(value))
    return template


def limit_of(limits: Mapping[str, Any], resource: str) -> float | None:
    """The service's limit of `resource` in the unit of its usage series: bytes, or cores (NanoCPUs / 1e9)."""
    if resource == "memory":
        value = limits.get("MemoryBytes")
        return float(value) if value else None
    value = limits.get("NanoCPUs")
    return float(value) / NANO if value else None


class SwarmMetricSource:
    """`MetricSource` for Swarm rollouts over Prometheus. `task_label(ref)` and `limits(ref)` come from the
    `SwarmRolloutSource` that listed the rollouts."""

    def __init__(self, config: PrometheusConfig, *, task_label: Callable[[DeploymentRef], str | None],
                 limits: Callable[[DeploymentRef], Mapping[str, Any]]) -> None:
        self.client = PrometheusClient(config)
        self._task_label = task_label
        self._limits = limits

    def fetch(self, spec: MetricSpec, rollouts: Sequence[RolloutState], at: float) -> list[Observation]:
        """Observations of `spec` at `at` for all rollouts (deployment, new, old each). Never raises."""
        if not rollouts:
            return []
        try:
            numerator = self._samples(spec, spec.query, rollouts, at, "query")
            if isinstance(numerator, str):
                return unknown_observations(rollouts, spec.name, at, numerator)
            denominator: dict[tuple[DeploymentRef, Scope], list[PodSample]] = {}
            if spec.denominator is not None:
                fetched = self._samples(spec, spec.denominator, rollouts, at, "denominator")
                if isinstance(fetched, str):
                    return unknown_observations(rollouts, spec.name, at, fetched)
                denominator = fetched
            return [self._observation(spec, rollout, scope, numerator, denominator, at)
                    for rollout in rollouts for scope in SCOPES]
        except Exception as exc:  # the port promises never to raise
            _LOG.exception("metric %s: unexpected error", spec.name)
            return unknown_observations(rollouts, spec.name, at, f"{spec.name}: internal error: {exc!r}")

    def _observation(self, spec: MetricSpec, rollout: RolloutState, scope: Scope,
                     numerator: Mapping[tuple[DeploymentRef, Scope], list[PodSample]],
                     denominator: Mapping[tuple[DeploymentRef, Scope], list[PodSample]], at: float) -> Observation:
        key = (rollout.ref, scope)
        members = denominator.get(key, []) if spec.denominator is not None else numerator.get(key, [])
        if spec.limit is not None and limit_of(self._limits(rollout.ref), spec.limit) is None:
            result = ScopeValue(None, 0, f"no {spec.limit} limit in the service spec (Resources.Limits)")
        elif not members:
            what = "denominator's result" if spec.denominator is not None else "query result"
            words = {Scope.DEPLOYMENT: "", Scope.NEW: "new ", Scope.OLD: "old "}[scope]
            result = ScopeValue(None, 0, f"no {words}tasks in the {what}")
        else:
            result = combine_pods(spec, numerator.get(key, []), members)
        return Observation(ref=rollout.ref, metric=spec.name, scope=scope, time=at, value=result.value,
                           error=f"{spec.name}: {result.error}" if result.error else None,
                           pods=result.pods if result.value is not None else 0, traffic=result.traffic)

    def _samples(self, spec: MetricSpec, template: str, rollouts: Sequence[RolloutState], at: float,
                 which: str) -> dict[tuple[DeploymentRef, Scope], list[PodSample]] | str:
        """Per-task samples grouped by (rollout, scope), DEPLOYMENT holding both; or the error of a failed query."""
        members: dict[str, tuple[RolloutState, Scope]] = {}
        for rollout in rollouts:
            for pod in rollout.old_pods:
                members[pod.name] = (rollout, Scope.OLD)
            for pod in rollout.new_pods:
                members[pod.name] = (rollout, Scope.NEW)
        labels_used = sorted({label for r in rollouts if (label := self._task_label(r.ref))})
        promql = render_swarm_query(template, rollouts)
        try:
            series = self.client.query(promql, at)
        except QueryError as exc:
            _LOG.warning("metric %s: %s failed: %s", spec.name, which, exc)
            return f"{spec.name}: {which} failed: {exc}"
        groups: dict[tuple[DeploymentRef, Scope], list[PodSample]] = defaultdict(list)
        for labels, value in series:
            task = next((labels[label] for label in labels_used if label in labels), None)
            member = members.get(task) if task else None
            if member is None:
                continue
            rollout, scope = member
            if spec.limit is not None and which == "query":
                limit = limit_of(self._limits(rollout.ref), spec.limit)
                if limit is None:
                    continue
                value = value / limit
            le = parse_le(labels.get("le")) if spec.quantile is not None and which == "query" else None
            sample = PodSample(rollout.ref.namespace, task or "", value, le)
            groups[(rollout.ref, scope)].append(sample)
            groups[(rollout.ref, Scope.DEPLOYMENT)].append(sample)
        if series and not groups:
            _LOG.debug("metric %s: %s: no series carries a task of the rollouts in %s", spec.name, which,
                       ", ".join(labels_used))
        return groups

    def is_online(self) -> bool:
        return self.client.is_ready()
