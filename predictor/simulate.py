"""A small rollout simulator: Deployments whose pods are replaced one by one, with per-pod SLO metrics.

Used by `predictor demo` (through the in-memory adapters in `predictor.sources.simulated`) and by tests of the
engine. Each scenario is a release that is healthy or bad in one way; pausing freezes the rollout, undoing
brings the old pods back, exactly as the adapters for a real cluster would see it.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field, replace

import numpy as np

from predictor.domain import DeploymentRef, Observation, RolloutState, Scope

OLD_HASH = "5d8f7c6b9a"
NEW_HASH = "7b9c4d2e1f"

SCENARIO_KINDS = ("healthy", "error_regression", "latency_regression", "memory_leak", "cpu_saturation", "crash_loop")


@dataclass(frozen=True)
class PodBaseline:
    """Healthy per-pod levels of the default metric pack."""

    error_ratio: float = 0.004
    latency_p99: float = 0.18
    memory_limit_ratio: float = 0.48
    cpu_limit_ratio: float = 0.35
    restarts_5m: float = 0.0


@dataclass
class SimulatedRollout:
    """One Deployment rolling from the old to the new template, one pod every `step_seconds`."""

    ref: DeploymentRef
    kind: str
    start: float
    replicas: int = 8
    step_seconds: float = 60.0
    warmup_seconds: float = 45.0
    seed: int = 0
    baseline: PodBaseline = field(default_factory=PodBaseline)
    paused_at: float | None = None
    undone_at: float | None = None
    annotations: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in SCENARIO_KINDS:
            raise ValueError(f"unknown scenario kind {self.kind!r} (known: {', '.join(SCENARIO_KINDS)})")

    # Rollout progress -------------------------------------------------------------------------------------
    def new_pods(self, t: float) -> int:
        """Pods of the new revision at `t` (frozen while paused, zero once undone)."""
        if t < self.start or (self.undone_at is not None and t >= self.undone_at):
            return 0
        until = t if self.paused_at is None else min(t, self.paused_at)
        return min(self.replicas, 1 + int((until - self.start) // self.step_seconds))

    def old_pods(self, t: float) -> int:
        """Pods of the old revision at `t`: one goes as each new one comes."""
        return self.replicas - self.new_pods(t)

    def pod_started(self, index: int) -> float:
        return self.start + index * self.step_seconds

    def completed_at(self, t: float) -> float | None:
        if self.undone_at is not None and t >= self.undone_at:
            return self.undone_at
        if self.paused_at is not None or self.new_pods(t) < self.replicas:
            return None
        return self.start + (self.replicas - 1) * self.step_seconds

    def state(self, t: float) -> RolloutState:
        if self.undone_at is not None and t >= self.undone_at:
            return RolloutState(
                ref=self.ref, revision=3, new_hash=OLD_HASH, old_hashes=(), desired_replicas=self.replicas,
                updated_replicas=self.replicas, ready_new_replicas=self.replicas, old_replicas=0,
                started_at=self.undone_at, completed_at=self.undone_at, is_rollback=True, previous_revision=2,
                annotations=dict(self.annotations),
            )
        new = self.new_pods(t)
        return RolloutState(
            ref=self.ref, revision=2, new_hash=NEW_HASH, old_hashes=(OLD_HASH,), desired_replicas=self.replicas,
            updated_replicas=new, ready_new_replicas=new, old_replicas=self.old_pods(t), started_at=self.start,
            completed_at=self.completed_at(t), paused=self.paused_at is not None, previous_revision=1,
            annotations=dict(self.annotations),
        )

    # Metrics ----------------------------------------------------------------------------------------------
    def pod_value(self, metric: str, new: bool, age: float, t: float, pod: int) -> float:
        """One pod's value at `t`; `age` is seconds since the pod started. Noise is a pure function of inputs."""
        rng = np.random.default_rng([self.seed, pod, int(t), zlib.crc32(metric.encode()) % 1000, int(new)])
        base = getattr(self.baseline, metric)
        noise = rng.normal(0.0, 1.0)
        value = base * (1.0 + 0.08 * noise) if base else 0.0
        if metric == "latency_p99" and new and age < self.warmup_seconds:
            value += 0.25 * (1.0 - age / self.warmup_seconds)  # caches and JIT warming up
        if not new:
            return max(value, 0.0)
        minutes = age / 60.0
        if self.kind == "error_regression" and metric == "error_ratio":
            value = 0.11 * (1.0 + 0.1 * noise)
        elif self.kind == "latency_regression" and metric == "latency_p99":
            value = 0.72 * (1.0 + 0.05 * noise)
        elif self.kind == "memory_leak" and metric == "memory_limit_ratio":
            value = base + 0.045 * minutes + 0.005 * noise
        elif self.kind == "cpu_saturation" and metric == "cpu_limit_ratio":
            value = min(1.0, base + 0.09 * minutes + 0.01 * noise)
        elif self.kind == "crash_loop" and metric == "restarts_5m":
            value = min(age, 300.0) / 60.0
        return max(value, 0.0)

    def scope_value(self, metric: str, scope: Scope, t: float) -> tuple[float | None, int]:
        """The metric over a scope's pods: mean for ratios and latencies (equal traffic), max for saturation."""
        new = self.new_pods(t)
        pods: list[float] = []
        if scope in (Scope.NEW, Scope.DEPLOYMENT):
            pods += [self.pod_value(metric, True, t - self.pod_started(i), t, i) for i in range(new)]
        if scope in (Scope.OLD, Scope.DEPLOYMENT):
            pods += [self.pod_value(metric, False, 3600.0, t, 100 + i) for i in range(self.old_pods(t))]
        if not pods:
            return None, 0
        if metric in ("error_ratio", "latency_p99"):
            return float(np.mean(pods)), len(pods)
        return float(np.max(pods)), len(pods)

    def observations(self, metric: str, t: float) -> list[Observation]:
        result = []
        for scope in Scope:
            value, pods = self.scope_value(metric, scope, t)
            error = None if value is not None else f"{metric}: no {scope} pods"
            result.append(Observation(self.ref, metric, scope, t, value, error=error, pods=pods))
        return result

    def breach_time(self, metric: str, threshold: float, until: float, step: float = 5.0) -> float | None:
        """When the Deployment-level value would first reach `threshold` had nobody intervened."""
        ghost = replace(self, paused_at=None, undone_at=None, annotations={})
        t = self.start
        while t <= until:
            value, _ = ghost.scope_value(metric, Scope.DEPLOYMENT, t)
            if value is not None and math.isfinite(value) and value >= threshold:
                return t
            t += step
        return None
