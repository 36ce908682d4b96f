"""Pure: the status board, a bounded in-memory record of every watched rollout, filled by the engine each tick.

The status API, the pages and the reports read it; nothing here does I/O or reads a clock (times come from the
engine's tick). Memory is bounded by the caps below: at most `max_records` rollout revisions (the newest
`REVISIONS_KEPT` per Deployment), each with at most `MAX_SAMPLES` samples per metric and `MAX_DECISIONS` decisions.
With the defaults and the default metric pack (6 metrics), a full board holds 512 x 6 x 240 samples of 4 doubles
(24 MB); `tests/unit/test_status_board.py` measures a full board under 40 MB.
"""

from __future__ import annotations

import math
import threading
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from predictor.config import MetricSpec
from predictor.domain import (
    Action,
    Assessment,
    Decision,
    DeploymentRef,
    Direction,
    ForecastBand,
    Observation,
    RolloutState,
    Scope,
)

_SCOPE_COLUMN = {Scope.DEPLOYMENT: 0, Scope.NEW: 1, Scope.OLD: 2}
MAX_SAMPLES = 240
"""Samples kept per metric of one rollout revision: an hour at the default 15 s tick."""
MAX_DECISIONS = 50
"""Decisions that asked for something (alert, pause, undo) kept per rollout revision."""
MAX_RECORDS = 512
"""Rollout revisions kept in all; when full, the one updated longest ago that is no longer watched makes room."""
REVISIONS_KEPT = 3
"""Revisions kept per Deployment, newest first: an undone revision stays visible after its rollback starts."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One tick's values of a metric: the whole Deployment, its new pods and its old pods (None: unknown)."""

    time: float
    deployment: float | None = None
    new: float | None = None
    old: float | None = None


@dataclass(frozen=True)
class DecisionEntry:
    """A decision that asked for something, and what became of it."""

    time: float
    action: Action
    risk: float
    reason: str
    metric: str | None
    predicted_breach: float | None
    dry_run: bool
    outcome: str = "decided"
    """`applied`, `unchanged` (the Deployment already was so, or dry run), `failed: ...`, `not applied (follower)`,
    or `decided` until the engine hands it to the actuator (alert-only decisions stay so)."""


@dataclass
class MetricTrack:
    """What the board keeps of one metric of one rollout revision. Samples are four columns of doubles (NaN for
    unknown), 32 bytes a sample, the oldest dropped past `MAX_SAMPLES`."""

    name: str
    threshold: float
    direction: Direction
    columns: tuple[array[float], array[float], array[float], array[float]] = field(
        default_factory=lambda: (array("d"), array("d"), array("d"), array("d")))
    """Times, then the values of the whole Deployment, its new pods and its old pods."""
    latest: Assessment | None = None
    acted_forecast: ForecastBand | None = None
    """The forecast as it stood on the tick of the first action on this metric (the page draws it there)."""
    acted_breach: float | None = None
    """The breach predicted on that tick."""

    def append(self, sample: Sample) -> None:
        self.append_values(sample.time, _nan(sample.deployment), _nan(sample.new), _nan(sample.old))

    def append_values(self, time: float, deployment: float, new: float, old: float) -> None:
        """One sample, unknown values as NaN."""
        times, dep_column, new_column, old_column = self.columns
        if times and time <= times[-1]:
            return  # a repeated or out-of-order tick adds nothing
        times.append(time)
        dep_column.append(deployment)
        new_column.append(new)
        old_column.append(old)
        if len(times) > MAX_SAMPLES:
            for column in self.columns:
                del column[0]

    @property
    def samples(self) -> list[Sample]:
        return [Sample(t, _known(d), _known(n), _known(o)) for t, d, n, o in zip(*self.columns, strict=True)]

    def __len__(self) -> int:
        return len(self.columns[0])

    def copy(self) -> MetricTrack:
        return replace(self, columns=tuple(array("d", column) for column in self.columns))  # type: ignore[arg-type]

    def first_breach_seen(self) -> float | None:
        """When a sample of the whole Deployment was first at or beyond the threshold (None: never seen)."""
        sign = 1.0 if self.direction is Direction.ABOVE else -1.0
        for time, value in zip(self.columns[0], self.columns[1], strict=True):
            if sign * (value - self.threshold) >= 0:  # False for NaN
                return time
        return None


