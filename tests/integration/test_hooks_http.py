"""Argo Rollouts' web metric provider and Flagger's webhooks against the daemon's real HTTP server, with the
requests those controllers send (byte for byte as Go's net/http writes them), the daemon ticking over the
in-memory simulated cluster: a bad Argo Rollout (an error regression) and a healthy Deployment."""

from __future__ import annotations

import json
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from predictor.config import ServerConfig
from predictor.daemon import Daemon
from predictor.demo import SimulatedCluster, demo_config
from predictor.detectors.trend import ThresholdTrendScorer
from predictor.domain import Action, DeploymentRef
from predictor.engine import Engine
from predictor.simulate import NEW_HASH, SimulatedRollout

ROOT = Path(__file__).parents[2]
START = 1_767_268_800.0


class SteppedClock:
    def __init__(self, start: float) -> None:
        self.t = start

    def now(self) -> float:
        return self.t


def raw_request(port: int, request: bytes) -> tuple[int, dict[str, Any]]:
    """Send `request` as it is on a fresh connection; the status and JSON body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"Content-Type: application/json" in head, head
    return status, json.loads(body)


def argo_get(port: int, url_template: str, args: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """What Argo's web provider sends: the template's URL with `{{args.x}}` filled in, GET, no body."""
    url = url_template
    for name, value in args.items():
        url = url.replace("{{args." + name + "}}", value)
    target = "/" + url.split("//", 1)[1].split("/", 1)[1]
    return raw_request(port, (f"GET {target} HTTP/1.1\r\nHost: predictor.predictor.svc:8080\r\n"
                              "User-Agent: Go-http-client/1.1\r\nAccept-Encoding: gzip\r\n"
                              "Connection: close\r\n\r\n").encode())


def flagger_post(port: int, path: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """What Flagger's CallWebhook sends: POST, JSON body, Content-Type application/json."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: predictor.predictor.svc:8080\r\nUser-Agent: Go-http-client/1.1\r\n"
            f"Content-Length: {len(body)}\r\nContent-Type: application/json\r\nAccept-Encoding: gzip\r\n"
            "Connection: close\r\n\r\n").encode()
    return raw_request(port, head + body)


def argo_result(answer: dict[str, Any], metric: dict[str, Any]) -> str:
    """Argo's evaluation of the template's conditions (`result.verdict == "..."`) over the answer."""
    def holds(condition: str) -> bool:
        field, _, literal = condition.partition(" == ")
        assert field == "result.verdict", condition
        return bool(answer["verdict"] == json.loads(literal))

    success, failure = holds(metric["successCondition"]), holds(metric["failureCondition"])
    return "Failed" if failure else "Successful" if success else "Inconclusive"


def test_argo_and_flagger_ask_the_daemon() -> None:
    config = replace(demo_config(Action.ALERT), server=ServerConfig(host="127.0.0.1", port=0))
    bad = SimulatedRollout(DeploymentRef("shop", "web", "rollout"), "error_regression", START)
    good = SimulatedRollout(DeploymentRef("shop", "cart"), "healthy", START)
    cluster = SimulatedCluster([bad, good])
    engine = Engine(config, rollouts=cluster, metrics=cluster, actuator=cluster, notifier=cluster,
                    scorer=ThresholdTrendScorer())
    clock = SteppedClock(START)
    daemon = Daemon(config, engine, readiness_checks={}, clock=clock)
    template = yaml.safe_load((ROOT / "deploy/argo-rollouts/analysis-template.yaml").read_text())
    metric = template["spec"]["metrics"][0]
    canary = yaml.safe_load((ROOT / "deploy/flagger/canary.yaml").read_text())
    hooks = {h["type"]: h for h in canary["spec"]["analysis"]["webhooks"]}
    daemon.start()
    try:
        port = daemon.port
        args = {"namespace": "shop", "rollout": "web", "canary-hash": NEW_HASH}
        status, body = argo_get(port, metric["provider"]["web"]["url"], {**args, "rollout": "search"})
        assert status == 503, body  # not watched (yet): an Error measurement, which Argo asks again
        daemon.tick()  # the one start() runs at once may still be running: this one waits for it
        status, body = argo_get(port, metric["provider"]["web"]["url"], args)
        assert status == 200 and set(body) == {"risk", "verdict", "predicted_breach", "reason", "revision", "phase"}
        if body["phase"] != "acted":  # one tick at risk: predictor waits for `consecutive`, so does Argo
            assert argo_result(body, metric) == "Inconclusive", body
        for _ in range(4):
            clock.t += 15.0
            daemon.tick()
        status, body = argo_get(port, metric["provider"]["web"]["url"], args)
        assert status == 200 and argo_result(body, metric) == "Failed", body
        assert body["risk"] >= config.policy.risk_threshold and "error_ratio" in body["reason"]
        healthy = metric["provider"]["web"]["url"].replace("rollout=", "deployment=")
        status, body = argo_get(port, healthy, {**args, "rollout": "cart", "canary-hash": NEW_HASH})
        assert status == 200 and argo_result(body, metric) == "Successful", body
        status, body = argo_get(port, metric["provider"]["web"]["url"], {**args, "canary-hash": "0123456789"})
        assert status == 503  # another revision's pods: not what predictor judged

        def flagger(hook: str, name: str) -> int:
            path = "/" + hooks[hook]["url"].split("//", 1)[1].split("/", 1)[1]
            payload = {"name": name, "namespace": "shop", "phase": "Progressing", "checksum": "6d5f8c7b9",
                       "metadata": {}}
            return flagger_post(port, path, payload)[0]

        # Flagger rolls back on a status of 202 or lower, counts a failed check on a gate's other statuses
        assert flagger("rollback", "web") == 200 and flagger("rollout", "web") == 409
        assert flagger("rollback", "cart") == 409 and flagger("rollout", "cart") == 200
        assert flagger("rollback", "unknown") == 404
    finally:
        daemon.stop()
