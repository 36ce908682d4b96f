"""Lease-based leader election, so that of several replicas (or several sidecars of one application) only one
acts. The daemon builds a LeaderElector when leader election is on, runs it with `start()`, asks `is_leader()`
before carrying out an action and calls `stop()` on shutdown; followers keep scoring.

Modelled on client-go's `tools/leaderelection` with a `coordination.k8s.io/v1` Lease as the lock:
1. A candidate takes the Lease when it does not exist, when its holder is empty (released), or when its
   record has not changed for `lease_duration` as measured on the candidate's own clock since it last saw the
   record change (client-go's observedTime: immune to clock skew between nodes, as no remote timestamp is
   compared).
2. The leader renews every `retry_period`; when no renewal succeeded for `renew_deadline` it stops leading,
   before any follower may take over (`renew_deadline < lease_duration`).
3. Every write carries the resourceVersion that was read, so two candidates racing for the Lease cannot both
   win: the API server answers 409 Conflict to the second, which counts as having lost.
4. `leaseTransitions` grows by one on every change of holder; `acquireTime` is kept while renewing.
5. On a graceful stop the leader releases the Lease (empty holder, duration 1 s) so a follower takes over on
   its next try instead of waiting a whole lease period.

`step()` runs one iteration of the loop and `try_acquire_or_renew()` one attempt, both with the injected
clock, so tests drive elections without sleeping; `start()` runs `step()` every retry period on a thread.
"""

from __future__ import annotations

import logging
import math
import os
import random
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from predictor.config import parse_duration
from predictor.kube import call_json
from predictor.ports import Clock, SystemClock

log = logging.getLogger(__name__)

HTTP_NOT_FOUND = 404
HTTP_CONFLICT = 409
JITTER_FACTOR = 1.2
"""As client-go: a candidate waits retry_period * (1 + random * 1.2) between tries; the leader waits exactly
retry_period between renewals."""

ENV_ENABLED = "PREDICTOR_LEADER_ELECTION"
ENV_LEASE_NAME = "PREDICTOR_LEASE_NAME"
ENV_LEASE_NAMESPACE = "PREDICTOR_LEASE_NAMESPACE"
ENV_LEASE_DURATION = "PREDICTOR_LEASE_DURATION"
ENV_RENEW_DEADLINE = "PREDICTOR_RENEW_DEADLINE"
ENV_RETRY_PERIOD = "PREDICTOR_RETRY_PERIOD"
ENV_POD_NAME = "POD_NAME"
ENV_POD_NAMESPACE = "POD_NAMESPACE"

Callback = Callable[[], None]


class LeaderElectionConfigError(ValueError):
    """Invalid leader-election settings; the message names the setting, the value and the limit."""



