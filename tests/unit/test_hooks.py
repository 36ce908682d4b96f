"""The answers to Argo Rollouts' web metric provider and Flagger's webhooks, from a rollout's last decision."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from predictor.config import PolicyConfig
from predictor.domain import Action, DeploymentRef, RolloutState
from predictor.hooks import analysis_reply, flagger_reply, judge

POLICY = PolicyConfig()


@dataclass
class Entry:
    action: Action


@dataclass
class View:
    state: RolloutState
    risk: float = 0.0
    reason: str = "watching"
    phase: str = "watching"
    predicted_breach: float | None = None
    decisions: list[Entry] = field(default_factory=list)

    @property
    def actions(self) -> list[Entry]:
        return [d for d in self.decisions if d.action in (Action.PAUSE, Action.UNDO)]


class Board:
    def __init__(self, *views: View) -> None:
        self.views = views

    def revisions(self, ref: DeploymentRef) -> list[View]:
        return [v for v in self.views if v.state.ref == ref]


def state(kind: str = "rollout", new_hash: str = "7b9c4d2e1f", revision: int = 2) -> RolloutState:
    return RolloutState(ref=DeploymentRef("shop", "web", kind), revision=revision, new_hash=new_hash,
                        old_hashes=("5d8f7c6b9a",), desired_replicas=4, updated_replicas=1, ready_new_replicas=1,
                        old_replicas=3, started_at=0.0)


@pytest.mark.parametrize(("view", "verdict"), [
    (View(state(), risk=0.2), "pass"),
    (View(state(), risk=0.6, reason="warning (alert only): ..."), "inconclusive"),
    (View(state(), risk=0.0, reason="blind for 8 ticks: no data"), "inconclusive"),
    (View(state(), risk=0.8, phase="at_risk"), "inconclusive"),  # one tick at risk: not confirmed yet
    (View(state(), risk=0.8, phase="acted"), "fail"),
    (View(state(), risk=0.1, decisions=[Entry(Action.PAUSE)]), "fail"),
    (View(state(), risk=0.6, decisions=[Entry(Action.ALERT)]), "inconclusive"),
])
def test_verdicts(view: View, verdict: str) -> None:
    assert judge(view, POLICY).verdict == verdict


def reply(result: tuple[int, bytes, str]) -> tuple[int, dict[str, Any]]:
    status, body, content_type = result
    assert content_type == "application/json"
    return status, json.loads(body)


def test_analysis_answers_for_the_canary_hash_it_was_asked_about() -> None:
    board = Board(View(state(), risk=0.95, reason="undo: error_ratio ...", phase="acted",
                       predicted_breach=1_800_000_000.0))
    status, body = reply(analysis_reply(board, POLICY, "namespace=shop&rollout=web&canaryHash=7b9c4d2e1f"))
    assert status == 200 and body["verdict"] == "fail" and body["risk"] == 0.95
    assert body["predicted_breach"] == "2027-01-15T08:00:00Z" and body["revision"] == 2
    status, body = reply(analysis_reply(board, POLICY, "namespace=shop&rollout=web&canaryHash=0000000000"))
    assert status == 503 and "not watched" in body["error"]  # an Error measurement: Argo asks again
    assert reply(analysis_reply(board, POLICY, "rollout=web"))[0] == 400


def test_flagger_rollback_is_200_only_while_a_breach_is_predicted() -> None:
    payload = json.dumps({"name": "web", "namespace": "shop", "phase": "Progressing", "checksum": "abc",
                          "metadata": {}}).encode()
    calm = Board(View(state(kind="deployment"), risk=0.1))
    risky = Board(View(state(kind="deployment"), risk=0.9, phase="acted"))
    assert reply(flagger_reply(calm, POLICY, "rollback", payload))[0] == 409
    assert reply(flagger_reply(risky, POLICY, "rollback", payload))[0] == 200
    assert reply(flagger_reply(Board(), POLICY, "rollback", payload))[0] == 404
    assert reply(flagger_reply(calm, POLICY, "gate", payload))[0] == 200
    assert reply(flagger_reply(risky, POLICY, "gate", payload))[0] == 409
    assert reply(flagger_reply(Board(), POLICY, "gate", payload))[0] == 200
    assert reply(flagger_reply(calm, POLICY, "gate", b"not json"))[0] == 400
