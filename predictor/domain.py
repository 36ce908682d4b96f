"""Plain data shared by every layer: rollouts, observations, assessments and decisions.

Nothing here does I/O or imports another module of the package. Times are POSIX seconds (float, UTC).
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

ANNOTATION_PREFIX = "predictor.io/"
"""Annotations the actuator writes on a Deployment and the rollout sources read back after a restart."""
ANNOTATION_ACTED_REVISION = ANNOTATION_PREFIX + "acted-revision"
ANNOTATION_ACTION = ANNOTATION_PREFIX + "action"
ANNOTATION_ACTED_AT = ANNOTATION_PREFIX + "acted-at"
ANNOTATION_REASON = ANNOTATION_PREFIX + "reason"
ANNOTATION_RISK = ANNOTATION_PREFIX + "risk"
ANNOTATION_PREDICTED_BREACH = ANNOTATION_PREFIX + "predicted-breach"
ANNOTATION_DRY_RUN = ANNOTATION_PREFIX + "dry-run"
ANNOTATION_STATUS_URL = ANNOTATION_PREFIX + "status-url"
"""The rollout's status page (`server.external_url`), written with the others when that is set."""
ANNOTATION_ENABLED = ANNOTATION_PREFIX + "enabled"
"""Set by users: "false" opts a Deployment out (see `predictor.safety`)."""
ANNOTATION_POLICY_ACTION = ANNOTATION_PREFIX + "policy.action"
"""Set by users: this Deployment's `policy.action` (pause, undo or alert)."""
ANNOTATION_THRESHOLD_PREFIX = ANNOTATION_PREFIX + "threshold."
"""Set by users: `predictor.io/threshold.<metric>` is this Deployment's threshold of that metric."""
ANNOTATION_METRIC = ANNOTATION_PREFIX + "metric"
"""The metric whose predicted breach led to the action: the `metric` label of its alert, re-derived after a restart."""
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
POD_TEMPLATE_HASH_LABEL = "pod-template-hash"


def rollout_page_path(ref: DeploymentRef) -> str:
    """The path of a rollout's status page, relative to the daemon's root: `rollouts/<namespace>/<deployment>`."""
    return f"rollouts/{quote(ref.namespace, safe='')}/{quote(ref.name, safe='')}"


class Direction(enum.StrEnum):
    """Which side of the threshold is bad."""

    ABOVE = "above"
    BELOW = "below"


class Scope(enum.StrEnum):
    """Which pods of a Deployment an observation covers."""

    DEPLOYMENT = "deployment"
    NEW = "new"
    OLD = "old"


class Action(enum.StrEnum):
    """What the policy asks for. Ordered by severity in ACTION_SEVERITY."""

    NONE = "none"
    ALERT = "alert"
    PAUSE = "pause"
    UNDO = "undo"


ACTION_SEVERITY: Mapping[Action, int] = {Action.NONE: 0, Action.ALERT: 1, Action.PAUSE: 2, Action.UNDO: 3}


@dataclass(frozen=True, order=True)
class DeploymentRef:
    """The workload a rollout belongs to. `kind` names it in alerts' labels: `deployment` (Kubernetes), `service`
    (a Docker Swarm service, whose namespace is its stack's, empty outside a stack), `rollout` (Argo Rollouts)."""

    namespace: str
    name: str
    kind: str = "deployment"

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class PodState:
    """One pod of a tracked ReplicaSet as the rollout source last saw it (live: the API's Pod; backtest:
    kube-state-metrics' `kube_pod_*` series)."""

    name: str
    template_hash: str
    """The pod's `pod-template-hash` label: which ReplicaSet, hence which revision, it runs."""
    ready: bool = False
    restarts: int = 0
    """Container restarts, summed over the pod's containers."""
    waiting_reason: str | None = None
    """A container's `state.waiting.reason` (`CrashLoopBackOff`, `ImagePullBackOff`...), None when none waits."""
    created_at: float | None = None


@dataclass(frozen=True)
class RolloutState:
    """What a rollout source knows of one Deployment at one moment.

    `new_hash` is the pod-template-hash of the ReplicaSet of the current revision; `old_hashes` those of the
    older ReplicaSets that still run pods (or ran them while the rollout started). Pods belong to a revision by
    their `pod-template-hash` label (`pods`, when the source knows them); where it does not, by their name,
    `<deployment>-<pod-template-hash>-<suffix>` (a name cut at 58 characters may lose the hash).
    """

    ref: DeploymentRef
    revision: int
    new_hash: str | None
    old_hashes: tuple[str, ...]
    desired_replicas: int
    updated_replicas: int
    ready_new_replicas: int
    old_replicas: int
    started_at: float
    """When the current revision's ReplicaSet was created (the rollout's start)."""
    completed_at: float | None = None
    """When every desired replica ran the new revision and no old pod was left; None while rolling out."""
    paused: bool = False
    progress_deadline_exceeded: bool = False
    is_rollback: bool = False
    """The current ReplicaSet existed before some older-revision ReplicaSet: a rollback to a known template."""
    previous_revision: int | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    pods: tuple[PodState, ...] = ()
    """The pods of the new and old ReplicaSets, known by their labels; empty when the source cannot tell."""
    ready_allowance_seconds: float | None = None
    """How long a new pod may take to become ready, from the pod template (`minReadySeconds` and the probes'
    delays and failure thresholds); None when the source cannot tell."""

    @property
    def progress(self) -> float:
        """Share of desired replicas that run the new revision, 0..1."""
        if self.desired_replicas <= 0:
            return 1.0
        return min(1.0, self.updated_replicas / self.desired_replicas)

    @property
    def new_pods(self) -> tuple[PodState, ...]:
        return tuple(p for p in self.pods if p.template_hash == self.new_hash)

    @property
    def old_pods(self) -> tuple[PodState, ...]:
        old = set(self.old_hashes)
        return tuple(p for p in self.pods if p.template_hash in old)

    @property
    def acted_revision(self) -> int | None:
        """The revision this daemon already acted on, as recorded on the Deployment (survives restarts)."""
        raw = self.annotations.get(ANNOTATION_ACTED_REVISION)
        try:
            return int(raw) if raw is not None else None
        except ValueError:
            return None


