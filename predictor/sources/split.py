"""Turns per-pod query results into per-scope observations; renders query templates. Pure, no I/O.

The Prometheus source (and anything else that gets one value per pod) calls `render_query` to build the one
query of a tick for all rollouts, then `split_observations` to cut the result into the deployment, new-pod and
old-pod scopes of each rollout. A pod belongs to a rollout's scope by its `pod-template-hash` label when the
rollout source knows the pod (`RolloutState.pods`); else by its name, `<deployment>-<pod-template-hash>-<suffix>`
split from the right (Deployment names may contain '-'), or the 58-character prefix Kubernetes cuts long names
to. A query in the aggregate form (`predictor.promql`) is rendered per scope instead (`render_scope_query`,
batched by `batch_query`) and its values become the same observations (`scope_observations`).
"""

from __future__ import annotations

import math
import re
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from predictor.config import MetricSpec
from predictor.domain import DeploymentRef, Observation, RolloutState, Scope

SCOPES: tuple[Scope, ...] = (Scope.DEPLOYMENT, Scope.NEW, Scope.OLD)
TINY_DENOMINATOR = 1e-9
"""A summed denominator below this is treated as zero traffic, whatever `min_denominator` says."""
AGGREGATES = ("max", "min", "mean", "sum")
NEVER_MATCHES = r"[^\x00-\x{10FFFF}]"
"""An RE2 regex that matches no string (an empty character class): the placeholder for an empty alternation."""

_TOKEN = re.compile(r"\{(namespace|deployment|pods)\}")
_RE2_META = frozenset("\\.+*?()|[]{}^$")
_POD_SUFFIX = "[a-z0-9]+"


class PodSample(NamedTuple):
    """One value of one series of a query result: a pod's value, or one bucket (`le`) of a pod's histogram."""

    namespace: str
    pod: str
    value: float
    le: float | None = None


@dataclass(frozen=True)
class _Member:
    ref: DeploymentRef
    scope: Scope


# --- query rendering -------------------------------------------------------------------------------------------


def escape_regex(text: str) -> str:
    """Escape RE2 metacharacters so `text` matches itself literally."""
    return "".join("\\" + ch if ch in _RE2_META else ch for ch in text)


def escape_promql_string(text: str) -> str:
    """Escape for the inside of a double-quoted PromQL string literal."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _alternation(values: Iterable[str]) -> str:
    unique = sorted(set(values))
    if not unique:
        return NEVER_MATCHES
    return "|".join(escape_regex(v) for v in unique)


MAX_GENERATED_PREFIX = 58
"""Kubernetes cuts a generated name's prefix (`<replicaset>-`) to 58 characters before its 5-character suffix
(`names.SimpleNameGenerator`): a pod's name then no longer spells its Deployment and hash in full."""


def name_is_cut(name: str, template_hash: str) -> bool:
    """Whether the pods of this Deployment and hash have names cut short (so their names do not give the hash)."""
    return len(f"{name}-{template_hash}-") > MAX_GENERATED_PREFIX


def _hash_patterns(name: str, hashes: Iterable[str]) -> list[str]:
    """Name patterns of the pods of `hashes`: `<name>-<hash>-<suffix>`, or the cut prefix and the 5-character
    suffix where Kubernetes cut the name."""
    patterns = []
    whole = sorted(h for h in set(hashes) if h and not name_is_cut(name, h))
    if whole:
        patterns.append(f"{escape_regex(name)}-(?:{_alternation(whole)})-{_POD_SUFFIX}")
    for prefix in sorted({f"{name}-{h}-"[:MAX_GENERATED_PREFIX] for h in hashes if h and name_is_cut(name, h)}):
        patterns.append(f"{escape_regex(prefix)}[a-z0-9]{{5}}")
    return patterns


def scope_hashes(rollout: RolloutState, scope: Scope) -> tuple[str, ...]:
    """The pod-template-hashes whose pods make up a scope of a rollout."""
    if scope is Scope.NEW:
        return (rollout.new_hash,) if rollout.new_hash else ()
    if scope is Scope.OLD:
        return tuple(h for h in rollout.old_hashes if h and h != rollout.new_hash)
    return tuple(h for h in (rollout.new_hash, *rollout.old_hashes) if h)


