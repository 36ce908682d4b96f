"""The small interfaces behind which Prometheus, Kubernetes, Alertmanager and time sit.

The engine and the CLI depend on these; adapters implement them; the decision core never sees them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from predictor.config import MetricSpec
from predictor.domain import Alert, Decision, Observation, RolloutState


class Clock(Protocol):
    def now(self) -> float:
        """POSIX seconds."""
        ...


class SystemClock:
    """The wall clock, for the daemon's wiring; everything below takes a Clock so tests can step time."""

    def now(self) -> float:
        return time.time()


class MetricSource(Protocol):
    def fetch(self, spec: MetricSpec, rollouts: Sequence[RolloutState], at: float) -> list[Observation]:
        """Evaluate one metric at time `at` for all rollouts at once (one query, two with a denominator).

        Returns one observation per rollout and scope (deployment, new, old). Never raises: errors, timeouts,
        NaN, Inf and empty results become observations with value None and `error` set.
        """
        ...

    def is_online(self) -> bool: ...


class RolloutSource(Protocol):
    def list_rollouts(self, at: float) -> list[RolloutState]:
        """State of every targeted Deployment at `at` (rolling out or not). May raise on a failed API call."""
        ...

    def is_online(self) -> bool: ...


@dataclass(frozen=True)
class ActionResult:
    applied: bool
    """True when the Deployment was changed (False in dry-run, or when already in the asked state)."""
    detail: str


class Actuator(Protocol):
    def apply(self, decision: Decision, rollout: RolloutState) -> ActionResult:
        """Carry out a pause, undo or alert-only decision on the Deployment, record why, emit an Event."""
        ...


class RecordKeeper(Protocol):
    """What an Actuator that records an action in two writes (a change, then an Event) also implements; the
    engine calls it when the actuator has it."""

    def ensure_recorded(self, rollout: RolloutState) -> bool:
        """Make sure the action recorded in `rollout`'s annotations has its Event (a daemon killed between the
        write and the Event left none). True when it has one now; False to try again on a later tick."""
        ...


class Notifier(Protocol):
    def send(self, firing: Sequence[Alert], resolved: Sequence[Alert], now: float) -> None:
        """Hand alerts to Alertmanager without blocking the tick: failures are retried in the background."""
        ...


class KillSwitch(Protocol):
    def engaged(self) -> bool:
        """Read once per tick: True while every pause and undo must become an alert. Never raises: when it
        cannot be read, the last state read (False before any)."""
        ...
