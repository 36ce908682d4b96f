"""The daemon's read-only status routes: the JSON API under /api/v1/rollouts and the HTML pages.

`daemon.serve_http` hands every GET it does not answer itself (/healthz, /readyz, /metrics) to `status_reply`.
"""

from __future__ import annotations

import json
from typing import NamedTuple
from urllib.parse import unquote

from predictor.domain import DeploymentRef
from predictor.status.api import detail_response, list_response
from predictor.status.board import RolloutRecord, StatusBoard

JSON = "application/json"
HTML = "text/html; charset=utf-8"
TEXT = "text/plain; charset=utf-8"


class Reply(NamedTuple):
    status: int
    body: bytes
    content_type: str


def _json(status: int, payload: object) -> Reply:
    return Reply(status, (json.dumps(payload, separators=(",", ":"), allow_nan=False) + "\n").encode(), JSON)


def _ref(rest: str) -> DeploymentRef | None:
    parts = rest.strip("/").split("/")
    if len(parts) != 2 or not all(parts):
        return None
    return DeploymentRef(unquote(parts[0]), unquote(parts[1]))


def _revisions(board: StatusBoard, ref: DeploymentRef) -> list[RolloutRecord]:
    """A workload's records whatever its kind (a Deployment, an Argo Rollout, a Swarm service)."""
    for kind in ("deployment", "rollout", "service"):
        records = board.revisions(DeploymentRef(ref.namespace, ref.name, kind))
        if records:
            return records
    return []


def status_reply(board: StatusBoard, path: str) -> Reply | None:
    """The reply to a GET of `path` (without its query string), or None when it is not a status route."""
    if path in ("/api/v1/rollouts", "/api/v1/rollouts/"):
        return _json(200, list_response(board))
    if path.startswith("/api/v1/rollouts/"):
        ref = _ref(path.removeprefix("/api/v1/rollouts/"))
        if ref is None:
            return _json(404, {"error": "expected /api/v1/rollouts/{namespace}/{deployment}"})
        records = _revisions(board, ref)
        if not records:
            return _json(404, {"error": f"{ref} is not watched (or no longer on the board)"})
        return _json(200, detail_response(records))
    if path == "/" or path.startswith("/rollouts/"):
        from predictor.status.pages import index_page, rollout_page

        if path == "/":
            return Reply(200, index_page(board.latest()).encode(), HTML)
        ref = _ref(path.removeprefix("/rollouts/"))
        records = _revisions(board, ref) if ref is not None else []
        if not records:
            return Reply(404, f"not watched: {path.removeprefix('/rollouts/')}\n".encode(), TEXT)
        return Reply(200, rollout_page(records).encode(), HTML)
    return None