def scope_pods_regex(rollout: RolloutState, scope: Scope) -> str:
    """A regex (not yet string-escaped) of the pods of one scope of a rollout: the name pattern of its hashes
    (which also matches pods gone since, whose series a rate window still holds); where Kubernetes cut the names,
    the names of the pods the source knows by their `pod-template-hash` label (the cut prefix may be shared by
    two hashes), or the cut prefix when it knows none."""
    hashes = scope_hashes(rollout, scope)
    cut = [h for h in hashes if name_is_cut(rollout.ref.name, h)]
    patterns = [escape_regex(pod) for pod in sorted({p.name for p in rollout.pods if p.template_hash in cut})]
    patterns += _hash_patterns(rollout.ref.name, [h for h in hashes if h not in cut or not rollout.pods])
    if not patterns:
        return NEVER_MATCHES
    return patterns[0] if len(patterns) == 1 else f"(?:{'|'.join(patterns)})"


def pods_regex(rollouts: Sequence[RolloutState]) -> str:
    """A regex (not yet string-escaped) matching the pods of every tracked hash of every rollout: by name pattern
    `<name>-<hash>-<suffix>` (the cut prefix where Kubernetes cut the name), and by name for pods known by their
    labels."""
    hashes: dict[str, set[str]] = defaultdict(set)
    known: set[str] = set()
    for rollout in rollouts:
        tracked = scope_hashes(rollout, Scope.DEPLOYMENT)
        hashes[rollout.ref.name].update(tracked)
        known.update(p.name for p in rollout.pods
                     if p.template_hash in tracked and name_is_cut(rollout.ref.name, p.template_hash))
    whole = [
        f"{escape_regex(name)}-(?:{_alternation(h for h in tracked if not name_is_cut(name, h))})"
        for name, tracked in sorted(hashes.items()) if any(not name_is_cut(name, h) for h in tracked)
    ]
    extra = [pattern for name, tracked in sorted(hashes.items())
             for pattern in _hash_patterns(name, [h for h in tracked if name_is_cut(name, h)])]
    extra += [escape_regex(pod) for pod in sorted(known)]
    parts = [f"(?:{'|'.join(whole)})-{_POD_SUFFIX}"] if whole else []
    parts += extra
    if not parts:
        return NEVER_MATCHES
    return parts[0] if len(parts) == 1 else f"(?:{'|'.join(parts)})"


def render_query(template: str, rollouts: Sequence[RolloutState]) -> str:
    """Replace exactly `{namespace}`, `{deployment}` and `{pods}` by escaped regexes; leave every other brace alone.

    The values are meant for the inside of a double-quoted matcher (`pod=~"{pods}"`): they are escaped once as
    RE2 regexes and once as PromQL string contents. With no rollouts, every placeholder matches nothing.
    """
    return _render(template, [r.ref for r in rollouts], pods_regex(rollouts))


def render_history_query(template: str, refs: Sequence[DeploymentRef]) -> str:
    """As `render_query`, but `{pods}` matches every pod of the Deployments, whatever its revision: the
    Deployment's whole history (the retraining job's seasonal profiles)."""
    names = _alternation(ref.name for ref in refs)
    pods = f"(?:{names})-{_POD_SUFFIX}-{_POD_SUFFIX}" if refs else NEVER_MATCHES
    return _render(template, refs, pods)


def render_history_scope_query(template: str, ref: DeploymentRef) -> str:
    """An aggregate-form template over every pod of one Deployment, whatever its revision (its history)."""
    return _render(template, [ref], f"{escape_regex(ref.name)}-{_POD_SUFFIX}-{_POD_SUFFIX}")


def render_scope_query(template: str, rollout: RolloutState, scope: Scope) -> str:
    """An aggregate-form template for one scope of one rollout: `{pods}` matches that scope's pods only."""
    return _render(template, [rollout.ref], scope_pods_regex(rollout, scope))


SCOPE_LABEL = "predictor_scope"
"""The label a batched aggregate query puts on each part's series: `<namespace>/<deployment>/<scope>`."""


def scope_key(ref: DeploymentRef, scope: Scope) -> str:
    return f"{ref.namespace}/{ref.name}/{scope}"


