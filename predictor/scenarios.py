"""Rollout scenarios as the raw series a real cluster would have in Prometheus: kube-state-metrics, cAdvisor, the app.

Called by the decision benchmark (`benchmarks/decisions.py`) and the integration test of `predictor backtest`, which
backfill these series into a real Prometheus and replay the decision loop over them. Pure: no I/O, no clock; all
randomness comes from the seeds given.

`scenario_series(rollouts, start, end)` samples `SimulatedRollout`s (or the `ScenarioRollout`s of this module, which
add a slow burn, random magnitudes and the confounders of healthy releases) every scrape, keyed
`name{label="value",...}`, so that the default metric pack's queries give back (about) `pod_value(...)`:
1. `http_requests_total{namespace,pod,code}`: integer counters whose 5xx share is the pod's error ratio;
2. `http_request_duration_seconds_bucket{namespace,pod,le}`: integer counters shaped so that PromQL's
   `histogram_quantile(0.99, ...)` returns the pod's p99 (exactly, up to the rounding of counts; `bucket_shares`);
3. cAdvisor's `container_memory_working_set_bytes` and `container_cpu_usage_seconds_total` against
   kube-state-metrics' `kube_pod_container_resource_limits`, and `kube_pod_container_status_restarts_total`;
4. the kube-state-metrics v2 series `predictor.rollouts.replay` reads: Deployments, ReplicaSets (owner, replicas,
   creation, the revision annotation), pods (owner, creation, `kube_pod_labels` with the pod-template-hash,
   `kube_pod_status_ready`, and `kube_pod_container_status_waiting_reason{reason="CrashLoopBackOff"}` while a
   crash-looping container waits for its restart).
A pod's series exist only while the pod does (its samples stop when it is removed; a backfill has no staleness
markers, so Prometheus keeps showing a removed pod's last gauge sample for its 5-minute lookback).
"""

from __future__ import annotations

import hashlib
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from predictor.domain import DeploymentRef, RolloutState
from predictor.simulate import NEW_HASH, OLD_HASH, SCENARIO_KINDS, PodBaseline, SimulatedRollout

SeriesMap = dict[str, list[tuple[float, float]]]

SCRAPE_SECONDS = 15.0
CONTAINER = "app"
MEMORY_LIMIT_BYTES = 512 * 1024 * 1024
CPU_LIMIT_CORES = 1.0
REQUESTS_PER_SECOND = 20.0
"""Requests per second per pod at normal load (the plain simulator has no notion of traffic)."""
BUCKETS: tuple[float, ...] = (0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, math.inf)
"""Upper bounds of the latency histogram (seconds), the SLO threshold 0.5 s among them."""
OLD_POD_AGE_SECONDS = 3600.0
"""The age the simulator gives old pods; also their uptime before the data begins (counters start from it)."""
PROGRESS_DEADLINE_SECONDS = 600.0
"""A Deployment whose new pods do not change for this long gets Progressing=False (Kubernetes' default)."""
RESTART_WINDOW_SECONDS = 300.0
"""`restarts_5m` is the increase of the restart counter over this window."""
OLD_RS_AGE_SECONDS = 7 * 86400.0
"""How long before the data the old ReplicaSet was created."""

BAD_KINDS = ("error_regression", "latency_regression", "memory_leak", "cpu_saturation", "crash_loop", "slow_burn",
             "late_leak", "mild_regression")
"""Benchmark labels of bad releases; `late_leak` is a memory leak after a quick rollout, `mild_regression` an error
or latency regression below the threshold."""
CONFOUNDERS = ("warmup", "cache_plateau", "traffic_surge", "noisy_old_pod", "scrape_gaps", "counter_resets",
               "seasonal")
HEALTHY_KINDS = tuple(f"healthy_{c}" for c in CONFOUNDERS)
"""Benchmark labels of healthy releases: `kind` stays 'healthy', the label names the confounder."""
KINDS = (*SCENARIO_KINDS, "slow_burn")
"""What `ScenarioRollout.kind` accepts: the simulator's kinds plus a slow burn."""
NOISE_SHAPES = ("gaussian", "heavy_tailed", "bursty")
"""The scatter of a pod's values around its level: normal; Student's t with 3 degrees of freedom (unit variance);
normal, four times as wide in bursts (about one 2-minute slot in ten)."""
SEASON_SHAPES = ("daily", "steps")
SEASON_LATENCY_GAIN = 0.3
SEASON_ERROR_GAIN = 0.002
"""Without a surge, extra load raises p99 latency by this share of the baseline and the error ratio by this much,
per unit of extra load."""

SCRAPE_CHOICES = (10.0, 15.0, 20.0, 30.0, 60.0)
RATE_WINDOWS = ("1m", "2m", "3m", "4m", "5m")
SURGE_CHOICES = ("0", "1", "25%", "50%", "100%")
SURGE_WEIGHTS = (0.15, 0.25, 0.35, 0.1, 0.15)
UNAVAILABLE_CHOICES = ("0", "1", "25%", "100%")
UNAVAILABLE_WEIGHTS = (0.3, 0.25, 0.35, 0.1)
"""What `random_scenario` draws a cluster's scrape interval, rate window and RollingUpdate strategy from (25 % and
25 % is Kubernetes' default)."""

_K8S_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
"""The characters Kubernetes uses for pod-template-hashes and pod name suffixes (no vowels, no 0/1/3)."""
_P99_TO_MEDIAN = 4.0
_SIGMA = math.log(_P99_TO_MEDIAN) / 2.3263478740408408
"""Per-pod latency is log-normal with p99 / median = 4 outside the bucket that holds the p99."""


def series_key(name: str, **labels: str) -> str:
    """series_key('up', job='x') -> 'up{job="x"}', label values escaped as the exposition formats want."""
    if not labels:
        return name
    inner = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
    return f"{name}{{{inner}}}"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def le_label(bound: float) -> str:
    """A bucket bound as client libraries write it: '0.25', '1', '+Inf'."""
    return "+Inf" if math.isinf(bound) else f"{bound:g}"


# --- confounders -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CachePlateau:
    """New pods' memory fills from the baseline up to `plateau` (share of the limit), time constant `tau_seconds`."""

    plateau: float = 0.75
    tau_seconds: float = 180.0


@dataclass(frozen=True)
class TrafficSurge:
    """From `at` for `seconds`, every pod (old and new alike) gets `factor` times its traffic.

    The load ramps up and down over `ramp_seconds`. CPU grows with the load (capped at the limit), p99 latency by
    `latency_gain` times the baseline per unit of extra load, the error ratio by `error_gain` per unit.
    """

    at: float
    seconds: float = 300.0
    factor: float = 2.5
    ramp_seconds: float = 60.0
    latency_gain: float = 0.5
    error_gain: float = 0.005


