"""Rollout state rebuilt from kube-state-metrics series in Prometheus: the `RolloutSource` of `predictor backtest`.

The backtest steps a simulated clock forward and calls `list_rollouts(at)`; every query is evaluated at `at`, so
the state is what Prometheus knew then and does not change when later data is added. A tick costs one instant
query per series name (not per Deployment); a rollout's completion time costs a few range queries once.

What kube-state-metrics cannot tell, and how it is approximated:
1. Revisions. The `deployment.kubernetes.io/revision` annotation is not exported by default. When it is (with
   `--metric-annotations-allowlist=replicasets=[deployment.kubernetes.io/revision]`) it is used, and rollbacks
   are recognised; otherwise ReplicaSets are ranked by `kube_replicaset_created`: the newest one with replicas
   is the new revision, its rank (1-based) its revision number, and `is_rollback` stays False.
2. The rollout's start is the new ReplicaSet's creation time (for a rollback, that of the reused ReplicaSet).
3. Pods: `kube_pod_owner` gives each pod's ReplicaSet, `kube_pod_labels{label_pod_template_hash}` its hash
   where exported (`--metric-labels-allowlist=pods=[pod-template-hash]`; else the owner's name gives it),
   `kube_pod_status_ready`, `kube_pod_container_status_restarts_total`, `_waiting_reason` and `kube_pod_created`
   the rest of `PodState`.
4. Label selectors are evaluated on `kube_deployment_labels`, which only carries allow-listed labels
   (`--metric-labels-allowlist=deployments=[app,...]`); a selector on a label no Deployment exposes is an error.
"""

from __future__ import annotations

import logging
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from prometheus_api_client import PrometheusConnect

from predictor.config import PrometheusConfig, Target
from predictor.domain import DeploymentRef, PodState, RolloutState
from predictor.sources.prometheus import Labels, PrometheusClient
from predictor.sources.split import escape_promql_string, escape_regex

_LOG = logging.getLogger(__name__)

REVISION_LABEL = "annotation_deployment_kubernetes_io_revision"
POD_HASH_LABEL = "label_pod_template_hash"
"""kube-state-metrics' name for a Pod's `pod-template-hash` label (exported with
`--metric-labels-allowlist=pods=[pod-template-hash]`); without it the hash is read from the owner's name."""


class ReplayError(RuntimeError):
    """The state cannot be rebuilt (a query failed, a selector cannot be evaluated); the message says why."""


# --- label selectors --------------------------------------------------------------------------------------------

_SELECTOR_TERM = re.compile(
    r"\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9./_-]+)\s*"
    r"(?:(?P<op>==|=|!=)\s*(?P<value>[A-Za-z0-9._-]*)|\s(?P<set>in|notin)\s*\((?P<values>[A-Za-z0-9._,\s-]*)\))?\s*"
)


@dataclass(frozen=True)
class Requirement:
    """One term of a label selector: op is '=', '!=', 'in', 'notin', 'exists' or '!exists'."""

    key: str
    op: str
    values: tuple[str, ...] = ()

    @property
    def ksm_label(self) -> str:
        """The label kube-state-metrics gives this key on kube_deployment_labels."""
        return "label_" + re.sub(r"[^a-zA-Z0-9_]", "_", self.key)

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.ksm_label)
        if self.op == "exists":
            return value is not None
        if self.op == "!exists":
            return value is None
        if self.op in ("=", "in"):
            return value is not None and value in self.values
        return value is None or value not in self.values


def parse_selector(selector: str) -> tuple[Requirement, ...]:
    """'app=web,tier in (a,b),!canary' -> requirements. Raises ValueError naming the bad term."""
    if not selector.strip():
        return ()
    requirements = []
    for term in _split_terms(selector):
        match = _SELECTOR_TERM.fullmatch(term)
        if match is None or (match["neg"] and (match["op"] or match["set"])):
            raise ValueError(f"selector {selector!r}: cannot parse term {term.strip()!r}")
        key = match["key"]
        if match["op"]:
            op = "!=" if match["op"] == "!=" else "="
            requirements.append(Requirement(key, op, (match["value"],)))
        elif match["set"]:
            values = tuple(v.strip() for v in match["values"].split(",") if v.strip())
            requirements.append(Requirement(key, match["set"], values))
        else:
            requirements.append(Requirement(key, "!exists" if match["neg"] else "exists"))
    return tuple(requirements)


def _split_terms(selector: str) -> list[str]:
    """Split on commas outside parentheses."""
    terms: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append("".join(current))
            current = []
        else:
            current.append(ch)
    terms.append("".join(current))
    return terms