def batch_query(parts: Sequence[tuple[str, str]]) -> str:
    """Several (scope key, rendered query) in one: each part labelled with its key, joined by `or` (the parts'
    series differ in that label, so `or` keeps them all)."""
    return " or ".join(
        f'label_replace({rendered}, "{SCOPE_LABEL}", "{escape_promql_string(key)}", "", "")' for key, rendered in parts
    )


def _render(template: str, refs: Sequence[DeploymentRef], pods: str) -> str:
    values = {
        "namespace": _alternation(ref.namespace for ref in refs),
        "deployment": _alternation(ref.name for ref in refs),
        "pods": pods,
    }
    return _TOKEN.sub(lambda m: escape_promql_string(values[m.group(1)]), template)


# --- splitting ---------------------------------------------------------------------------------------------------


def parse_pod_name(pod: str) -> tuple[str, str] | None:
    """`web-api-7d4b9c-x2x9z` -> ('web-api', '7d4b9c'); None when the name has fewer than three parts."""
    parts = pod.rsplit("-", 2)
    if len(parts) != 3 or not all(parts):
        return None
    return parts[0], parts[1]


def _membership(rollouts: Sequence[RolloutState]) -> dict[tuple[str, str, str], _Member]:
    index: dict[tuple[str, str, str], _Member] = {}
    for rollout in rollouts:
        ns, name = rollout.ref.namespace, rollout.ref.name
        for old in rollout.old_hashes:
            if old:
                index.setdefault((ns, name, old), _Member(rollout.ref, Scope.OLD))
        if rollout.new_hash:
            # The new hash wins should a source ever list it among the old ones too.
            index[(ns, name, rollout.new_hash)] = _Member(rollout.ref, Scope.NEW)
    return index


def _pod_membership(rollouts: Sequence[RolloutState]) -> dict[tuple[str, str], _Member]:
    """(namespace, pod name) -> member, for the pods a source knows by their `pod-template-hash` label."""
    index: dict[tuple[str, str], _Member] = {}
    for rollout in rollouts:
        old = set(rollout.old_hashes)
        for pod in rollout.pods:
            if rollout.new_hash and pod.template_hash == rollout.new_hash:
                index[(rollout.ref.namespace, pod.name)] = _Member(rollout.ref, Scope.NEW)
            elif pod.template_hash in old:
                index.setdefault((rollout.ref.namespace, pod.name), _Member(rollout.ref, Scope.OLD))
    return index


def _cut_membership(rollouts: Sequence[RolloutState]) -> dict[tuple[str, str], _Member | None]:
    """(namespace, cut prefix) -> member for hashes whose pod names Kubernetes cut; None where two hashes of the
    rollout share the cut prefix (the name cannot tell them apart)."""
    index: dict[tuple[str, str], _Member | None] = {}
    for rollout in rollouts:
        for scope in (Scope.NEW, Scope.OLD):
            for template_hash in scope_hashes(rollout, scope):
                if not name_is_cut(rollout.ref.name, template_hash):
                    continue
                key = (rollout.ref.namespace, f"{rollout.ref.name}-{template_hash}-"[:MAX_GENERATED_PREFIX])
                member = _Member(rollout.ref, scope)
                index[key] = member if index.get(key, member) == member else None
    return index


def assign_samples(
    rollouts: Sequence[RolloutState], samples: Iterable[PodSample]
) -> dict[tuple[DeploymentRef, Scope], list[PodSample]]:
    """Group samples by (rollout, scope); DEPLOYMENT gets the union of NEW and OLD. Unknown pods are ignored.

    A pod belongs to a scope by its `pod-template-hash` label where the source knows the pod (`RolloutState.pods`),
    else by its name: `<deployment>-<hash>-<suffix>`, or the prefix Kubernetes cut to 58 characters."""
    index = _membership(rollouts)
    by_pod = _pod_membership(rollouts)
    by_cut = _cut_membership(rollouts)
    groups: dict[tuple[DeploymentRef, Scope], list[PodSample]] = defaultdict(list)
    for sample in samples:
        member = by_pod.get((sample.namespace, sample.pod))
        if member is None and len(sample.pod) == MAX_GENERATED_PREFIX + 5:
            member = by_cut.get((sample.namespace, sample.pod[:MAX_GENERATED_PREFIX]))
        if member is None:
            parsed = parse_pod_name(sample.pod)
            if parsed is None:
                continue
            member = index.get((sample.namespace, parsed[0], parsed[1]))
        if member is None:
            continue
        groups[(member.ref, member.scope)].append(sample)
        groups[(member.ref, Scope.DEPLOYMENT)].append(sample)
    return groups