@dataclass
class RolloutRecord:
    """One rollout revision of one Deployment as the board saw it."""

    ref: DeploymentRef
    revision: int
    first_seen: float
    state: RolloutState
    last_seen: float
    watched: bool = True
    phase: str = "watching"
    risk: float = 0.0
    reason: str = ""
    metric: str | None = None
    predicted_breach: float | None = None
    metrics: dict[str, MetricTrack] = field(default_factory=dict)
    decisions: deque[DecisionEntry] = field(default_factory=lambda: deque(maxlen=MAX_DECISIONS))

    @property
    def actions(self) -> list[DecisionEntry]:
        """Decisions that paused or undid (or would have, in dry run)."""
        return [d for d in self.decisions if d.action in (Action.PAUSE, Action.UNDO)]

    def copy(self) -> RolloutRecord:
        """A snapshot the readers can hold while the engine goes on filling the board."""
        metrics = {name: track.copy() for name, track in self.metrics.items()}
        return replace(self, metrics=metrics, decisions=deque(self.decisions, maxlen=MAX_DECISIONS))


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _known(value: float) -> float | None:
    return None if math.isnan(value) else value


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


class StatusBoard:
    """The records of the rollouts the engine watches; thread-safe (the engine writes, the HTTP server reads).

    `on_evict` is called with a record's snapshot when it leaves the board (a backtest's report writes its page
    then, so a replay of a week stays within the caps)."""

    def __init__(self, *, max_records: int = MAX_RECORDS,
                 on_evict: Callable[[RolloutRecord], None] | None = None) -> None:
        if max_records < 1:
            raise ValueError(f"max_records: expected >= 1, got {max_records!r}")
        self.max_records = max_records
        self.on_evict = on_evict
        self.dropped = 0
        """Rollouts not recorded because the board was full of watched ones."""
        self._records: dict[DeploymentRef, list[RolloutRecord]] = {}
        """Per Deployment, its revisions on the board, newest first."""
        self._index: dict[tuple[DeploymentRef, int], RolloutRecord] = {}
        """The same records by (Deployment, revision)."""
        self._lock = threading.Lock()
        self.updated_at: float | None = None

    # Written by the engine -----------------------------------------------------------------------------------
    def begin_tick(self, now: float, watched: Sequence[RolloutState]) -> None:
        """The rollouts in scope this tick: their records are created or refreshed, the others marked unwatched."""
        current = {state.ref: state for state in watched}
        evicted: list[RolloutRecord] = []
        with self._lock:
            self.updated_at = now
            for records in self._records.values():
                for record in records:
                    record.watched = False
            spare: list[RolloutRecord] | None = None
            for ref, state in current.items():
                record = self._find(ref, state.revision)
                if record is None:
                    record, out, spare = self._add(ref, state, now, spare)
                    evicted.extend(out)
                    if record is None:
                        continue
                record.state, record.last_seen, record.watched = state, now, True
        self._evicted(evicted)

    def observe(self, ref: DeploymentRef, revision: int, spec: MetricSpec,
                observations: Iterable[Observation]) -> None:
        """One metric's observations of one rollout on one tick (its scopes merged into one sample per time)."""
        with self._lock:
            record = self._index.get((ref, revision))
            if record is None:
                return
            track = record.metrics.get(spec.name)
            if track is None:
                track = record.metrics[spec.name] = MetricTrack(spec.name, spec.threshold, spec.direction)
            rows: dict[float, list[float]] = {}
            for obs in observations:
                if obs.metric != spec.name:
                    continue
                row = rows.get(obs.time)
                if row is None:
                    row = rows[obs.time] = [math.nan, math.nan, math.nan]
                value = obs.value
                if value is not None and math.isfinite(value):
                    row[_SCOPE_COLUMN[obs.scope]] = value
            for time in sorted(rows) if len(rows) > 1 else rows:
                track.append_values(time, *rows[time])

    def assessed(self, rollout: RolloutState, assessments: Sequence[Assessment], decision: Decision,
                 phase: str) -> None:
        """The tick's assessments and decision for one rollout."""
        with self._lock:
            record = self._find(rollout.ref, rollout.revision)
            if record is None:
                return
            for item in assessments:
                track = record.metrics.get(item.metric)
                if track is None:
                    track = record.metrics[item.metric] = MetricTrack(item.metric, item.threshold, item.direction)
                track.latest = item
            record.phase, record.risk, record.reason = phase, decision.risk, decision.reason
            record.metric, record.predicted_breach = decision.metric, decision.predicted_breach
            if decision.action is Action.NONE:
                return
            record.decisions.append(DecisionEntry(
                time=decision.time, action=decision.action, risk=decision.risk, reason=decision.reason,
                metric=decision.metric, predicted_breach=decision.predicted_breach, dry_run=decision.dry_run))
            track = record.metrics.get(decision.metric or "")
            if track is not None and track.acted_forecast is None and decision.action is not Action.ALERT:
                track.acted_forecast = track.latest.forecast if track.latest is not None else None
                track.acted_breach = decision.predicted_breach

    def outcome(self, decision: Decision, outcome: str) -> None:
        """What became of a decision handed to the actuator."""
        with self._lock:
            record = self._find(decision.ref, decision.revision)
            if record is None:
                return
            for index in range(len(record.decisions) - 1, -1, -1):
                entry = record.decisions[index]
                if entry.time == decision.time and entry.action is decision.action:
                    record.decisions[index] = replace(entry, outcome=outcome)
                    return

    # Read by the API, the pages and the reports ---------------------------------------------------------------
    def latest(self) -> list[RolloutRecord]:
        """The newest revision of every Deployment on the board, by namespace and name (snapshots)."""
        with self._lock:
            return [self._records[ref][0].copy() for ref in sorted(self._records)]

    def revisions(self, ref: DeploymentRef) -> list[RolloutRecord]:
        """Every revision of one Deployment on the board, newest first (snapshots; empty if unknown)."""
        with self._lock:
            return [record.copy() for record in self._records.get(ref, [])]

    def by_deployment(self) -> list[list[RolloutRecord]]:
        """Every Deployment's revisions on the board, newest first, by namespace and name (snapshots)."""
        with self._lock:
            return [[record.copy() for record in self._records[ref]] for ref in sorted(self._records)]

    def all_records(self) -> list[RolloutRecord]:
        """Every record, by Deployment and then newest revision first (snapshots)."""
        with self._lock:
            return [record.copy() for ref in sorted(self._records) for record in self._records[ref]]

    def __len__(self) -> int:
        with self._lock:
            return len(self._index)

    # Inside the lock --------------------------------------------------------------------------------------------
    def _find(self, ref: DeploymentRef, revision: int) -> RolloutRecord | None:
        return self._index.get((ref, revision))

    def _remove(self, record: RolloutRecord) -> None:
        records = self._records[record.ref]
        records.remove(record)
        if not records:
            del self._records[record.ref]
        del self._index[(record.ref, record.revision)]

    def _add(self, ref: DeploymentRef, state: RolloutState, now: float,
             spare: list[RolloutRecord] | None) -> tuple[RolloutRecord | None, list[RolloutRecord],
                                                          list[RolloutRecord] | None]:
        """Add a record, making room if needed from `spare` (the unwatched records, oldest last; computed on the
        first need of a tick and passed back)."""
        evicted: list[RolloutRecord] = []
        records = self._records.get(ref, [])
        while len(records) >= REVISIONS_KEPT:
            oldest_revision = records[-1]
            self._remove(oldest_revision)
            evicted.append(oldest_revision)
        while len(self._index) >= self.max_records:
            if spare is None:
                spare = sorted((r for r in self._index.values() if not r.watched),
                               key=lambda r: (r.last_seen, r.ref, r.revision), reverse=True)
            while spare and (spare[-1].ref, spare[-1].revision) not in self._index:
                spare.pop()
            if not spare:
                self.dropped += 1
                return None, evicted, spare
            oldest = spare.pop()
            self._remove(oldest)
            evicted.append(oldest)
        record = RolloutRecord(ref=ref, revision=state.revision, first_seen=now, state=state, last_seen=now)
        records = self._records.setdefault(ref, [])
        records.insert(0, record)
        records.sort(key=lambda r: r.revision, reverse=True)
        self._index[(ref, state.revision)] = record
        return record, evicted, spare

    def _evicted(self, records: list[RolloutRecord]) -> None:
        if self.on_evict is not None:
            for record in records:
                self.on_evict(record)

    def flush(self) -> None:
        """Hand every record to `on_evict` and empty the board (the end of a backtest)."""
        with self._lock:
            records = [record for ref in sorted(self._records) for record in self._records[ref]]
            self._records.clear()
            self._index.clear()
        self._evicted(records)
