"""`predictor status`: the daemon's rollouts as a `kubectl get`-style table, read from its status API.

With `kubectl -n predictor port-forward deployment/predictor 8080` the default `--url` reaches the daemon.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from predictor.config import format_duration

DEFAULT_URL = "http://127.0.0.1:8080"
COLUMNS = ("NAMESPACE", "DEPLOYMENT", "REVISION", "PHASE", "PROGRESS", "RISK", "METRIC", "BREACH", "ACTION", "ACTED",
           "AGE")
"""ACTION is the last pause or undo (else alert), `undo(r2)` when it was on an older revision (a rollback's);
ACTED how long ago; AGE the rollout's."""
WIDE_COLUMNS = ("NAMESPACE", "DEPLOYMENT", "REVISION", "METRIC", "RISK", "DEPLOYMENT-VALUE", "NEW-PODS",
                "OLD-PODS", "THRESHOLD", "BREACH", "REASON")


class StatusError(Exception):
    """The status API could not be read (the message says where and why)."""


def fetch_rollouts(url: str, timeout_seconds: float = 5.0) -> dict[str, Any]:
    """GET {url}/api/v1/rollouts as parsed JSON."""
    address = url.rstrip("/") + "/api/v1/rollouts"
    try:
        with urllib.request.urlopen(address, timeout=timeout_seconds) as response:
            return dict(json.loads(response.read().decode("utf-8")))
    except urllib.error.HTTPError as exc:
        raise StatusError(f"{address}: HTTP {exc.code} (is this predictor's port?)") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StatusError(f"{address}: {reason} (is the daemon running, or the port forwarded?)") from None
    except ValueError as exc:
        raise StatusError(f"{address}: not JSON: {exc}") from None


def _age(stamp: str | None, now: float) -> str:
    """kubectl's age: 45s, 12m, 3h, 2d."""
    if not stamp:
        return "-"
    seconds = max(0.0, now - datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * (2 if unit != "m" else 1):
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _until(stamp: str | None, now: float) -> str:
    if not stamp:
        return "-"
    ahead = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() - now
    return "now" if ahead <= 0 else f"in {format_duration(ahead)}"


def _action(action: dict[str, Any] | None, revision: int) -> str:
    if action is None:
        return "-"
    return action["action"] + ("" if action["revision"] == revision else f"(r{action['revision']})")


def _value(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _table(rows: Sequence[Sequence[str]], columns: Sequence[str]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(columns, *rows, strict=True)]
    lines = ["   ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in (columns, *rows)]
    return "\n".join(lines)


def format_table(payload: dict[str, Any], now: float, *, wide: bool = False) -> str:
    """The rollouts as kubectl prints resources: one line per rollout (per metric with `wide`)."""
    rollouts = payload.get("rollouts", [])
    if not rollouts:
        return "No rollouts watched."
    rows: list[list[str]] = []
    for item in rollouts:
        if wide:
            for metric in item["metrics"]:
                values = metric["value"]
                rows.append([item["namespace"], item["deployment"], str(item["revision"]), metric["name"],
                             "-" if metric["risk"] is None else f"{metric['risk']:.2f}", _value(values["deployment"]),
                             _value(values["new"]), _value(values["old"]), f"{metric['threshold']:g}",
                             _until(metric["predicted_breach"], now), metric["reason"]])
            continue
        replicas = item["replicas"]
        action = item.get("last_action")
        phase = item["phase"] + ("" if item["watched"] else " (done)")
        rows.append([item["namespace"], item["deployment"], str(item["revision"]), phase,
                     f"{replicas['updated']}/{replicas['desired']}", f"{item['risk']:.2f}", item["metric"] or "-",
                     _until(item["predicted_breach"], now),
                     _action(action, item["revision"]), _age(action["time"], now) if action else "-",
                     _age(item["started_at"], now)])
    return _table(rows, WIDE_COLUMNS if wide else COLUMNS)


def run_status(url: str, *, output: str, watch_seconds: float | None, emit: Callable[[str], None] = print,
               clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
               iterations: int | None = None) -> None:
    """Print the table (or the JSON) once, or every `watch_seconds` until interrupted (`iterations` bounds it)."""
    count = 0
    while True:
        payload = fetch_rollouts(url)
        if output == "json":
            emit(json.dumps(payload, indent=2))
        else:
            emit(format_table(payload, clock(), wide=output == "wide"))
        count += 1
        if watch_seconds is None or (iterations is not None and count >= iterations):
            return
        sleep(watch_seconds)
        if output != "json":
            emit("")