@dataclass(frozen=True)
class ScopeValue:
    """A combined value for one scope: value None means unknown, `error` then says why (or notes dropped pods)."""

    value: float | None
    pods: int
    error: str | None = None
    traffic: float | None = None
    """A ratio's denominator per pod, the median over the pods (see `Observation.traffic`)."""


def _is_finite(value: float) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _dropped_note(dropped: int) -> str:
    return f"ignored {dropped} NaN/Inf pod value(s)"


def _with_note(error: str, dropped: int) -> str:
    return f"{error}; {_dropped_note(dropped)}" if dropped else error


def combine_aggregate(samples: Sequence[PodSample], aggregate: str) -> ScopeValue:
    """max/min/mean/sum of the finite per-pod values."""
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate: expected one of {', '.join(AGGREGATES)}, got {aggregate!r}")
    finite = [s for s in samples if _is_finite(s.value)]
    dropped = len(samples) - len(finite)
    if not samples:
        return ScopeValue(None, 0, "no pods in the query result")
    if not finite:
        return ScopeValue(None, 0, f"no finite value: {_dropped_note(dropped)}")
    values = [s.value for s in finite]
    if aggregate == "max":
        value = max(values)
    elif aggregate == "min":
        value = min(values)
    elif aggregate == "sum":
        value = math.fsum(values)
    else:
        value = math.fsum(values) / len(values)
    return ScopeValue(value, len({(s.namespace, s.pod) for s in finite}), _dropped_note(dropped) if dropped else None)


def combine_ratio(
    numerator: Sequence[PodSample], denominator: Sequence[PodSample], min_denominator: float
) -> ScopeValue:
    """sum(numerator) / sum(denominator) over the pods that have a finite denominator.

    A pod missing from the numerator counts 0 there (a `code=~"5.."` rate has no series for a pod without
    errors); a pod with a NaN/Inf numerator or denominator is dropped from both sums.
    """
    if not denominator:
        return ScopeValue(None, 0, "no pods in the denominator's result")
    num_by_pod: dict[tuple[str, str], list[float]] = defaultdict(list)
    for s in numerator:
        num_by_pod[(s.namespace, s.pod)].append(s.value)
    den_by_pod: dict[tuple[str, str], list[float]] = defaultdict(list)
    for s in denominator:
        den_by_pod[(s.namespace, s.pod)].append(s.value)
    num_total: list[float] = []
    den_total: list[float] = []
    per_pod: list[float] = []
    dropped = 0
    for pod, dens in den_by_pod.items():
        nums = num_by_pod.get(pod, [])
        if not all(_is_finite(v) for v in (*dens, *nums)):
            dropped += 1
            continue
        den_total.extend(dens)
        num_total.extend(nums)
        per_pod.append(math.fsum(dens))
    pods = len(den_by_pod) - dropped
    if pods == 0:
        return ScopeValue(None, 0, f"no finite value: ignored {dropped} pod(s) with NaN/Inf values")
    den_sum = math.fsum(den_total)
    traffic = statistics.median(per_pod)
    limit = max(min_denominator, TINY_DENOMINATOR)
    note = f"ignored {dropped} pod(s) with NaN/Inf values" if dropped else None
    if den_sum < limit:
        error = f"too little traffic: denominator {den_sum:.6g} < {limit:.6g} (min_denominator) over {pods} pod(s)"
        return ScopeValue(None, pods, f"{error}; {note}" if note else error, traffic=traffic)
    return ScopeValue(math.fsum(num_total) / den_sum, pods, note, traffic=traffic)