@dataclass(frozen=True)
class NoisyPod:
    """Old pod `index` is noisy: at each scrape, with `probability`, its error ratio and p99 jump to a random
    level in the given ranges; otherwise its values are three times as noisy as its siblings'."""

    index: int = 0
    probability: float = 0.15
    error_ratio: tuple[float, float] = (0.02, 0.12)
    latency_p99: tuple[float, float] = (0.3, 0.9)


@dataclass(frozen=True)
class ScrapeGap:
    """Scrapes missed in [start, end).

    `what` is 'app' (the app's /metrics: the http series), 'kubelet' (cAdvisor's series) or 'all' (every series of
    the Deployment, kube-state-metrics included: Prometheus itself missed them). `pod` (new?, index) narrows the
    gap to one pod; None means every pod.
    """

    start: float
    end: float
    what: str = "app"
    pod: tuple[bool, int] | None = None

    def covers(self, t: float, what: str, new: bool | None = None, index: int | None = None) -> bool:
        if not self.start <= t < self.end:
            return False
        if self.what != "all" and self.what != what:
            return False
        if self.pod is None:
            return True
        return new is not None and self.pod == (new, index)  # a one-pod gap spares Deployment-level series


@dataclass(frozen=True)
class CounterReset:
    """At `at` the app container of pod (new?, index) restarts once: its counters start again from zero."""

    at: float
    new: bool
    index: int


@dataclass(frozen=True)
class Season:
    """Load felt by every pod, old and new alike, on top of any surge.

    `shape` 'daily': a sine of one day, 1 + `amplitude` * cos(2 pi (t - `peak_at`) / 1 day); 'steps': the factor of
    the last of `steps` (time, factor) at or before t, 1 before the first (a batch job, a campaign, a failover).
    """

    shape: str
    amplitude: float = 0.0
    peak_at: float = 0.0
    steps: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        if self.shape not in SEASON_SHAPES:
            raise ValueError(f"season shape: expected one of {', '.join(SEASON_SHAPES)}, got {self.shape!r}")

    def factor(self, t: float) -> float:
        if self.shape == "daily":
            return 1.0 + self.amplitude * math.cos(2.0 * math.pi * (t - self.peak_at) / 86400.0)
        factor = 1.0
        for at, value in self.steps:
            if at <= t:
                factor = value
        return factor


# --- the scenario rollout --------------------------------------------------------------------------------------