@dataclass(frozen=True)
class Observation:
    """One metric value for one scope of one Deployment at one time; value None means unknown."""

    ref: DeploymentRef
    metric: str
    scope: Scope
    time: float
    value: float | None
    error: str | None = None
    failed: bool = False
    """The source could not answer (query refused, timeout, unreachable, malformed response), as opposed to an
    answer without a usable value (no series, NaN, too little traffic): counted as a query error."""
    pods: int = 0
    """How many pods contributed; 0 when unknown."""
    traffic: float | None = None
    """The scope's traffic when the metric is a ratio: its denominator per pod, the median over the scope's pods
    (requests/s per pod for an error ratio; a median, because a pod younger than its rate window, or one whose
    series is gone, under-counts while pods are replaced), known even when too low for the ratio itself. The
    scorer tells a rise that follows the load from one that does not."""

    @property
    def known(self) -> bool:
        return self.value is not None and math.isfinite(self.value)


@dataclass(frozen=True)
class ForecastBand:
    """Where a scorer forecasts one scope of a metric: from `level` at `start` to `mean` at `until`, with the 95 %
    band `low`..`high` there (what the status page draws), and `path`, points (time, mean, low, high) on the way."""

    scope: Scope
    start: float
    level: float
    until: float
    mean: float
    low: float
    high: float
    path: tuple[tuple[float, float, float, float], ...] = ()


@dataclass(frozen=True)
class Assessment:
    """A scorer's view of one metric of one rollout: a risk in 0..1 and why."""

    metric: str
    risk: float
    value: float | None
    threshold: float
    direction: Direction
    predicted_breach: float | None = None
    """Time the threshold is predicted to be crossed (now if already crossed); None when not predicted."""
    unknown: bool = False
    """No usable data this tick: the scorer abstained."""
    reason: str = ""
    building: bool = False
    """A trend still heads for the threshold (however far the breach): the revision stays watched beyond `bake`."""
    decisive: bool = False
    """The evidence is overwhelming on its own (many standard errors and far beyond the threshold): the policy
    pauses on this first tick instead of waiting `consecutive_ticks`; an undo still needs them."""
    forecast: ForecastBand | None = None
    """The forecast behind the risk, where the scorer has one (the forecast scorer's local trend)."""


@dataclass(frozen=True)
class Alert:
    """An alert the daemon keeps sending to Alertmanager while active, then resolves."""

    name: str
    ref: DeploymentRef
    revision: int
    severity: str
    metric: str
    summary: str
    description: str
    starts_at: float
    predicted_breach: float | None = None
    risk: float = 0.0

    @property
    def key(self) -> tuple[str, str, str, int, str]:
        return (self.name, self.ref.namespace, self.ref.name, self.revision, self.metric)


@dataclass(frozen=True)
class Decision:
    """What the policy decided for one rollout on one tick, with the figures behind it."""

    ref: DeploymentRef
    revision: int
    time: float
    action: Action
    risk: float
    reason: str
    metric: str | None = None
    predicted_breach: float | None = None
    dry_run: bool = False
    alerts: tuple[Alert, ...] = ()
    """Alerts that are active after this decision (re-sent every tick while active)."""
    resolved: tuple[Alert, ...] = ()
    """Alerts that stopped being active with this decision."""


@dataclass(frozen=True)
class DryRunRecord:
    """What a dry run would have done, as `predictor.io/dry-run` records it on the Deployment: a restarted daemon
    reads it back, so it repeats no Event, and the action budget counts it."""

    action: Action
    revision: int
    at: str
    """RFC 3339 UTC, as written."""

    def __str__(self) -> str:
        return f"would {self.action.value} revision {self.revision} at {self.at}"


_DRY_RUN_RECORD = re.compile(r"would (alert|pause|undo) revision (\d{1,18}) at (\S+)")


def parse_dry_run_record(text: str | None) -> DryRunRecord | None:
    """The record `str(DryRunRecord)` wrote, or None (absent, or "true"/"false" as a live action writes)."""
    match = _DRY_RUN_RECORD.fullmatch(text.strip()) if text else None
    return DryRunRecord(Action(match.group(1)), int(match.group(2)), match.group(3)) if match else None