def bucket_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float:
    """PromQL's `histogram_quantile` on classic buckets `(upper_bound, cumulative_count)`; NaN where PromQL is NaN.

    Linear interpolation within the bucket (lower bound 0 for the first bucket if its bound is positive); a
    quantile in the +Inf bucket returns the second highest bound; no +Inf bucket, fewer than two buckets or zero
    observations give NaN; equal bounds are merged, counts within 1e-12 relative are equalised and decreasing
    counts are raised to the running maximum (the monotonicity fix).
    """
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    ordered = sorted(buckets, key=lambda b: b[0])
    if not ordered or not math.isinf(ordered[-1][0]) or ordered[-1][0] < 0:
        return math.nan
    merged: list[list[float]] = []
    for bound, count in ordered:
        if merged and merged[-1][0] == bound:
            merged[-1][1] += count
        else:
            merged.append([bound, count])
    _correct_precision_errors(merged, 1e-12)
    running = merged[0][1]
    for bucket in merged[1:]:
        if bucket[1] > running:
            running = bucket[1]
        elif bucket[1] < running:
            bucket[1] = running
    if len(merged) < 2:
        return math.nan
    observations = merged[-1][1]
    if observations == 0:
        return math.nan
    rank = q * observations
    b = next((i for i in range(len(merged) - 1) if merged[i][1] >= rank), len(merged) - 1)
    if b == len(merged) - 1:
        return merged[-2][0]
    if b == 0 and merged[0][0] <= 0:
        return merged[0][0]
    start, end, count = 0.0, merged[b][0], merged[b][1]
    if b > 0:
        start = merged[b - 1][0]
        count -= merged[b - 1][1]
        rank -= merged[b - 1][1]
    return start + (end - start) * _go_divide(rank, count)


def _go_divide(a: float, b: float) -> float:
    """Division as Go's float64 does it: x/0 is ±Inf, 0/0 is NaN (q=0 with an empty lowest bucket gives NaN)."""
    if b == 0:
        return math.nan if a == 0 or math.isnan(a) else math.copysign(math.inf, a)
    return a / b


def _correct_precision_errors(buckets: list[list[float]], tolerance: float) -> None:
    prev = buckets[0][1]
    for bucket in buckets[1:]:
        delta = abs(bucket[1] - prev)
        if delta == 0:
            continue
        if bucket[1] != 0 and delta / bucket[1] <= tolerance:
            bucket[1] = prev
        else:
            prev = bucket[1]


def combine_quantile(samples: Sequence[PodSample], q: float) -> ScopeValue:
    """Sum the bucket rates per `le` over the pods, then `bucket_quantile`. A pod with a NaN/Inf bucket is dropped."""
    if not samples:
        return ScopeValue(None, 0, "no pods in the query result")
    by_pod: dict[tuple[str, str], list[PodSample]] = defaultdict(list)
    for s in samples:
        by_pod[(s.namespace, s.pod)].append(s)
    sums: dict[float, list[float]] = defaultdict(list)
    dropped = 0
    without_le = 0
    pods = 0
    for pod_samples in by_pod.values():
        with_le = [s for s in pod_samples if s.le is not None and not math.isnan(s.le)]
        without_le += len(pod_samples) - len(with_le)
        if not with_le:
            continue
        if not all(_is_finite(s.value) for s in with_le):
            dropped += 1
            continue
        pods += 1
        for s in with_le:
            assert s.le is not None
            sums[s.le].append(s.value)
    notes = []
    if dropped:
        notes.append(f"ignored {dropped} pod(s) with NaN/Inf buckets")
    if without_le:
        notes.append(f"ignored {without_le} series without a numeric 'le' label")
    note = "; ".join(notes) or None
    if pods == 0:
        error = "no pod with finite histogram buckets"
        return ScopeValue(None, 0, f"{error}; {note}" if note else error)
    buckets = [(le, math.fsum(values)) for le, values in sums.items()]
    value = bucket_quantile(q, buckets)
    if math.isnan(value):
        error = _why_no_quantile(buckets)
        return ScopeValue(None, pods, f"{error}; {note}" if note else error)
    return ScopeValue(value, pods, note)


def _why_no_quantile(buckets: Sequence[tuple[float, float]]) -> str:
    if not any(math.isinf(le) and le > 0 for le, _ in buckets):
        return "histogram has no le=\"+Inf\" bucket"
    if len(buckets) < 2:
        return "histogram has fewer than 2 buckets"
    if max((count for _, count in buckets), default=0.0) == 0:
        return "histogram has no observations (too little traffic)"
    return "histogram_quantile is NaN for these buckets"