@dataclass
class ScenarioRollout(SimulatedRollout):
    """A `SimulatedRollout` with a slow burn, tunable magnitudes, traffic and the confounders of healthy releases.

    With its defaults it behaves exactly like `SimulatedRollout` (same `pod_value`s, same progress). `magnitude`
    is the kind's strength: error_regression the new pods' error ratio (default 0.11), latency_regression their
    p99 in seconds (0.72), memory_leak and cpu_saturation the growth of the limit share per minute of pod age
    (0.045, 0.09), slow_burn the growth of the error ratio per minute of pod age (0.004). `crash_run_seconds` None
    gives the simulator's crash loop (one restart a minute, the rollout goes on); a number gives the kubelet's
    (the container runs that long, crashes, waits 10 s, 20 s, 40 s ... at most 300 s) and a stalled rollout: the
    crashing new pods never become ready, so the controller stops at max(1, replicas // 4) of them.
    """

    label: str = ""
    """The benchmark's name of the scenario (e.g. 'healthy_traffic_surge'); the kind when empty."""
    requests_per_second: float = REQUESTS_PER_SECOND
    magnitude: float | None = None
    warmup_latency: float = 0.25
    warmup_cpu: float = 0.0
    warmup_errors: float = 0.0
    crash_run_seconds: float | None = None
    cache: CachePlateau | None = None
    surge: TrafficSurge | None = None
    noisy: NoisyPod | None = None
    gaps: tuple[ScrapeGap, ...] = ()
    resets: tuple[CounterReset, ...] = ()
    old_hash: str = OLD_HASH
    new_hash: str = NEW_HASH
    memory_limit_bytes: float = float(MEMORY_LIMIT_BYTES)
    cpu_limit_cores: float = CPU_LIMIT_CORES
    count_noise: bool = False
    max_surge: int | None = None
    """With `max_unavailable`, the pods of the Deployment's RollingUpdate strategy (resolved from percentages as
    Kubernetes does): the rollout goes in waves of max_surge + max_unavailable new pods, one wave every
    `step_seconds` (the new pods' readiness delay), the old pods of a wave going as it starts (max_unavailable) or
    once its new pods are Ready (the surge). None: the simulator's one pod every `step_seconds`."""
    max_unavailable: int | None = None
    readiness_seconds: float = 0.0
    """How long after it starts a new pod becomes Ready and gets traffic."""
    noise_shape: str = "gaussian"
    season: Season | None = None
    scrape_seconds: float = SCRAPE_SECONDS
    """How often the cluster's Prometheus scrapes this Deployment (`scenario_series` callers may pass it on)."""
    rate_window: str = "1m"
    """The rate window of the cluster's SLO queries (what the benchmark's config uses for this scenario)."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown scenario kind {self.kind!r} (known: {', '.join(KINDS)})")
        if self.replicas < 1 or self.step_seconds <= 0 or self.warmup_seconds <= 0:
            raise ValueError(f"replicas, step_seconds, warmup_seconds: expected positive values, got {self.replicas},"
                             f" {self.step_seconds}, {self.warmup_seconds}")
        if self.requests_per_second < 0:
            raise ValueError(f"requests_per_second: expected >= 0, got {self.requests_per_second}")
        if self.old_hash == self.new_hash:
            raise ValueError(f"old_hash and new_hash must differ, got {self.old_hash!r} twice")
        if (self.max_surge is None) != (self.max_unavailable is None):
            raise ValueError(f"max_surge and max_unavailable: give both or neither, got {self.max_surge}, "
                             f"{self.max_unavailable}")
        if self.max_surge is not None and (min(self.max_surge, self.max_unavailable or 0) < 0
                                           or self.max_surge + (self.max_unavailable or 0) < 1):
            raise ValueError(f"max_surge and max_unavailable: expected >= 0 and not both 0, got {self.max_surge}, "
                             f"{self.max_unavailable}")
        if self.noise_shape not in NOISE_SHAPES:
            raise ValueError(f"noise_shape: expected one of {', '.join(NOISE_SHAPES)}, got {self.noise_shape!r}")
        if self.readiness_seconds < 0 or self.scrape_seconds <= 0:
            raise ValueError(f"readiness_seconds >= 0 and scrape_seconds > 0 expected, got {self.readiness_seconds}, "
                             f"{self.scrape_seconds}")

    @property
    def name(self) -> str:
        return self.label or self.kind

    @property
    def stalls(self) -> bool:
        """Crashing new pods never become ready, so the rollout stops (the kubelet's crash loop)."""
        return self.kind == "crash_loop" and self.crash_run_seconds is not None

    @property
    def stall_pods(self) -> int:
        """New pods of a stalled rollout: its first wave (max(1, replicas // 4) without a strategy)."""
        if self.max_surge is None:
            return max(1, self.replicas // 4)
        return self.wave_pods

    @property
    def wave_pods(self) -> int:
        """New pods per wave: max_surge + max_unavailable (1 without a strategy), at most every replica."""
        if self.max_surge is None:
            return 1
        return max(1, min(self.replicas, self.max_surge + (self.max_unavailable or 0)))

    # Progress -----------------------------------------------------------------------------------------------
    def _wave(self, t: float) -> int:
        until = t if self.paused_at is None else min(t, self.paused_at)
        return 0 if self.stalls else math.floor((until - self.start + 1e-3) / self.step_seconds)  # to the ms

    def new_pods(self, t: float) -> int:
        if self.max_surge is None:
            count = super().new_pods(t)
            return min(count, self.stall_pods) if self.stalls else count
        if t < self.start or (self.undone_at is not None and t >= self.undone_at):
            return 0
        return min(self.replicas, self.wave_pods * (self._wave(t) + 1))

    def old_pods(self, t: float) -> int:
        if self.max_surge is None or t < self.start or (self.undone_at is not None and t >= self.undone_at):
            return super().old_pods(t) if self.max_surge is None else self.replicas
        remaining = self.replicas - min(self.replicas, self.wave_pods * self._wave(t))
        return remaining - min(self.max_unavailable or 0, remaining)

    def pod_started(self, index: int) -> float:
        return self.start + (index // self.wave_pods) * self.step_seconds

    def completed_at(self, t: float) -> float | None:
        if self.max_surge is None or (self.undone_at is not None and t >= self.undone_at):
            return super().completed_at(t)
        done = self.start + math.ceil(self.replicas / self.wave_pods) * self.step_seconds
        if self.paused_at is not None or self.stalls or t < done:
            return None
        return done

    def ready(self, new: bool, index: int, t: float) -> bool:
        """Whether the pod receives traffic: a new pod once its readiness delay passed; a crash-looping one never."""
        if not new:
            return True
        return not self.stalls and t - self.pod_started(index) >= self.readiness_seconds

    def state(self, t: float) -> RolloutState:
        state = super().state(t)
        if state.new_hash == OLD_HASH:  # undone: the old template is the current one
            return replace(state, new_hash=self.old_hash)
        ready = sum(1 for i in range(self.new_pods(t)) if self.ready(True, i, t))
        return replace(state, new_hash=self.new_hash, old_hashes=(self.old_hash,), ready_new_replicas=ready,
                       completed_at=self.completed_at(t))

    # Load ---------------------------------------------------------------------------------------------------
    def load(self, t: float) -> float:
        """Traffic relative to normal: 1 except during a surge or as the season goes."""
        season = 1.0 if self.season is None else self.season.factor(t)
        surge = self.surge
        if surge is None:
            return season
        into = t - surge.at
        if into < 0 or into > surge.seconds:
            return season
        ramp = min(1.0, into / surge.ramp_seconds, (surge.seconds - into) / surge.ramp_seconds)
        return season * (1.0 + (surge.factor - 1.0) * max(ramp, 0.0))

    def traffic(self, metric: str, pods: int, t: float) -> float | None:
        """Requests/s of `pods` pods for the error ratio (its denominator): every pod serves the same share."""
        if metric != "error_ratio" or pods == 0:
            return None
        return self.requests_per_second * self.load(t) * pods

    # Restarts -----------------------------------------------------------------------------------------------
    def crash_waiting(self, new: bool, index: int, t: float) -> bool:
        """Whether the container waits in CrashLoopBackOff at `t` (the kubelet's crash loop, between a crash and
        the restart its back-off allows)."""
        if not (new and self.stalls) or self.crash_run_seconds is None:
            return False
        age = t - self.pod_started(index)
        return age >= 0 and _crash_waiting(age, self.crash_run_seconds)

    def restart_count(self, new: bool, index: int, t: float) -> int:
        """The container's restart counter at `t` (crash loop and counter resets)."""
        count = 0
        if new and self.kind == "crash_loop":
            age = t - self.pod_started(index)
            if age >= 0:
                count += _crash_restarts(age, self.crash_run_seconds)
        count += sum(1 for r in self.resets if r.new == new and r.index == index and r.at <= t)
        return count

    # Metrics ------------------------------------------------------------------------------------------------
    def pod_value(self, metric: str, new: bool, age: float, t: float, pod: int) -> float:
        """One pod's value at `t`, as `SimulatedRollout.pod_value` plus this class's kinds and confounders."""
        index = pod if new else pod - 100
        if metric == "restarts_5m" and (self.resets or self.stalls):
            window = self.restart_count(new, index, t) - self.restart_count(new, index, t - RESTART_WINDOW_SECONDS)
            return float(window)
        rng = _noise_rng(self.seed, pod, t, metric, new)
        base = getattr(self.baseline, metric)
        # A working set does not jump as a request rate does: memory keeps the gaussian scatter whatever the shape.
        noise = float(rng.normal(0.0, 1.0)) if metric == "memory_limit_ratio" else self._noise(rng, pod, t, new)
        value = base * (1.0 + 0.08 * noise) if base else 0.0
        if new and age < self.warmup_seconds:
            fade = 1.0 - age / self.warmup_seconds
            value += {"latency_p99": self.warmup_latency, "cpu_limit_ratio": self.warmup_cpu,
                      "error_ratio": self.warmup_errors}.get(metric, 0.0) * fade
        load = self.load(t)
        if load != 1.0:
            extra = load - 1.0
            latency_gain, error_gain = ((self.surge.latency_gain, self.surge.error_gain) if self.surge is not None
                                        else (SEASON_LATENCY_GAIN, SEASON_ERROR_GAIN))
            if metric == "latency_p99":
                value += base * latency_gain * extra
            elif metric == "cpu_limit_ratio":
                value = min(1.0, value * load)
            elif metric == "error_ratio":
                value += error_gain * extra
        if self.noisy is not None and not new and index == self.noisy.index:
            value = self._noisy_value(metric, value, base, noise, rng)
        if not new:
            return max(value, 0.0)
        minutes = age / 60.0
        if self.cache is not None and metric == "memory_limit_ratio":
            filled = 1.0 - math.exp(-max(age, 0.0) / self.cache.tau_seconds)
            value = base + (self.cache.plateau - base) * filled + 0.005 * noise
        if self.kind == "error_regression" and metric == "error_ratio":
            value = self._magnitude(0.11) * (1.0 + 0.1 * noise)
        elif self.kind == "latency_regression" and metric == "latency_p99":
            value = self._magnitude(0.72) * (1.0 + 0.05 * noise)
        elif self.kind == "memory_leak" and metric == "memory_limit_ratio":
            value = base + self._magnitude(0.045) * minutes + 0.005 * noise
        elif self.kind == "cpu_saturation" and metric == "cpu_limit_ratio":
            value = min(1.0, base + self._magnitude(0.09) * minutes + 0.01 * noise)
        elif self.kind == "crash_loop" and metric == "restarts_5m":
            value = min(age, RESTART_WINDOW_SECONDS) / 60.0
        elif self.kind == "slow_burn" and metric == "error_ratio":
            value = base * (1.0 + 0.08 * noise) + self._magnitude(0.004) * minutes
        return max(value, 0.0)

    def _noise(self, rng: np.random.Generator, pod: int, t: float, new: bool) -> float:
        """One unit-variance draw of the rollout's noise shape (a pure function of the inputs, as all noise here)."""
        if self.noise_shape == "heavy_tailed":
            return float(rng.standard_t(3)) / math.sqrt(3.0)
        noise = float(rng.normal(0.0, 1.0))
        slot = f"{self.seed}:{pod}:{int(new)}:{int(t // 120)}"
        if self.noise_shape == "bursty" and zlib.crc32(slot.encode()) % 10 == 0:
            return 4.0 * noise
        return noise

    def _magnitude(self, default: float) -> float:
        return default if self.magnitude is None else self.magnitude

    def _noisy_value(self, metric: str, value: float, base: float, noise: float, rng: np.random.Generator) -> float:
        noisy = self.noisy
        assert noisy is not None
        ranges = {"error_ratio": noisy.error_ratio, "latency_p99": noisy.latency_p99}
        if metric not in ranges:
            return value
        if rng.random() < noisy.probability:
            low, high = ranges[metric]
            return low + (high - low) * float(rng.random())
        return value + base * 0.16 * noise  # 0.08 + 0.16 = three times the siblings' noise


def _noise_rng(seed: int, pod: int, t: float, metric: str, new: bool) -> np.random.Generator:
    """The simulator's noise stream (`SimulatedRollout.pod_value`): a pure function of its inputs."""
    return np.random.default_rng([seed, pod, int(t), zlib.crc32(metric.encode()) % 1000, int(new)])


def _crash_waiting(age: float, run_seconds: float) -> bool:
    """Whether a container that crashes `run_seconds` after each start waits for its restart `age` seconds in."""
    t, backoff = 0.0, 10.0
    while True:
        crashed = t + run_seconds
        if age < crashed:
            return False
        t = crashed + backoff
        if age < t:
            return True
        backoff = min(backoff * 2.0, 300.0)


def _crash_restarts(age: float, run_seconds: float | None) -> int:
    """Restarts of a container that crashes `run_seconds` after each start, `age` seconds after the pod started."""
    if run_seconds is None:
        return int(age // 60.0)
    count, t, backoff = 0, 0.0, 10.0
    while True:
        t += run_seconds + backoff
        if t > age:
            return count
        count += 1
        backoff = min(backoff * 2.0, 300.0)


# --- histogram shape -------------------------------------------------------------------------------------------


def _lognormal_cdf(x: float, median: float) -> float:
    if x <= 0:
        return 0.0
    return 0.5 * math.erfc(-math.log(x / median) / (_SIGMA * math.sqrt(2.0)))


def bucket_shares(p99: float, bounds: Sequence[float] = BUCKETS) -> list[float]:
    """Cumulative share of requests at or below each bound, for a pod whose p99 latency is `p99` seconds.

    Within the bucket (lo, hi] that holds the p99 the cumulative share is the line of slope 0.01 / (hi - lo)
    through (p99, 0.99), so PromQL's linear interpolation returns `p99`; and since every pod whose p99 falls in
    the same bucket gets the same slope, the quantile of their summed buckets is the traffic-weighted mean of
    their p99s. Below and above that bucket the shares follow a log-normal with p99 / median = 4. A p99 beyond
    the largest finite bound is clamped just below it (a histogram cannot say more).
    """
    finite = [b for b in bounds if math.isfinite(b)]
    if not finite or not math.isinf(bounds[-1]) or list(bounds[:-1]) != sorted(finite):
        raise ValueError(f"bounds: expected increasing finite bounds then +Inf, got {bounds!r}")
    p99 = min(max(p99, 1e-6), finite[-1] * 0.999)
    hi_index = next(i for i, b in enumerate(finite) if b >= p99)
    hi = finite[hi_index]
    lo = finite[hi_index - 1] if hi_index > 0 else 0.0
    median = p99 / _P99_TO_MEDIAN
    if lo == 0.0:
        # PromQL interpolates the first bucket from (0, 0): the line must go through the origin.
        at_hi = min(1.0, 0.99 * hi / p99)
        at_lo = 0.0
    else:
        slope = 0.01 / (hi - lo)
        at_lo = 0.99 - slope * (p99 - lo)
        at_hi = 0.99 + slope * (hi - p99)
    lo_cdf, hi_cdf = _lognormal_cdf(lo, median), _lognormal_cdf(hi, median)
    shares = []
    for i, bound in enumerate(finite):
        if i < hi_index - 1:
            shares.append(at_lo * _lognormal_cdf(bound, median) / lo_cdf if lo_cdf > 0 else 0.0)
        elif i == hi_index - 1:
            shares.append(at_lo)
        elif i == hi_index:
            shares.append(at_hi)
        else:
            tail = 1.0 - hi_cdf
            above = (1.0 - _lognormal_cdf(bound, median)) / tail if tail > 0 else 0.0
            shares.append(1.0 - (1.0 - at_hi) * above)
    shares.append(1.0)
    return shares


# --- sampling --------------------------------------------------------------------------------------------------


@dataclass
class _Pod:
    """One incarnation of one pod: a name and the grid times it exists at."""

    new: bool
    index: int
    name: str
    uid: str
    node: str
    times: list[float] = field(default_factory=list)

    @property
    def sim_id(self) -> int:
        """The `pod` argument of `pod_value`: new pods 0.., old pods 100.. (the simulator's numbering)."""
        return self.index if self.new else 100 + self.index


@dataclass
class _Counters:
    ok: float = 0.0
    errors: float = 0.0
    buckets: list[float] = field(default_factory=lambda: [0.0] * len(BUCKETS))
    cpu: float = 0.0


def _digest(*parts: object) -> str:
    return hashlib.sha256("\x00".join(str(p) for p in parts).encode()).hexdigest()


def k8s_name_part(length: int, *seed: object) -> str:
    """`length` characters of Kubernetes' alphabet for pod-template-hashes and pod suffixes, from a digest of seed."""
    value = int(_digest(*seed), 16)
    chars = []
    for _ in range(length):
        value, rest = divmod(value, len(_K8S_ALPHABET))
        chars.append(_K8S_ALPHABET[rest])
    return "".join(chars)


def _uid(*seed: object) -> str:
    h = _digest("uid", *seed)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def template_hashes(rollout: SimulatedRollout) -> tuple[str, str]:
    """(old, new) pod-template-hash of a rollout's ReplicaSets."""
    if isinstance(rollout, ScenarioRollout):
        return rollout.old_hash, rollout.new_hash
    return OLD_HASH, NEW_HASH


def pod_name(rollout: SimulatedRollout, new: bool, index: int, incarnation: int = 0) -> str:
    """`<deployment>-<pod-template-hash>-<5 characters>`, stable for a rollout, a pod slot and an incarnation."""
    old_hash, new_hash = template_hashes(rollout)
    template = new_hash if new else old_hash
    suffix = k8s_name_part(5, rollout.ref.namespace, rollout.ref.name, template, index, incarnation, rollout.seed)
    return f"{rollout.ref.name}-{template}-{suffix}"


def _grid(start: float, end: float, scrape_seconds: float) -> list[float]:
    count = math.floor((end - start) / scrape_seconds + 1e-9)
    return [start + k * scrape_seconds for k in range(count + 1)]


def _pods(rollout: SimulatedRollout, grid: Sequence[float]) -> list[_Pod]:
    """Every pod incarnation with the grid times it exists at: new pods 0..new_pods(t)-1, old pods the rest."""
    pods: list[_Pod] = []
    current: dict[tuple[bool, int], _Pod] = {}
    incarnations: dict[tuple[bool, int], int] = {}
    for t in grid:
        new_count = rollout.new_pods(t)
        alive = {(True, i) for i in range(new_count)} | {(False, i) for i in range(rollout.old_pods(t))}
        for slot in list(current):
            if slot not in alive:
                del current[slot]
        for slot in sorted(alive):
            pod = current.get(slot)
            if pod is None:
                number = incarnations.get(slot, 0)
                incarnations[slot] = number + 1
                new, index = slot
                name = pod_name(rollout, new, index, number)
                pod = _Pod(new, index, name, _uid(rollout.ref.namespace, name),
                           f"node-{int(_digest(name)[:4], 16) % 12}")
                current[slot] = pod
                pods.append(pod)
            pod.times.append(t)
    return pods


def _restarts(rollout: SimulatedRollout, pod: _Pod, t: float) -> int:
    """The restart counter at `t`; for a plain simulator, rebuilt from its `restarts_5m` values.

    A counter c with c(t) - c(t - 5m) = v(t) is c(t) = v(t) + v(t - 5m) + v(t - 10m) + ... (v = 0 before the pod).
    """
    if isinstance(rollout, ScenarioRollout):
        return rollout.restart_count(pod.new, pod.index, t)
    age0 = _age(rollout, pod, t)
    total, k = 0.0, 0
    while True:
        back = k * RESTART_WINDOW_SECONDS
        if not pod.new or age0 - back < 0 or k > 1000:
            break
        total += rollout.pod_value("restarts_5m", True, age0 - back, t - back, pod.sim_id)
        k += 1
    return math.floor(total + 1e-9)


def _age(rollout: SimulatedRollout, pod: _Pod, t: float) -> float:
    return t - rollout.pod_started(pod.index) if pod.new else OLD_POD_AGE_SECONDS


def _ready(rollout: SimulatedRollout, new: bool, index: int, t: float) -> bool:
    return rollout.ready(new, index, t) if isinstance(rollout, ScenarioRollout) else True


def _gaps(rollout: SimulatedRollout) -> tuple[ScrapeGap, ...]:
    return rollout.gaps if isinstance(rollout, ScenarioRollout) else ()


def _limits(rollout: SimulatedRollout) -> tuple[float, float]:
    if isinstance(rollout, ScenarioRollout):
        return rollout.memory_limit_bytes, rollout.cpu_limit_cores
    return float(MEMORY_LIMIT_BYTES), CPU_LIMIT_CORES


def _requests_per_second(rollout: SimulatedRollout, t: float, ready_pods: int) -> float:
    """Per ready pod: the Deployment's traffic (replicas x per-pod rate x load) split over its ready pods."""
    if ready_pods <= 0:
        return 0.0
    if isinstance(rollout, ScenarioRollout):
        per_pod, load = rollout.requests_per_second, rollout.load(t)
    else:
        per_pod, load = REQUESTS_PER_SECOND, 1.0
    return per_pod * load * rollout.replicas / ready_pods


def scenario_series(
    rollouts: Sequence[SimulatedRollout], start: float, end: float, scrape_seconds: float = SCRAPE_SECONDS,
    *, revision_annotation: bool = True,
) -> SeriesMap:
    """The series Prometheus would hold from `start` to `end` (scraped every `scrape_seconds`) for `rollouts`.

    Every Deployment exists from `start` (its old ReplicaSet created `OLD_RS_AGE_SECONDS` before); its rollout
    starts at `rollout.start` (the new ReplicaSet's creation). `revision_annotation` adds
    `kube_replicaset_annotations{annotation_deployment_kubernetes_io_revision=...}` (kube-state-metrics exports
    it with `--metric-annotations-allowlist=replicasets=[deployment.kubernetes.io/revision]`).
    """
    if end < start or scrape_seconds <= 0:
        raise ValueError(f"expected start <= end and scrape_seconds > 0, got {start}, {end}, {scrape_seconds}")
    refs = [r.ref for r in rollouts]
    if len(set(refs)) != len(refs):
        raise ValueError(f"each Deployment may roll out once: duplicates in {sorted(set(map(str, refs)))}")
    grid = _grid(start, end, scrape_seconds)
    series: SeriesMap = {}
    for rollout in rollouts:
        _deployment_series(rollout, grid, series, revision_annotation)
        pods = _pods(rollout, grid)
        for pod in pods:
            _pod_series(rollout, pod, scrape_seconds, series)
    return series


def _add(series: SeriesMap, key: str, t: float, value: float) -> None:
    series.setdefault(key, []).append((t, value))


def _deployment_series(rollout: SimulatedRollout, grid: Sequence[float], series: SeriesMap, annotate: bool) -> None:
    ns, name = rollout.ref.namespace, rollout.ref.name
    dep = {"namespace": ns, "deployment": name}
    old_hash, new_hash = template_hashes(rollout)
    old_rs, new_rs = f"{name}-{old_hash}", f"{name}-{new_hash}"
    gaps = _gaps(rollout)
    last_change, last_new = grid[0] if grid else 0.0, -1
    for t in grid:
        if any(g.covers(t, "ksm") for g in gaps):
            continue
        started = t >= rollout.start
        undone = rollout.undone_at is not None and t >= rollout.undone_at
        paused = rollout.paused_at is not None and t >= rollout.paused_at and not undone
        new_count = rollout.new_pods(t)
        old_count = rollout.old_pods(t)
        if new_count != last_new:
            last_change, last_new = t, new_count
        rolling = started and not undone and new_count < rollout.replicas
        stuck = rolling and not paused and t - max(last_change, rollout.start) > PROGRESS_DEADLINE_SECONDS
        generation = 1 + int(started) + int(paused or (rollout.paused_at is not None and undone)) + int(undone)
        updated = new_count if started and not undone else old_count
        ready_new = sum(1 for i in range(new_count) if _ready(rollout, True, i, t))
        gauges = {
            series_key("kube_deployment_spec_replicas", **dep): rollout.replicas,
            series_key("kube_deployment_status_replicas_updated", **dep): updated,
            series_key("kube_deployment_metadata_generation", **dep): generation,
            series_key("kube_deployment_status_observed_generation", **dep): generation,
            series_key("kube_deployment_spec_paused", **dep): int(paused),
            series_key("kube_deployment_labels", **dep): 1,
        }
        for status in ("true", "false", "unknown"):
            progressing = (status == "false") if stuck else (status == "true")
            gauges[series_key("kube_deployment_status_condition", **dep, condition="Progressing",
                              status=status)] = int(progressing)
            gauges[series_key("kube_deployment_status_condition", **dep, condition="Available",
                              status=status)] = int(status == "true")
        for key, value in gauges.items():
            _add(series, key, t, float(value))
        replica_sets = [(old_rs, old_count, old_count, grid[0] - OLD_RS_AGE_SECONDS, "3" if undone else "1")]
        if started:
            replica_sets.append((new_rs, new_count, ready_new, rollout.start, "2"))
        for rs, spec, ready, created, revision in replica_sets:
            labels = {"namespace": ns, "replicaset": rs}
            _add(series, series_key("kube_replicaset_owner", **labels, owner_kind="Deployment", owner_name=name,
                                    owner_is_controller="true"), t, 1.0)
            _add(series, series_key("kube_replicaset_spec_replicas", **labels), t, float(spec))
            _add(series, series_key("kube_replicaset_status_ready_replicas", **labels), t, float(ready))
            _add(series, series_key("kube_replicaset_created", **labels), t, float(created))
            if annotate:
                _add(series, series_key("kube_replicaset_annotations", **labels,
                                        annotation_deployment_kubernetes_io_revision=revision), t, 1.0)


def _pod_series(rollout: SimulatedRollout, pod: _Pod, scrape_seconds: float, series: SeriesMap) -> None:
    ns = rollout.ref.namespace
    memory_limit, cpu_limit = _limits(rollout)
    gaps = _gaps(rollout)
    base = {"namespace": ns, "pod": pod.name}
    ksm_pod = {"namespace": ns, "pod": pod.name, "uid": pod.uid}
    old_hash, new_hash = template_hashes(rollout)
    owner = f"{rollout.ref.name}-{new_hash if pod.new else old_hash}"
    keys = {
        "ok": series_key("http_requests_total", **base, code="200"),
        "errors": series_key("http_requests_total", **base, code="500"),
        "memory": series_key("container_memory_working_set_bytes", **base, container=CONTAINER),
        "memory_pod": series_key("container_memory_working_set_bytes", **base, container=""),
        "cpu": series_key("container_cpu_usage_seconds_total", **base, container=CONTAINER),
        "cpu_pod": series_key("container_cpu_usage_seconds_total", **base, container=""),
        "memory_limit": series_key("kube_pod_container_resource_limits", **ksm_pod, container=CONTAINER,
                                   node=pod.node, resource="memory", unit="byte"),
        "cpu_limit": series_key("kube_pod_container_resource_limits", **ksm_pod, container=CONTAINER,
                                node=pod.node, resource="cpu", unit="core"),
        "restarts": series_key("kube_pod_container_status_restarts_total", **ksm_pod, container=CONTAINER),
        "owner": series_key("kube_pod_owner", **ksm_pod, owner_kind="ReplicaSet", owner_name=owner,
                            owner_is_controller="true"),
        "created": series_key("kube_pod_created", **ksm_pod),
        "labels": series_key("kube_pod_labels", **ksm_pod, label_app=rollout.ref.name,
                             label_pod_template_hash=new_hash if pod.new else old_hash),
        "waiting": series_key("kube_pod_container_status_waiting_reason", **ksm_pod, container=CONTAINER,
                              reason="CrashLoopBackOff"),
        **{f"ready_{status}": series_key("kube_pod_status_ready", **ksm_pod, condition=status)
           for status in ("true", "false", "unknown")},
    }
    bucket_keys = [series_key("http_request_duration_seconds_bucket", **base, le=le_label(b)) for b in BUCKETS]
    counters = _Counters()
    cpu_pod = 0.0
    first = pod.times[0]
    if not pod.new and first <= rollout.start:
        # An old pod that predates the data: its counters already hold an uptime's worth.
        _accumulate(rollout, pod, first, OLD_POD_AGE_SECONDS, counters)
        cpu_pod = counters.cpu
    restarts = _restarts(rollout, pod, first)
    created = rollout.pod_started(pod.index) if pod.new else (
        first - OLD_POD_AGE_SECONDS if first <= rollout.start else first)  # an old pod that came back after an undo
    previous: float | None = None
    for t in pod.times:
        count = _restarts(rollout, pod, t)
        if count > restarts:
            counters = _Counters()  # the container restarted: its counters start again from zero
        restarts = count
        if previous is not None:
            before = counters.cpu
            _accumulate(rollout, pod, t, t - previous, counters)
            cpu_pod += counters.cpu - before
        previous = t
        memory = rollout.pod_value("memory_limit_ratio", pod.new, _age(rollout, pod, t), t, pod.sim_id)
        ready = _ready(rollout, pod.new, pod.index, t)
        missed = {what for what in ("app", "kubelet", "ksm") if any(g.covers(t, what, pod.new, pod.index)
                                                                   for g in gaps)}
        if t == first and (pod.new or first > rollout.start):
            # A pod's containers are first scraped after they start, never at the instant the pod appears.
            missed |= {"app", "kubelet"}
        samples: list[tuple[str, str, float]] = [
            ("app", keys["ok"], math.floor(counters.ok)),
            ("app", keys["errors"], math.floor(counters.errors)),
            *(("app", key, math.floor(value)) for key, value in zip(bucket_keys, counters.buckets, strict=True)),
            ("kubelet", keys["memory"], float(round(memory * memory_limit))),
            ("kubelet", keys["memory_pod"], float(round(memory * memory_limit + 4 * 1024 * 1024))),
            ("kubelet", keys["cpu"], round(counters.cpu, 6)),
            ("kubelet", keys["cpu_pod"], round(cpu_pod + 0.002 * (t - first), 6)),
            ("ksm", keys["memory_limit"], memory_limit),
            ("ksm", keys["cpu_limit"], cpu_limit),
            ("ksm", keys["restarts"], float(count)),
            ("ksm", keys["owner"], 1.0),
            ("ksm", keys["labels"], 1.0),
            ("ksm", keys["created"], created),
            ("ksm", keys["ready_true"], float(ready)),
            ("ksm", keys["ready_false"], float(not ready)),
            ("ksm", keys["ready_unknown"], 0.0),
        ]
        if isinstance(rollout, ScenarioRollout) and rollout.crash_waiting(pod.new, pod.index, t):
            samples.append(("ksm", keys["waiting"], 1.0))  # kube-state-metrics v2 writes the reason only while waiting
        for what, key, value in samples:
            if what not in missed:
                _add(series, key, t, float(value))


def _accumulate(rollout: SimulatedRollout, pod: _Pod, t: float, seconds: float, counters: _Counters) -> None:
    """Add `seconds` of traffic and CPU ending at `t`, at the pod's values at `t`."""
    age = _age(rollout, pod, t)

    def value(metric: str) -> float:
        return rollout.pod_value(metric, pod.new, age, t, pod.sim_id)

    _, cpu_limit = _limits(rollout)
    counters.cpu += max(value("cpu_limit_ratio"), 0.0) * cpu_limit * seconds
    if not _ready(rollout, pod.new, pod.index, t):
        return
    new_count = rollout.new_pods(t)
    ready_pods = sum(1 for i in range(new_count) if _ready(rollout, True, i, t)) + rollout.old_pods(t)
    requests = _requests_per_second(rollout, t, ready_pods) * seconds
    error_ratio = min(max(value("error_ratio"), 0.0), 1.0)
    shares = bucket_shares(value("latency_p99"))
    if isinstance(rollout, ScenarioRollout) and rollout.count_noise:
        rng = _noise_rng(rollout.seed, pod.sim_id, t, "counts", pod.new)
        served = int(rng.poisson(requests))
        errors = int(rng.binomial(served, error_ratio))
        in_bucket = np.diff(np.asarray(shares), prepend=0.0).clip(min=0.0)
        drawn = np.cumsum(rng.multinomial(served, in_bucket / in_bucket.sum()))
        counters.ok += served - errors
        counters.errors += errors
        for i, count in enumerate(drawn.tolist()):
            counters.buckets[i] += count
        return
    counters.ok += requests * (1.0 - error_ratio)
    counters.errors += requests * error_ratio
    for i, share in enumerate(shares):
        counters.buckets[i] += requests * share


# --- random scenarios for the benchmark ------------------------------------------------------------------------


def _uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


def random_scenario(label: str, ref: DeploymentRef, start: float, seed: int) -> ScenarioRollout:
    """One randomised scenario of a benchmark family (`BAD_KINDS` or `HEALTHY_KINDS`) rolling out at `start`.

    Everything but the family is drawn from `seed`, over ranges wider than we picture clusters to be (issue 15): the
    scrape interval (10-60 s) and the queries' rate window (1m-5m, at least two scrapes), replicas (2-50, more
    small Deployments than large), maxSurge and maxUnavailable (1 pod to 100 %), the readiness delay (5 s-3 min,
    also the pace of the rollout's waves), traffic (0.2-2,000 requests/s per pod), counts drawn at random as real
    counters grow, the noise shape (`NOISE_SHAPES`) and a season (none, daily, steps), the baselines, the
    warm-up, the magnitude of a bad release and the shape and timing of a healthy release's confounder.
    """
    if label not in BAD_KINDS and label not in HEALTHY_KINDS:
        raise ValueError(f"unknown benchmark kind {label!r} (known: {', '.join(BAD_KINDS + HEALTHY_KINDS)})")
    rng = np.random.default_rng([seed, int(_digest(label)[:8], 16)])
    replicas = round(math.exp(_uniform(rng, math.log(2.0), math.log(50.0))))
    scrape = float(rng.choice(SCRAPE_CHOICES))
    rate_window = str(rng.choice([w for w in RATE_WINDOWS if _window_seconds(w) >= 2 * scrape]))
    readiness = math.exp(_uniform(rng, math.log(5.0), math.log(180.0)))
    surge, unavailable = resolve_strategy(str(rng.choice(SURGE_CHOICES, p=SURGE_WEIGHTS)),
                                          str(rng.choice(UNAVAILABLE_CHOICES, p=UNAVAILABLE_WEIGHTS)), replicas)
    baseline = PodBaseline(
        error_ratio=_uniform(rng, 0.001, 0.01),
        latency_p99=_uniform(rng, 0.08, 0.25),
        memory_limit_ratio=_uniform(rng, 0.3, 0.6),
        cpu_limit_ratio=_uniform(rng, 0.15, 0.5),
    )
    old_hash = k8s_name_part(10, "old", seed, label, ref.namespace, ref.name)
    new_hash = k8s_name_part(10, "new", seed, label, ref.namespace, ref.name)
    common: dict[str, Any] = {
        "label": label, "replicas": replicas, "step_seconds": readiness, "readiness_seconds": readiness,
        "max_surge": surge, "max_unavailable": unavailable, "baseline": baseline, "seed": seed,
        "requests_per_second": math.exp(_uniform(rng, math.log(0.2), math.log(2000.0))),
        "warmup_seconds": readiness + _uniform(rng, 20.0, 60.0), "warmup_latency": _uniform(rng, 0.05, 0.3),
        "old_hash": old_hash, "new_hash": new_hash, "count_noise": True, "scrape_seconds": scrape,
        "rate_window": rate_window, "noise_shape": str(rng.choice(NOISE_SHAPES)),
        "season": _random_season(rng, str(rng.choice(("none", *SEASON_SHAPES))), start, strong=False),
    }
    if label == "late_leak":  # a quick rollout: every new pod at once, Ready within a minute
        quick = _uniform(rng, 5.0, 60.0)
        common.update(max_surge=replicas, max_unavailable=0, step_seconds=quick, readiness_seconds=quick,
                      warmup_seconds=quick + _uniform(rng, 20.0, 60.0))
    probe = ScenarioRollout(ref, "healthy", start, **common)
    duration = math.ceil(replicas / probe.wave_pods) * probe.step_seconds
    if label in BAD_KINDS:
        magnitudes = {
            "error_regression": (0.06, 0.3), "latency_regression": (0.55, 1.5), "memory_leak": (0.02, 0.08),
            "cpu_saturation": (0.04, 0.15), "slow_burn": (0.0025, 0.008),
        }
        if label == "crash_loop":
            return ScenarioRollout(ref, label, start, crash_run_seconds=_uniform(rng, 5.0, 60.0), **common)
        if label == "late_leak":
            minutes_to_breach = _uniform(rng, 20.0, 40.0)
            magnitude = (0.9 - baseline.memory_limit_ratio) / minutes_to_breach
            return ScenarioRollout(ref, "memory_leak", start, magnitude=magnitude, **common)
        if label == "mild_regression":  # worse than the old pods, below the threshold
            if rng.random() < 0.5:
                return ScenarioRollout(ref, "error_regression", start, magnitude=_uniform(rng, 0.015, 0.035), **common)
            return ScenarioRollout(ref, "latency_regression", start, magnitude=_uniform(rng, 0.3, 0.42), **common)
        low, high = magnitudes[label]
        return ScenarioRollout(ref, label, start, magnitude=_uniform(rng, low, high), **common)
    confounder = label.removeprefix("healthy_")
    extra: dict[str, Any] = {}
    if confounder == "warmup":
        extra = {"warmup_seconds": readiness + _uniform(rng, 30.0, 180.0), "warmup_latency": _uniform(rng, 0.2, 0.6),
                 "warmup_cpu": _uniform(rng, 0.1, 0.45), "warmup_errors": _uniform(rng, 0.0, 0.04)}
    elif confounder == "cache_plateau":
        plateau = _uniform(rng, max(0.6, baseline.memory_limit_ratio + 0.1), 0.85)
        extra = {"cache": CachePlateau(plateau=plateau, tau_seconds=_uniform(rng, 60.0, 300.0))}
    elif confounder == "traffic_surge":
        extra = {"surge": TrafficSurge(
            at=_aligned(start + _uniform(rng, 0.0, min(duration, 1800.0) + 60.0), scrape),
            seconds=_uniform(rng, 180.0, 600.0), factor=_uniform(rng, 1.5, 3.0), latency_gain=_uniform(rng, 0.2, 1.0),
            error_gain=_uniform(rng, 0.0, 0.01),
        )}
    elif confounder == "noisy_old_pod":
        extra = {"noisy": NoisyPod(index=int(rng.integers(replicas)), probability=_uniform(rng, 0.05, 0.25))}
    elif confounder == "scrape_gaps":
        gaps = []
        for _ in range(int(rng.integers(1, 4))):
            at = _aligned(start + _uniform(rng, -120.0, min(duration, 1800.0) + 300.0), scrape)
            what = str(rng.choice(["app", "kubelet", "all"]))
            pod = None if rng.random() < 0.5 else (bool(rng.random() < 0.5), int(rng.integers(replicas)))
            gaps.append(ScrapeGap(at, at + _uniform(rng, 30.0, 240.0), what, pod))
        extra = {"gaps": tuple(sorted(gaps, key=lambda g: g.start))}
    elif confounder == "counter_resets":
        resets = []
        for _ in range(int(rng.integers(1, 4))):
            at = _aligned(start + _uniform(rng, 0.0, min(duration, 1800.0) + 300.0), scrape)
            new_count, old_count = probe.new_pods(at), probe.old_pods(at)
            new = bool(rng.random() < new_count / max(new_count + old_count, 1))
            index = int(rng.integers(max(new_count if new else old_count, 1)))
            resets.append(CounterReset(at, new, index))
        extra = {"resets": tuple(sorted(resets, key=lambda r: r.at))}
    elif confounder == "seasonal":
        extra = {"season": _random_season(rng, str(rng.choice(SEASON_SHAPES)), start, strong=True)}
    common.update(extra)
    return ScenarioRollout(ref, "healthy", start, **common)


def resolve_strategy(max_surge: str, max_unavailable: str, replicas: int) -> tuple[int, int]:
    """A RollingUpdate's maxSurge and maxUnavailable ('1', '25%') in pods, as Kubernetes resolves them: a
    percentage of the replicas, rounded up for the surge and down for unavailable; both 0 makes unavailable 1."""
    def pods(value: str, round_up: bool) -> int:
        if value.endswith("%"):
            share = float(value[:-1]) / 100.0 * replicas
            return math.ceil(share - 1e-9) if round_up else math.floor(share + 1e-9)
        return int(value)

    surge, unavailable = pods(max_surge, True), pods(max_unavailable, False)
    return (surge, 1) if surge == 0 and unavailable == 0 else (surge, unavailable)


def _window_seconds(window: str) -> float:
    return float(window.removesuffix("m")) * 60.0


def _random_season(rng: np.random.Generator, shape: str, start: float, strong: bool) -> Season | None:
    """None, a daily sine or load steps around the rollout; `strong` for the healthy release whose confounder it is
    (a daily ramp at its steepest during the rollout, or steps of x1.5-x2.5)."""
    if shape == "none":
        return None
    if shape == "daily":
        if strong:  # the rollout starts on the morning ramp: cos at -pi/2, rising at its fastest
            return Season("daily", amplitude=_uniform(rng, 0.5, 0.9), peak_at=start + 6 * 3600.0
                          + _uniform(rng, -1800.0, 1800.0))
        return Season("daily", amplitude=_uniform(rng, 0.1, 0.5), peak_at=start + _uniform(rng, 0.0, 86400.0))
    count = int(rng.integers(1, 3))
    low, high = (1.5, 2.5) if strong else (0.7, 1.4)
    times = sorted(start + _uniform(rng, -600.0 if not strong else 0.0, 2400.0) for _ in range(count))
    return Season("steps", steps=tuple((t, _uniform(rng, low, high)) for t in times))


def _aligned(t: float, step: float) -> float:
    return math.floor(t / step) * step