# --- state -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ReplicaSet:
    name: str
    hash: str
    created: float | None
    replicas: int
    ready: int
    pods: int
    revision: int | None

    @property
    def order(self) -> tuple[float, str]:
        return (self.created if self.created is not None else math.inf, self.name)


@dataclass(frozen=True)
class _Pending:
    """A rollout that is complete at `at` but whose completion time is not known yet."""

    ref: DeploymentRef
    new_rs: str
    old_rs: tuple[str, ...]
    started_at: float
    not_before: float
    """The search starts here: the new ReplicaSet's creation, or for a rollback the last creation of another."""


class KubeStateMetricsRolloutSource:
    """`RolloutSource` from kube-state-metrics series, evaluated at the simulated time `at`.

    `lookback_seconds` (default 1h) bounds the search for a completion time; a rollout complete for longer is
    reported as completed at the start of that window. `resolution_seconds` (default 15s, the usual scrape
    interval) is the step of that search. Calls are expected in increasing `at`; completion times found are
    kept, so each rollout's search runs once.
    """

    def __init__(
        self,
        prometheus: PrometheusConfig | PrometheusConnect | PrometheusClient,
        targets: Sequence[Target],
        *,
        lookback_seconds: float = 3600.0,
        resolution_seconds: float = 15.0,
    ) -> None:
        if isinstance(prometheus, PrometheusClient):
            self._client = prometheus
        elif isinstance(prometheus, PrometheusConnect):
            self._client = PrometheusClient.from_connect(prometheus)
        else:
            self._client = PrometheusClient(prometheus)
        if not targets:
            raise ValueError("targets: expected at least one target")
        if lookback_seconds <= 0 or resolution_seconds <= 0:
            raise ValueError(
                f"lookback_seconds and resolution_seconds: expected positive numbers, got {lookback_seconds!r} "
                f"and {resolution_seconds!r}"
            )
        self.targets = tuple(targets)
        self.lookback_seconds = lookback_seconds
        self.resolution_seconds = resolution_seconds
        self._selectors = {}
        for i, target in enumerate(self.targets):
            try:
                self._selectors[i] = parse_selector(target.selector)
            except ValueError as exc:
                raise ValueError(f"targets[{i}].selector: {exc}") from exc
        namespaces = sorted({t.namespace for t in self.targets})
        self._ns_matcher = f'namespace=~"{escape_promql_string("|".join(escape_regex(n) for n in namespaces))}"'
        self._completed: dict[tuple[str, str, str], float] = {}

    def is_online(self) -> bool:
        return self._client.is_ready()

    # --- queries ----------------------------------------------------------------------------------------------

    def _instant(self, promql: str, at: float) -> list[tuple[Labels, float]]:
        try:
            return self._client.query(promql, at)
        except Exception as exc:
            raise ReplayError(f"kube-state-metrics query failed at {at:.3f}: {exc} (query: {promql})") from exc

    def _by(self, series: str, labels: str, at: float, extra: str = "") -> dict[tuple[str, ...], float]:
        keys = [k.strip() for k in labels.split(",")]
        promql = f"max by ({labels}) ({series}{{{self._ns_matcher}{extra}}})"
        result: dict[tuple[str, ...], float] = {}
        for item_labels, value in self._instant(promql, at):
            result[tuple(item_labels.get(k, "") for k in keys)] = value
        return result

    def list_rollouts(self, at: float) -> list[RolloutState]:
        """Every targeted Deployment as kube-state-metrics showed it at `at`. Raises ReplayError."""
        dep = "namespace, deployment"
        spec = self._by("kube_deployment_spec_replicas", dep, at)
        deployments = self._select(spec.keys(), at)
        if not deployments:
            return []
        updated = self._by("kube_deployment_status_replicas_updated", dep, at)
        generation = self._by("kube_deployment_metadata_generation", dep, at)
        observed = self._by("kube_deployment_status_observed_generation", dep, at)
        paused = self._by("kube_deployment_spec_paused", dep, at)
        stuck = self._by(
            "kube_deployment_status_condition", dep, at, ', condition="Progressing", status="false"'
        )
        owners = self._by("kube_replicaset_owner", "namespace, replicaset, owner_name", at,
                          ', owner_kind="Deployment"')
        rs = "namespace, replicaset"
        rs_spec = self._by("kube_replicaset_spec_replicas", rs, at)
        rs_ready = self._by("kube_replicaset_status_ready_replicas", rs, at)
        rs_created = self._by("kube_replicaset_created", rs, at)
        rs_revision = self._by("kube_replicaset_annotations", f"{rs}, {REVISION_LABEL}", at,
                               f', {REVISION_LABEL}!=""')
        pod_states = self._pods(at)
        pods_by_rs = {key: len(found) for key, found in pod_states.items()}
        revisions: dict[tuple[str, str], int] = {}
        for (ns, name, raw), _ in rs_revision.items():
            try:
                revision = int(raw)
            except ValueError:
                continue
            # Without staleness markers an older value can linger for the lookback: revisions only grow.
            revisions[(ns, name)] = max(revision, revisions.get((ns, name), revision))

        owned: dict[tuple[str, str], list[_ReplicaSet]] = defaultdict(list)
        for (ns, rs_name, owner), _ in owners.items():
            if (ns, owner) not in deployments:
                continue
            key = (ns, rs_name)
            owned[(ns, owner)].append(
                _ReplicaSet(
                    name=rs_name,
                    hash=rs_name[len(owner) + 1 :] if rs_name.startswith(owner + "-") else rs_name.rsplit("-", 1)[-1],
                    created=rs_created.get(key),
                    replicas=_int(rs_spec.get(key)),
                    ready=_int(rs_ready.get(key)),
                    pods=pods_by_rs.get(key, 0),
                    revision=revisions.get(key),
                )
            )

        states: list[RolloutState] = []
        pending: list[_Pending] = []
        for ns, name in sorted(deployments):
            key = (ns, name)
            state, complete_now, new_rs, old_rs = self._state(
                DeploymentRef(ns, name), at, owned.get(key, []), desired=_int(spec.get(key)),
                updated=_int(updated.get(key)), generation=generation.get(key), observed=observed.get(key),
                paused=paused.get(key, 0.0) >= 1, stuck=stuck.get(key, 0.0) >= 1,
            )
            tracked = {h for h in (state.new_hash, *state.old_hashes) if h}
            state = replace(state, pods=tuple(sorted(
                (pod for rs in owned.get(key, []) if rs.hash in tracked for pod in pod_states.get((ns, rs.name), ())
                 if pod.template_hash in tracked),
                key=lambda pod: pod.name)))
            states.append(state)
            if complete_now and new_rs is not None:
                # A ReplicaSet created after the new one means the new one was not current then (a rollback).
                created = [r.created for r in old_rs if r.created is not None]
                not_before = max([state.started_at, *created])
                pending.append(
                    _Pending(state.ref, new_rs.name, tuple(r.name for r in old_rs), state.started_at, not_before)
                )
        completed = self._completion_times(pending, at)
        alive = {(p.ref.namespace, p.ref.name, p.new_rs) for p in pending}
        self._completed = {k: v for k, v in self._completed.items() if k in alive}
        result = []
        for state in states:
            done = completed.get(state.ref)
            result.append(replace(state, completed_at=done) if done is not None else state)
        return result

    def _pods(self, at: float) -> dict[tuple[str, str], list[PodState]]:
        """The pods of every ReplicaSet at `at`, by (namespace, ReplicaSet): owner from `kube_pod_owner`, hash from
        `kube_pod_labels{label_pod_template_hash}` (when kube-state-metrics exports that label) or else the
        owner's name, and where present readiness, restarts, a waiting reason and the creation time."""
        pod = "namespace, pod"
        owners = self._by("kube_pod_owner", f"{pod}, owner_name", at, ', owner_kind="ReplicaSet"')
        hashes = self._by("kube_pod_labels", f"{pod}, {POD_HASH_LABEL}", at, f', {POD_HASH_LABEL}!=""')
        ready = self._by("kube_pod_status_ready", pod, at, ', condition="true"')
        created = self._by("kube_pod_created", pod, at)
        waiting = self._by("kube_pod_container_status_waiting_reason", f"{pod}, reason", at)
        restarts = {
            (labels.get("namespace", ""), labels.get("pod", "")): value
            for labels, value in self._instant(
                f"sum by ({pod}) (kube_pod_container_status_restarts_total{{{self._ns_matcher}}})", at)
        }
        label_hash = {(ns, name): value for (ns, name, value) in hashes}
        reasons = {(ns, name): reason for (ns, name, reason), value in sorted(waiting.items()) if value >= 1 and reason}
        found: dict[tuple[str, str], list[PodState]] = defaultdict(list)
        for ns, name, owner in sorted(owners):
            key = (ns, name)
            template_hash = label_hash.get(key) or _hash_of(owner)
            found[(ns, owner)].append(PodState(
                name=name, template_hash=template_hash, ready=ready.get(key, 0.0) >= 1,
                restarts=_int(restarts.get(key)), waiting_reason=reasons.get(key), created_at=created.get(key),
            ))
        return found

    def _select(self, keys: Iterable[tuple[str, ...]], at: float) -> set[tuple[str, str]]:
        present = {(k[0], k[1]) for k in keys}
        selected: set[tuple[str, str]] = set()
        labels_by_dep: dict[tuple[str, str], Labels] | None = None
        for i, target in enumerate(self.targets):
            candidates = {k for k in present if k[0] == target.namespace}
            if target.names:
                candidates = {k for k in candidates if k[1] in target.names}
            requirements = self._selectors[i]
            if requirements and candidates:
                if labels_by_dep is None:
                    labels_by_dep = self._deployment_labels(at)
                candidates = self._apply_selector(i, target, requirements, candidates, labels_by_dep)
            selected |= candidates
        return selected

    def _deployment_labels(self, at: float) -> dict[tuple[str, str], Labels]:
        result: dict[tuple[str, str], Labels] = {}
        for labels, _ in self._instant(f"kube_deployment_labels{{{self._ns_matcher}}}", at):
            key = (labels.get("namespace", ""), labels.get("deployment", ""))
            result.setdefault(key, {}).update(labels)
        return result

    @staticmethod
    def _apply_selector(
        index: int, target: Target, requirements: Sequence[Requirement], candidates: set[tuple[str, str]],
        labels_by_dep: Mapping[tuple[str, str], Labels],
    ) -> set[tuple[str, str]]:
        in_namespace = [labels for (ns, _), labels in labels_by_dep.items() if ns == target.namespace]
        for requirement in requirements:
            if not any(requirement.ksm_label in labels for labels in in_namespace):
                raise ReplayError(
                    f"targets[{index}].selector {target.selector!r} cannot be evaluated: no Deployment in namespace "
                    f"{target.namespace!r} has {requirement.ksm_label!r} on kube_deployment_labels (run "
                    f"kube-state-metrics with --metric-labels-allowlist=deployments=[{requirement.key}])"
                )
        return {k for k in candidates if all(r.matches(labels_by_dep.get(k, {})) for r in requirements)}

    def _state(
        self, ref: DeploymentRef, at: float, owned: list[_ReplicaSet], *, desired: int, updated: int,
        generation: float | None, observed: float | None, paused: bool, stuck: bool,
    ) -> tuple[RolloutState, bool, _ReplicaSet | None, list[_ReplicaSet]]:
        by_creation = sorted(owned, key=lambda r: r.order)
        rank = {r.name: i + 1 for i, r in enumerate(by_creation)}
        annotated = bool(owned) and all(r.revision is not None for r in owned)
        new_rs: _ReplicaSet | None
        if annotated:
            new_rs = max(owned, key=lambda r: (r.revision or 0, r.order))
        else:
            scaled = [r for r in by_creation if r.replicas > 0]
            new_rs = scaled[-1] if scaled else (by_creation[-1] if by_creation else None)
        others = [r for r in by_creation if new_rs is None or r.name != new_rs.name]
        old_rs = [r for r in others if r.replicas > 0 or r.pods > 0]
        old_rs.sort(key=lambda r: r.order, reverse=True)
        revision = 0
        previous: int | None = None
        is_rollback = False
        if new_rs is not None:
            if annotated:
                revision = new_rs.revision or 0
                older = [r for r in others if (r.revision or 0) < revision]
                previous = max((r.revision or 0 for r in older), default=None)
                is_rollback = any(r.order > new_rs.order for r in older)
            else:
                revision = rank[new_rs.name]
                previous = revision - 1 if revision > 1 else None
        old_replicas = sum(r.replicas for r in old_rs)
        generation_seen = generation is None or observed is None or observed >= generation
        complete_now = new_rs is not None and generation_seen and updated >= desired and old_replicas == 0
        started_at = new_rs.created if new_rs is not None and new_rs.created is not None else at
        state = RolloutState(
            ref=ref,
            revision=revision,
            new_hash=new_rs.hash if new_rs is not None else None,
            old_hashes=tuple(r.hash for r in old_rs),
            desired_replicas=desired,
            updated_replicas=updated,
            ready_new_replicas=new_rs.ready if new_rs is not None else 0,
            old_replicas=old_replicas,
            started_at=started_at,
            completed_at=None,
            paused=paused,
            progress_deadline_exceeded=stuck,
            is_rollback=is_rollback,
            previous_revision=previous,
        )
        return state, complete_now, new_rs, others

    # --- completion -------------------------------------------------------------------------------------------

    def _completion_times(self, pending: Sequence[_Pending], at: float) -> dict[DeploymentRef, float]:
        """The first time within the lookback at which each complete rollout was complete; one search per rollout."""
        result: dict[DeploymentRef, float] = {}
        search: list[_Pending] = []
        for item in pending:
            known = self._completed.get((item.ref.namespace, item.ref.name, item.new_rs))
            if known is not None and item.not_before <= known <= at:
                result[item.ref] = known
            else:
                search.append(item)
        if search:
            found = self._search_completion(search, at)
            for item in search:
                completed_at = found.get(item.ref, at)
                self._completed[(item.ref.namespace, item.ref.name, item.new_rs)] = completed_at
                result[item.ref] = completed_at
        return result

    def _search_completion(self, pending: Sequence[_Pending], at: float) -> dict[DeploymentRef, float]:
        step = self.resolution_seconds
        window = {p.ref: max(p.not_before, at - self.lookback_seconds) for p in pending}
        start = math.ceil(min(window.values()) / step) * step
        if start > at:
            return {}
        names = escape_promql_string("|".join(escape_regex(p.ref.name) for p in pending))
        replica_sets = escape_promql_string(
            "|".join(escape_regex(rs) for p in pending for rs in (p.new_rs, *p.old_rs))
        )
        dep_filter = f'{self._ns_matcher}, deployment=~"{names}"'
        rs_filter = f'{self._ns_matcher}, replicaset=~"{replica_sets}"'
        series = {
            "spec": ("kube_deployment_spec_replicas", "namespace, deployment", dep_filter),
            "updated": ("kube_deployment_status_replicas_updated", "namespace, deployment", dep_filter),
            "generation": ("kube_deployment_metadata_generation", "namespace, deployment", dep_filter),
            "observed": ("kube_deployment_status_observed_generation", "namespace, deployment", dep_filter),
            "rs_spec": ("kube_replicaset_spec_replicas", "namespace, replicaset", rs_filter),
        }
        grids: dict[str, dict[tuple[str, str], dict[int, float]]] = {}
        for key, (name, by, selector) in series.items():
            promql = f"max by ({by}) ({name}{{{selector}}})"
            try:
                matrix = self._client.query_range(promql, start, at, step)
            except Exception as exc:
                raise ReplayError(f"kube-state-metrics range query failed: {exc} (query: {promql})") from exc
            second = by.split(",")[1].strip()
            grids[key] = {
                (labels.get("namespace", ""), labels.get(second, "")): {
                    _ms(t): v for t, v in zip(times.tolist(), values.tolist(), strict=True)
                }
                for labels, times, values in matrix
            }
        found: dict[DeploymentRef, float] = {}
        steps = math.floor((at - start) / step + 1e-9) + 1
        for item in pending:
            dep_key = (item.ref.namespace, item.ref.name)
            for i in range(steps):
                t = start + i * step
                if t < window[item.ref] or t > at:
                    continue
                if _complete_at(grids, dep_key, item, t):
                    found[item.ref] = t
                    break
        return found