def split_observations(
    spec: MetricSpec,
    rollouts: Sequence[RolloutState],
    samples: Sequence[PodSample],
    at: float,
    denominator: Sequence[PodSample] | None = None,
) -> list[Observation]:
    """Exactly three observations (deployment, new, old) per entry of `rollouts`, in that order.

    `samples` are the per-pod results of `spec.query` (with `le` when `spec.quantile` is set); `denominator`
    those of `spec.denominator` (required when it is set). `error` names the metric and the cause when the
    value is unknown; on a known value it may note pods whose NaN/Inf values were ignored.
    """
    if spec.denominator is not None and denominator is None:
        raise ValueError(f"metric {spec.name}: a denominator result is required (spec.denominator is set)")
    groups = assign_samples(rollouts, samples)
    den_groups = assign_samples(rollouts, denominator) if denominator is not None else {}
    observations: list[Observation] = []
    for rollout in rollouts:
        for scope in SCOPES:
            key = (rollout.ref, scope)
            members = (den_groups if spec.denominator is not None else groups).get(key, [])
            untracked = _untracked_scope(rollout, scope)
            if untracked:
                result = ScopeValue(None, 0, untracked)
            elif not members:
                what = "denominator's result" if spec.denominator is not None else "query result"
                result = ScopeValue(None, 0, f"no {_SCOPE_WORDS[scope]} pods in the {what}")
            else:
                result = combine_pods(spec, groups.get(key, []), members)
            error = f"{spec.name}: {result.error}" if result.error else None
            observations.append(
                Observation(
                    ref=rollout.ref, metric=spec.name, scope=scope, time=at, value=result.value, error=error,
                    pods=result.pods if result.value is not None else 0, traffic=result.traffic,
                )
            )
    return observations


def combine_pods(spec: MetricSpec, samples: Sequence[PodSample], denominator: Sequence[PodSample]) -> ScopeValue:
    """One value over a set of pods as the spec combines them: a ratio of sums, a quantile of the summed buckets,
    or the aggregate. `denominator` holds the same pods' denominator samples (ignored without one)."""
    if spec.denominator is not None:
        return combine_ratio(samples, denominator, spec.min_denominator)
    if spec.quantile is not None:
        return combine_quantile(samples, spec.quantile)
    return combine_aggregate(samples, spec.aggregate)


def deployment_values(
    spec: MetricSpec, refs: Sequence[DeploymentRef], samples: Sequence[PodSample],
    denominator: Sequence[PodSample] = (),
) -> dict[DeploymentRef, ScopeValue]:
    """The Deployment-level value of each of `refs` that has pods among `samples`, whatever their revision (the
    result of a `render_history_query`)."""
    wanted = {(ref.namespace, ref.name): ref for ref in refs}

    def by_ref(items: Sequence[PodSample]) -> dict[DeploymentRef, list[PodSample]]:
        grouped: dict[DeploymentRef, list[PodSample]] = defaultdict(list)
        for sample in items:
            parsed = parse_pod_name(sample.pod)
            ref = wanted.get((sample.namespace, parsed[0])) if parsed else None
            if ref is not None:
                grouped[ref].append(sample)
        return grouped

    numerator, denominators = by_ref(samples), by_ref(denominator)
    present = denominators if spec.denominator is not None else numerator
    return {ref: combine_pods(spec, numerator.get(ref, []), denominators.get(ref, [])) for ref in present}


_SCOPE_WORDS = {Scope.DEPLOYMENT: "Deployment", Scope.NEW: "new-revision", Scope.OLD: "old-revision"}


def _untracked_scope(rollout: RolloutState, scope: Scope) -> str | None:
    if scope is Scope.NEW and not rollout.new_hash:
        return "no new ReplicaSet known for this rollout"
    if scope is Scope.OLD and not any(rollout.old_hashes):
        return "no old ReplicaSet with pods"
    if scope is Scope.DEPLOYMENT and not rollout.new_hash and not any(rollout.old_hashes):
        return "no ReplicaSet known for this Deployment"
    return None


def unknown_observations(rollouts: Sequence[RolloutState], metric: str, at: float, error: str) -> list[Observation]:
    """Three unknown observations per rollout, all carrying `error` (a failed query)."""
    observations: list[Observation] = []
    for rollout in rollouts:
        observations.extend(
            Observation(ref=rollout.ref, metric=metric, scope=scope, time=at, value=None, error=error, failed=True)
            for scope in SCOPES
        )
    return observations


# --- the aggregate form: one value per scope ---------------------------------------------------------------------


