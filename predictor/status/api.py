"""The status API's JSON: `GET /api/v1/rollouts` and `GET /api/v1/rollouts/{namespace}/{deployment}`.

Built from the status board's snapshots; `docs/status-api.schema.json` is its JSON Schema (the tests validate real
responses against it). Times people read are RFC 3339 strings; sample times are POSIX seconds (numbers a chart can
use). Read-only: nothing here changes the board.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from predictor.config import format_time
from predictor.domain import DeploymentRef, ForecastBand, rollout_page_path
from predictor.status.board import DecisionEntry, MetricTrack, RolloutRecord, StatusBoard

API_VERSION = "v1"


def page_path(namespace: str, deployment: str) -> str:
    """The path of a rollout's page, relative to the daemon's root."""
    return rollout_page_path(DeploymentRef(namespace, deployment))


def _number(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _forecast(band: ForecastBand | None) -> dict[str, Any] | None:
    if band is None:
        return None
    return {"scope": band.scope.value, "from": band.start, "level": _number(band.level), "until": band.until,
            "mean": _number(band.mean), "low": _number(band.low), "high": _number(band.high),
            "path": [{"t": t, "mean": _number(mean), "low": _number(low), "high": _number(high)}
                     for t, mean, low, high in band.path]}


def _metric(track: MetricTrack, *, samples: bool) -> dict[str, Any]:
    latest = track.latest
    samples_kept = track.samples
    last = samples_kept[-1] if samples_kept else None
    out: dict[str, Any] = {
        "name": track.name,
        "threshold": track.threshold,
        "direction": track.direction.value,
        "risk": latest.risk if latest is not None else None,
        "unknown": latest.unknown if latest is not None else True,
        "value": {"deployment": last.deployment if last else None, "new": last.new if last else None,
                  "old": last.old if last else None},
        "predicted_breach": format_time(latest.predicted_breach) if latest is not None else None,
        "reason": latest.reason if latest is not None else "",
        "forecast": _forecast(latest.forecast if latest is not None else None),
    }
    if samples:
        out["acted_forecast"] = _forecast(track.acted_forecast)
        out["acted_breach"] = format_time(track.acted_breach)
        out["first_breach_seen"] = format_time(track.first_breach_seen())
        out["samples"] = [{"t": s.time, "deployment": s.deployment, "new": s.new, "old": s.old}
                          for s in samples_kept]
    return out


def _decision(entry: DecisionEntry, revision: int) -> dict[str, Any]:
    return {"time": format_time(entry.time), "t": entry.time, "revision": revision, "action": entry.action.value,
            "risk": entry.risk,
            "metric": entry.metric, "predicted_breach": format_time(entry.predicted_breach),
            "dry_run": entry.dry_run, "outcome": entry.outcome, "reason": entry.reason}


def last_action(records: Sequence[RolloutRecord]) -> tuple[DecisionEntry, int] | None:
    """The newest pause or undo of the Deployment's revisions on the board (newest first), else its newest alert,
    with the revision it was decided on: a rollback's own revision has none, the undone one has."""
    for wanted in (lambda r: r.actions, lambda r: list(r.decisions)):
        for record in records:
            found = wanted(record)
            if found:
                return found[-1], record.revision
    return None


def rollout_summary(record: RolloutRecord, older: Sequence[RolloutRecord] = ()) -> dict[str, Any]:
    """One rollout as `GET /api/v1/rollouts` lists it (`older`: the Deployment's older revisions on the board)."""
    state = record.state
    action = last_action([record, *older])
    return {
        "namespace": record.ref.namespace,
        "deployment": record.ref.name,
        "revision": record.revision,
        "phase": record.phase,
        "watched": record.watched,
        "progress": round(state.progress, 4),
        "replicas": {"desired": state.desired_replicas, "updated": state.updated_replicas,
                     "ready_new": state.ready_new_replicas, "old": state.old_replicas},
        "paused": state.paused,
        "rollback": state.is_rollback,
        "started_at": format_time(state.started_at),
        "completed_at": format_time(state.completed_at),
        "first_seen": format_time(record.first_seen),
        "last_seen": format_time(record.last_seen),
        "risk": record.risk,
        "metric": record.metric,
        "predicted_breach": format_time(record.predicted_breach),
        "reason": record.reason,
        "last_action": _decision(*action) if action is not None else None,
        "page": "/" + page_path(record.ref.namespace, record.ref.name),
        "metrics": [_metric(track, samples=False) for track in record.metrics.values()],
    }


def rollout_detail(record: RolloutRecord, older: Sequence[RolloutRecord] = ()) -> dict[str, Any]:
    """One rollout revision with its recent samples and decisions."""
    out = rollout_summary(record, older)
    out["metrics"] = [_metric(track, samples=True) for track in record.metrics.values()]
    out["decisions"] = [_decision(entry, record.revision) for entry in record.decisions]
    return out


def list_response(board: StatusBoard) -> dict[str, Any]:
    """`GET /api/v1/rollouts`: the newest revision of every Deployment on the board."""
    return {"api_version": API_VERSION, "updated_at": format_time(board.updated_at),
            "rollouts": [rollout_summary(newest, older) for newest, *older in board.by_deployment()]}


def detail_response(records: list[RolloutRecord]) -> dict[str, Any]:
    """`GET /api/v1/rollouts/{namespace}/{deployment}`: its newest revision, and the older ones still on the board
    under `previous` (an undone revision stays visible while its rollback runs)."""
    newest, *older = records
    out = rollout_detail(newest, older)
    out["api_version"] = API_VERSION
    out["previous"] = [rollout_detail(record, older[index + 1:]) for index, record in enumerate(older)]
    return out