def _complete_at(
    grids: Mapping[str, Mapping[tuple[str, str], Mapping[int, float]]], dep_key: tuple[str, str],
    item: _Pending, t: float,
) -> bool:
    ms = _ms(t)
    spec = grids["spec"].get(dep_key, {}).get(ms)
    updated = grids["updated"].get(dep_key, {}).get(ms)
    if spec is None or updated is None or updated < spec:
        return False
    generation = grids["generation"].get(dep_key, {}).get(ms)
    observed = grids["observed"].get(dep_key, {}).get(ms)
    if generation is not None and observed is not None and observed < generation:
        return False
    if grids["rs_spec"].get((item.ref.namespace, item.new_rs), {}).get(ms) is None:
        return False  # the new ReplicaSet did not exist yet
    old = sum(grids["rs_spec"].get((item.ref.namespace, rs), {}).get(ms, 0.0) for rs in item.old_rs)
    return old == 0


def _hash_of(replicaset: str) -> str:
    """A ReplicaSet's pod-template-hash from its name, `<deployment>-<hash>` (ReplicaSet names are not cut)."""
    return replicaset.rsplit("-", 1)[-1]


def _int(value: float | None) -> int:
    if value is None or not math.isfinite(value):
        return 0
    return round(value)


def _ms(t: float) -> int:
    """Times as integer milliseconds, the resolution of Prometheus timestamps, so grid lookups match exactly."""
    return round(t * 1000)