def needed_scopes(rollout: RolloutState) -> tuple[Scope, ...]:
    """The scopes of a rollout an aggregate query is rendered for (those with pods to select)."""
    return tuple(scope for scope in SCOPES if _untracked_scope(rollout, scope) is None)


def scope_pod_count(rollout: RolloutState, scope: Scope) -> int:
    """How many pods a scope holds: those the source knows by label, else the replica counts (0: unknown)."""
    if rollout.pods:
        hashes = set(scope_hashes(rollout, scope))
        return sum(1 for pod in rollout.pods if pod.template_hash in hashes)
    if scope is Scope.NEW:
        return max(rollout.updated_replicas, 0)
    if scope is Scope.OLD:
        return max(rollout.old_replicas, 0)
    return max(rollout.updated_replicas, 0) + max(rollout.old_replicas, 0)


def _one_value(values: Sequence[float] | None, what: str) -> tuple[float | None, str | None]:
    """The single finite value of a scope's series, or why there is none."""
    if not values:
        return None, f"{what} returned no series for this scope"
    if len(values) > 1:
        return None, (f"{what} returned {len(values)} series for one scope (an aggregate query must give one: "
                      "aggregate the pods away, e.g. sum(...) without by)")
    value = values[0]
    if not _is_finite(value):
        return None, f"{what} is {value} for this scope"
    return value, None


def scope_observations(
    spec: MetricSpec,
    rollouts: Sequence[RolloutState],
    values: Mapping[str, Sequence[float]],
    at: float,
    *,
    denominator: Mapping[str, Sequence[float]] | None = None,
    errors: Mapping[str, str] | None = None,
) -> list[Observation]:
    """Exactly three observations (deployment, new, old) per rollout from an aggregate-form result: `values` and
    `denominator` map each `scope_key` to its series' values; `errors` says why a key's query failed.

    The observations are those `split_observations` gives the per-pod form: with a denominator the ratio (a
    missing numerator is 0, as a `code=~"5.."` sum has no series without errors; under `min_denominator` it is
    unknown) and its traffic (the denominator per pod); otherwise the query's value."""
    if spec.denominator is not None and denominator is None:
        raise ValueError(f"metric {spec.name}: a denominator result is required (spec.denominator is set)")
    failed = errors or {}
    observations: list[Observation] = []
    for rollout in rollouts:
        for scope in SCOPES:
            key = scope_key(rollout.ref, scope)
            pods = scope_pod_count(rollout, scope)
            untracked = _untracked_scope(rollout, scope)
            if untracked:
                result = ScopeValue(None, 0, untracked)
            elif key in failed:
                result = ScopeValue(None, 0, failed[key])
            else:
                result = aggregate_value(spec, values.get(key), (denominator or {}).get(key), pods)
            error = f"{spec.name}: {result.error}" if result.error else None
            observations.append(
                Observation(
                    ref=rollout.ref, metric=spec.name, scope=scope, time=at, value=result.value, error=error,
                    pods=result.pods if result.value is not None else 0, traffic=result.traffic,
                )
            )
    return observations


def aggregate_value(
    spec: MetricSpec, numerator: Sequence[float] | None, denominator: Sequence[float] | None, pods: int = 0
) -> ScopeValue:
    """One scope's value from the series of an aggregate-form query (and denominator) at one time."""
    if spec.denominator is not None:
        return _scope_ratio(numerator, denominator, pods, spec.min_denominator)
    value, error = _one_value(numerator, "query")
    return ScopeValue(value, pods, error)


def _scope_ratio(
    numerator: Sequence[float] | None, denominator: Sequence[float] | None, pods: int, min_denominator: float
) -> ScopeValue:
    den, error = _one_value(denominator, "denominator")
    if den is None:
        return ScopeValue(None, 0, error)
    traffic = den / pods if pods > 0 else None
    limit = max(min_denominator, TINY_DENOMINATOR)
    if den < limit:
        return ScopeValue(None, pods, f"too little traffic: denominator {den:.6g} < {limit:.6g} (min_denominator)",
                          traffic=traffic)
    num, error = _one_value(numerator, "query") if numerator else (0.0, None)
    if num is None:
        return ScopeValue(None, 0, error, traffic=traffic)
    return ScopeValue(num / den, pods, None, traffic=traffic)
