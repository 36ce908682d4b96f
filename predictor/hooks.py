"""What predictor tells the controllers that ask it: Argo Rollouts' `web` metric provider and Flagger's webhooks.

The daemon's HTTP server answers, from what the engine last decided for the rollout (the status board):

- `GET /api/v1/analysis?namespace=..&rollout=..&canaryHash=..` (Argo's `web` provider; a Deployment with
  `&deployment=..`): 200 with `{"risk", "verdict": "pass"|"fail"|"inconclusive", "predicted_breach", "reason",
  "revision", "phase"}`; 503 while predictor has not seen that canary (Argo counts an Error and asks again
  10 s later, aborting only after `consecutiveErrorLimit`);
- `POST /api/v1/flagger/rollback` (a `rollback` webhook): 200, which makes Flagger roll back at once, only while
  predictor predicts a breach for that canary; 409 while it does not, 404 when it does not watch it (Flagger
  treats any status above 202 as "do not roll back");
- `POST /api/v1/flagger/gate` (a `rollout` webhook, asked before each analysis iteration): 200 unless a breach
  is predicted (409: Flagger counts a failed check); 200 too for a canary predictor does not watch (no
  objection of ours).

A verdict is `fail` once the policy decided on the revision (its risk held at `risk_threshold` for
`consecutive` ticks: it paused or undid it, or with `action: alert` alerted), `inconclusive` at `alert_threshold`
(a warning, or a risk waiting for confirmation) or when the rollout is blind, `pass` otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qs

from predictor.config import PolicyConfig
from predictor.domain import Action, DeploymentRef, RolloutState
from predictor.rollouts.state import format_time

PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"
ACTED = "acted"
"""The policy's phase once it decided on a revision (`policy.Phase.ACTED`): confirmed over `consecutive` ticks."""
JSON = "application/json"
HTTP_OK, HTTP_BAD_REQUEST, HTTP_NOT_FOUND, HTTP_CONFLICT, HTTP_UNAVAILABLE = 200, 400, 404, 409, 503


class RolloutView(Protocol):
    """What a hook reads of one rollout revision (the status board's RolloutRecord has these)."""

    state: RolloutState
    phase: str
    risk: float
    reason: str
    predicted_breach: float | None

    @property
    def actions(self) -> Sequence[Any]: ...


class Views(Protocol):
    def revisions(self, ref: DeploymentRef) -> Sequence[RolloutView]: ...


@dataclass(frozen=True)
class Verdict:
    verdict: str
    risk: float
    reason: str
    revision: int
    phase: str
    predicted_breach: float | None = None

    def payload(self) -> dict[str, Any]:
        breach = self.predicted_breach
        return {"risk": round(self.risk, 4), "verdict": self.verdict, "reason": self.reason,
                "predicted_breach": format_time(breach) if breach is not None else None,
                "revision": self.revision, "phase": self.phase}


def judge(view: RolloutView, policy: PolicyConfig) -> Verdict:
    """The verdict on one rollout revision (see the module docstring)."""
    acted = [a for a in view.actions if getattr(a, "action", None) in (Action.PAUSE, Action.UNDO)]
    if acted or str(view.phase) == ACTED:
        verdict = FAIL
    elif view.risk >= policy.alert_threshold or view.reason.startswith("blind"):
        verdict = INCONCLUSIVE
    else:
        verdict = PASS
    reason = view.reason or "no decision yet"
    if acted:
        reason = f"predictor acted ({acted[-1].action}) on this revision: {reason}"
    return Verdict(verdict, view.risk, reason, view.state.revision, str(view.phase), view.predicted_breach)


def find_view(views: Views, ref: DeploymentRef, pod_hash: str | None) -> RolloutView | None:
    """The newest revision of `ref` (of kind rollout or deployment) whose new pods have `pod_hash` (any hash
    when None)."""
    for kind in (ref.kind, "rollout", "deployment"):
        for view in views.revisions(DeploymentRef(ref.namespace, ref.name, kind)):
            if pod_hash is None or view.state.new_hash == pod_hash:
                return view
    return None


def _json(status: int, payload: Mapping[str, Any]) -> tuple[int, bytes, str]:
    return status, (json.dumps(payload, separators=(",", ":"), allow_nan=False) + "\n").encode(), JSON


def analysis_reply(views: Views, policy: PolicyConfig, query: str) -> tuple[int, bytes, str]:
    """`GET /api/v1/analysis?namespace=&rollout=&canaryHash=` for Argo Rollouts' web metric provider."""
    params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    namespace, name = params.get("namespace", ""), params.get("rollout") or params.get("deployment", "")
    if not namespace or not name:
        return _json(HTTP_BAD_REQUEST, {"error": "expected ?namespace=NS&rollout=NAME[&canaryHash=HASH]"})
    kind = "rollout" if params.get("rollout") else "deployment"
    view = find_view(views, DeploymentRef(namespace, name, kind), params.get("canaryHash") or None)
    if view is None:
        what = f" with canary hash {params['canaryHash']}" if params.get("canaryHash") else ""
        return _json(HTTP_UNAVAILABLE, {"error": f"{namespace}/{name}{what} is not watched (yet)"})
    return _json(HTTP_OK, judge(view, policy).payload())


def flagger_reply(views: Views, policy: PolicyConfig, hook: str, body: bytes) -> tuple[int, bytes, str]:
    """`POST /api/v1/flagger/{rollback,gate}` with Flagger's `{name, namespace, phase, checksum, metadata}`."""
    try:
        payload = json.loads(body or b"{}")
        name, namespace = str(payload["name"]), str(payload["namespace"])
        name = str((payload.get("metadata") or {}).get("deployment") or name)  # a Canary named otherwise
    except (ValueError, KeyError, TypeError, AttributeError):
        return _json(HTTP_BAD_REQUEST, {"error": "expected Flagger's JSON payload {name, namespace, phase, ...}"})
    view = find_view(views, DeploymentRef(namespace, name), None)
    if view is None:
        if hook == "gate":
            return _json(HTTP_OK, {"verdict": None, "reason": f"{namespace}/{name} is not watched: no objection"})
        return _json(HTTP_NOT_FOUND, {"error": f"{namespace}/{name} is not watched: no rollback asked"})
    verdict = judge(view, policy)
    breach = verdict.verdict == FAIL
    if hook == "rollback":
        return _json(HTTP_OK if breach else HTTP_CONFLICT, verdict.payload())
    return _json(HTTP_CONFLICT if breach else HTTP_OK, verdict.payload())