@dataclass(frozen=True)
class LeaderElectionConfig:
    """Where the Lease lives, who we are, and the timings (seconds; defaults are client-go's)."""

    namespace: str
    lease_name: str
    identity: str
    """holderIdentity written into the Lease: the pod name, unique among the candidates."""
    lease_duration_seconds: float = 15.0
    """How long followers wait, after the record last changed, before taking the Lease over."""
    renew_deadline_seconds: float = 10.0
    """How long the leader keeps acting without a successful renewal."""
    retry_period_seconds: float = 2.0
    """Time between two tries (candidates) or two renewals (the leader)."""
    release_on_stop: bool = True

    def __post_init__(self) -> None:
        if not self.namespace:
            raise LeaderElectionConfigError("leader election: namespace: expected a namespace, got ''")
        if not self.lease_name:
            raise LeaderElectionConfigError("leader election: lease_name: expected a Lease name, got ''")
        if not self.identity:
            raise LeaderElectionConfigError("leader election: identity: expected the pod name, got ''")
        if self.retry_period_seconds <= 0:
            raise LeaderElectionConfigError(
                "leader election: retry_period: expected a positive duration, "
                f"got {self.retry_period_seconds:g}s"
            )
        if self.renew_deadline_seconds <= JITTER_FACTOR * self.retry_period_seconds:
            raise LeaderElectionConfigError(
                f"leader election: renew_deadline: expected more than {JITTER_FACTOR:g} x retry_period "
                f"({JITTER_FACTOR * self.retry_period_seconds:g}s), got {self.renew_deadline_seconds:g}s"
            )
        if self.lease_duration_seconds <= self.renew_deadline_seconds:
            raise LeaderElectionConfigError(
                f"leader election: lease_duration: expected more than renew_deadline "
                f"({self.renew_deadline_seconds:g}s), got {self.lease_duration_seconds:g}s"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LeaderElectionConfig | None:
        """The settings the Helm chart and the kustomize bases pass to the container; None when disabled.

        PREDICTOR_LEADER_ELECTION=true turns it on. PREDICTOR_LEASE_NAME (default `predictor`),
        PREDICTOR_LEASE_NAMESPACE (default $POD_NAMESPACE), POD_NAME (default the host name, which is the pod
        name in a pod), PREDICTOR_LEASE_DURATION / _RENEW_DEADLINE / _RETRY_PERIOD as durations ('15s').
        Raises LeaderElectionConfigError naming the variable.
        """
        env = os.environ if environ is None else environ
        enabled = env.get(ENV_ENABLED, "false").strip().lower()
        if enabled in ("", "0", "false", "no", "off"):
            return None
        if enabled not in ("1", "true", "yes", "on"):
            raise LeaderElectionConfigError(f"{ENV_ENABLED}: expected true or false, got {enabled!r}")
        namespace = env.get(ENV_LEASE_NAMESPACE) or env.get(ENV_POD_NAMESPACE) or ""
        if not namespace:
            raise LeaderElectionConfigError(
                f"{ENV_LEASE_NAMESPACE}: required when {ENV_ENABLED} is on (or set {ENV_POD_NAMESPACE} "
                "from the downward API)"
            )

        def seconds(name: str, default: float) -> float:
            raw = env.get(name)
            if not raw:
                return default
            try:
                return parse_duration(raw)
            except ValueError:
                message = f"{name}: expected a duration such as '15s', got {raw!r}"
                raise LeaderElectionConfigError(message) from None

        return cls(
            namespace=namespace,
            lease_name=env.get(ENV_LEASE_NAME) or "predictor",
            identity=env.get(ENV_POD_NAME) or socket.gethostname(),
            lease_duration_seconds=seconds(ENV_LEASE_DURATION, 15.0),
            renew_deadline_seconds=seconds(ENV_RENEW_DEADLINE, 10.0),
            retry_period_seconds=seconds(ENV_RETRY_PERIOD, 2.0),
        )


@dataclass(frozen=True)
class LeaderRecord:
    """The election-relevant part of a Lease's spec, as read."""

    holder_identity: str
    lease_duration_seconds: int
    acquire_time: str | None
    renew_time: str | None
    lease_transitions: int

    @classmethod
    def from_lease(cls, lease: Mapping[str, Any]) -> LeaderRecord:
        spec = lease.get("spec") or {}
        return cls(
            holder_identity=str(spec.get("holderIdentity") or ""),
            lease_duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            lease_transitions=int(spec.get("leaseTransitions") or 0),
        )

    def to_spec(self) -> dict[str, Any]:
        return {
            "holderIdentity": self.holder_identity,
            "leaseDurationSeconds": self.lease_duration_seconds,
            "acquireTime": self.acquire_time,
            "renewTime": self.renew_time,
            "leaseTransitions": self.lease_transitions,
        }


def format_micro_time(seconds: float) -> str:
    """POSIX seconds -> a Kubernetes MicroTime ('2006-01-02T15:04:05.000000Z').

    Always six fractional digits: the API server parses MicroTime with exactly that layout, and Python's
    isoformat() drops the fraction when it is zero, which a real server rejects.
    """
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """One candidate for one Lease. Thread-safe: `step()` runs on one thread, `is_leader()` on any."""

    def __init__(
        self,
        api: client.CoordinationV1Api,
        config: LeaderElectionConfig,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        on_started_leading: Callback | None = None,
        on_stopped_leading: Callback | None = None,
    ) -> None:
        """`clock` defaults to the wall clock; `rng` draws the candidates' retry jitter. The callbacks run on
        the thread that calls `step()` (the runner's, after `start()`); `start()` may also set them."""
        self._api = api
        self.config = config
        self._clock: Clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._observed: LeaderRecord | None = None
        self._observed_at = 0.0
        self._lease: dict[str, Any] | None = None
        """The Lease as last read or written: its resourceVersion guards the next write."""
        self._leading = False
        self._renewed_at = -math.inf
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- what the daemon asks ----------------------------------------------------------------------------

    def is_leader(self) -> bool:
        """True while this candidate holds the Lease and renewed it less than renew_deadline ago.

        The deadline is checked here, not only on the runner thread, so a stalled runner (a hung API call,
        a paused process) stops acting before any follower can take the Lease over.
        """
        with self._lock:
            return self._leading and self._clock.now() - self._renewed_at < self.config.renew_deadline_seconds

    @property
    def holder(self) -> str:
        """The holder identity last seen in the Lease ('' when free or not read yet)."""
        with self._lock:
            return self._observed.holder_identity if self._observed else ""

    # -- one attempt -------------------------------------------------------------------------------------

    def try_acquire_or_renew(self) -> bool:
        """Read the Lease once and take or renew it if allowed; True when we hold it afterwards.

        Never raises for API errors: a failed call is logged and counts as not acquired. No lock is held
        during the API calls, so `is_leader()` answers at once even while a call hangs.
        """
        cfg = self.config
        now = self._clock.now()
        stamp = format_micro_time(now)
        duration = math.ceil(cfg.lease_duration_seconds)
        try:
            lease: dict[str, Any] | None = self._read()
        except ApiException as exc:
            if exc.status != HTTP_NOT_FOUND:
                log.warning("leader election: cannot read Lease %s/%s: %s %s", cfg.namespace, cfg.lease_name,
                            exc.status, exc.reason)
                return False
            lease = None
        except Exception as exc:  # connection errors and timeouts: the next step tries again
            log.warning("leader election: cannot read Lease %s/%s: %s", cfg.namespace, cfg.lease_name, exc)
            return False

        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": cfg.lease_name, "namespace": cfg.namespace},
                "spec": LeaderRecord(cfg.identity, duration, stamp, stamp, 0).to_spec(),
            }
            written = self._write(lambda: self._create(body), now, "create")
            return written is not None and self._holds(written)

        old = LeaderRecord.from_lease(lease)
        with self._lock:
            if old != self._observed:
                self._observed = old
                self._observed_at = now
            self._lease = lease
            observed_at = self._observed_at
        held_by_other = bool(old.holder_identity) and old.holder_identity != cfg.identity
        if held_by_other and observed_at + old.lease_duration_seconds > now:
            return False

        if old.holder_identity == cfg.identity:
            acquired = old.acquire_time or stamp
            record = LeaderRecord(cfg.identity, duration, acquired, stamp, old.lease_transitions)
            verb = "renew"
        else:
            record = LeaderRecord(cfg.identity, duration, stamp, stamp, old.lease_transitions + 1)
            verb = "take over"
        body = {**lease, "spec": {**(lease.get("spec") or {}), **record.to_spec()}}
        written = self._write(lambda: self._replace(body), now, verb)
        return written is not None and self._holds(written)

    def step(self) -> bool:
        """One iteration of the election loop; returns is_leader() afterwards.

        Runs the callbacks on a change: on_started_leading when the Lease was won, on_stopped_leading when
        another candidate holds it or no renewal succeeded for renew_deadline.
        """
        now = self._clock.now()
        acquired = self.try_acquire_or_renew()
        started = stopped = False
        with self._lock:
            if acquired:
                self._renewed_at = now
                if not self._leading:
                    self._leading = started = True
            elif self._leading:
                holder = self._observed.holder_identity if self._observed else ""
                lost_to_other = holder not in ("", self.config.identity)
                if lost_to_other or now - self._renewed_at >= self.config.renew_deadline_seconds:
                    self._leading = False
                    stopped = True
                    why = f"{holder} holds the Lease" if lost_to_other else (
                        f"no renewal for {now - self._renewed_at:g}s (renew deadline "
                        f"{self.config.renew_deadline_seconds:g}s)")
                    log.warning("leader election: %s stopped leading Lease %s/%s: %s", self.config.identity,
                                self.config.namespace, self.config.lease_name, why)
        if started:
            log.info("leader election: %s became the leader of Lease %s/%s", self.config.identity,
                     self.config.namespace, self.config.lease_name)
            self._call(self._on_started, "on_started_leading")
        if stopped:
            self._call(self._on_stopped, "on_stopped_leading")
        return self.is_leader()

    def release(self) -> bool:
        """Give the Lease up if we hold it (empty holder, duration 1 s) so a follower takes over at once.

        True when released or not held; False when the write failed (followers then wait out the lease).
        The write carries the resourceVersion of our last renewal: if anyone wrote since, it is refused.
        """
        cfg = self.config
        with self._lock:
            was_leading = self._leading
            self._leading = False
            self._renewed_at = -math.inf
            lease = self._lease
        if lease is None or not was_leading:
            return True
        now = self._clock.now()
        stamp = format_micro_time(now)
        old = LeaderRecord.from_lease(lease)
        record = LeaderRecord("", 1, stamp, stamp, old.lease_transitions)
        body = {**lease, "spec": {**(lease.get("spec") or {}), **record.to_spec()}}
        released = self._write(lambda: self._replace(body), now, "release") is not None
        if released:
            log.info("leader election: %s released Lease %s/%s", cfg.identity, cfg.namespace, cfg.lease_name)
        self._call(self._on_stopped, "on_stopped_leading")
        return released

    # -- the runner --------------------------------------------------------------------------------------

    def start(self, on_started_leading: Callback | None = None,
              on_stopped_leading: Callback | None = None) -> threading.Thread:
        """Run `step()` every retry period on a daemon thread until `stop()`. Callbacks run on that thread."""
        if self._thread is not None:
            raise RuntimeError("leader election: already started")
        self._on_started = on_started_leading or self._on_started
        self._on_stopped = on_stopped_leading or self._on_stopped
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=f"leader-election-{self.config.lease_name}",
                                        daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, timeout_seconds: float | None = None) -> None:
        """Stop the runner and, when configured, release the Lease so a follower takes over at once (also
        when `step()` was driven by the caller instead of `start()`)."""
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is None:
            if self.config.release_on_stop:
                self.release()
            return
        thread.join(timeout_seconds)
        if thread.is_alive():
            log.warning("leader election: runner did not stop within %ss", timeout_seconds)

    def _run(self) -> None:
        retry = self.config.retry_period_seconds
        while not self._stopping.is_set():
            try:
                leading = self.step()
            except Exception:  # the loop must outlive any bug in a callback or the client
                log.exception("leader election: step failed")
                leading = False
            wait = retry if leading else retry * (1.0 + self._rng.random() * JITTER_FACTOR)
            self._stopping.wait(wait)
        if self.config.release_on_stop:
            self.release()
        elif self._leading:
            with self._lock:
                self._leading = False
            self._call(self._on_stopped, "on_stopped_leading")

    # -- helpers -----------------------------------------------------------------------------------------

    def _read(self) -> dict[str, Any]:
        cfg = self.config
        return call_json(self._api.read_namespaced_lease, cfg.lease_name, cfg.namespace,
                         _request_timeout=cfg.renew_deadline_seconds)

    def _create(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST; 409 AlreadyExists when another candidate created it first."""
        cfg = self.config
        return call_json(self._api.create_namespaced_lease, cfg.namespace, body,
                         _request_timeout=cfg.renew_deadline_seconds)

    def _replace(self, body: dict[str, Any]) -> dict[str, Any]:
        """PUT carrying the resourceVersion read: the server refuses it (409) if anyone wrote in between."""
        cfg = self.config
        return call_json(self._api.replace_namespaced_lease, cfg.lease_name, cfg.namespace, body,
                         _request_timeout=cfg.renew_deadline_seconds)

    def _holds(self, lease: Mapping[str, Any]) -> bool:
        return LeaderRecord.from_lease(lease).holder_identity == self.config.identity

    def _write(self, write: Callable[[], dict[str, Any]], now: float, verb: str) -> dict[str, Any] | None:
        """Create or replace the Lease; None when refused (409: another candidate wrote first) or failed."""
        cfg = self.config
        try:
            written = write()
        except ApiException as exc:
            if exc.status == HTTP_CONFLICT:
                log.debug("leader election: %s lost the race to %s Lease %s/%s", cfg.identity, verb,
                          cfg.namespace, cfg.lease_name)
            else:
                log.warning("leader election: cannot %s Lease %s/%s: %s %s", verb, cfg.namespace,
                            cfg.lease_name, exc.status, exc.reason)
            return None
        except Exception as exc:
            log.warning("leader election: cannot %s Lease %s/%s: %s", verb, cfg.namespace, cfg.lease_name,
                        exc)
            return None
        with self._lock:
            self._lease = written
            self._observed = LeaderRecord.from_lease(written)
            self._observed_at = now
        return written

    @staticmethod
    def _call(callback: Callback | None, name: str) -> None:
        if callback is None:
            return
        try:
            callback()
        except Exception:
            log.exception("leader election: %s failed", name)

