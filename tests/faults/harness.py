"""What the fault-injection tests share: a bad (and a healthy) release rolling out under `predictor run`, the
dependencies behind fault proxies, and the counts the results table is made of."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.fakes.kubeapi import FakeKubeAPI, make_deployment
from tests.fixtures.alertmanager import RecordingServer, webhook_alerts
from tests.integration.live import (
    GOOD_ERROR_SHARE,
    TrafficFeeder,
    image_of,
    set_image,
    write_config,
)

TABLE_ENV = "PREDICTOR_FAULTS_TABLE"
"""When set, the suite appends one JSON line per scenario to this file (benchmarks/faults.py makes the table)."""


def namespace() -> str:
    return f"faults-{uuid.uuid4().hex[:6]}"


def deploy(fake: FakeKubeAPI, ns: str, *names: str) -> None:
    for name in names:
        fake.create(make_deployment(name, ns, image=f"{name}:v1", replicas=4))
    fake.controller.settle()


def config_file(tmp_path: Path, *, prometheus: str, alertmanager: str | None, kube: FakeKubeAPI | str, ns: str,
                **changes: Any) -> Path:
    """The e2e test's config (1 s ticks, 30 s lookback, trend scorer) with `changes` as `section__key=value`."""
    path = tmp_path / "predictor.yaml"
    kubeconfig = tmp_path / "kubeconfig"
    if isinstance(kube, FakeKubeAPI):
        kube.write_kubeconfig(kubeconfig)
    else:
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "clusters": [{"name": "fake", "cluster": {"server": kube}}],
            "users": [{"name": "fake", "user": {}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": "default"}}],
            "current-context": "fake"}))
    write_config(path, prometheus=prometheus, alertmanager=alertmanager, kubeconfig=kubeconfig, namespace=ns)
    document = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        section, key = dotted.split("__", 1)
        document.setdefault(section, {})[key] = value
    path.write_text(yaml.safe_dump(document))
    return path


def alerts_for(bodies: list[Any], deployment: str, status: str, alertname: str = "PredictedSLOBreach"
               ) -> list[dict[str, Any]]:
    return [a for a in webhook_alerts(bodies, status)
            if a["labels"].get("deployment") == deployment and a["labels"].get("alertname") == alertname]


def applied_patches(fake: FakeKubeAPI, ns: str, name: str) -> int:
    """PATCHes of the Deployment the API server applied (2xx): each is one action carried out."""
    path = rf"/apis/apps/v1/namespaces/{ns}/deployments/{name}"
    return sum(1 for r in fake.requests_matching(method="PATCH", path=path) if r.status < 300)


def predictor_events(fake: FakeKubeAPI, ns: str, name: str | None = None) -> list[str]:
    return [e["reason"] for e in fake.list("v1", "Event", ns)
            if e.get("reason", "").startswith("Predictor") and (name is None or e["involvedObject"]["name"] == name)]


def step_until(fake: FakeKubeAPI, ns: str, done: Callable[[], bool], *, timeout: float, every: float = 2.0,
               steps: int | None = None) -> bool:
    """Move the rollouts one replica every `every` seconds (at most `steps` times) until `done()` or timeout."""
    deadline = time.monotonic() + timeout
    moved = 0
    next_step = time.monotonic()
    while time.monotonic() < deadline:
        if done():
            return True
        if time.monotonic() >= next_step and (steps is None or moved < steps):
            fake.controller.step(ns)
            moved += 1
            next_step = time.monotonic() + every
        time.sleep(0.1)
    return done()


def undone(fake: FakeKubeAPI, ns: str, name: str) -> Callable[[], bool]:
    return lambda: image_of(fake, ns, name) == f"{name}:v1"


def roll_out(fake: FakeKubeAPI, ns: str, *names: str) -> None:
    for name in names:
        set_image(fake, ns, name, f"{name}:v2")


@dataclass
class Row:
    """One line of the results table (see benchmarks/faults.py)."""

    scenario: str
    faults: str
    actions_expected: int
    actions_taken: int
    actions_duplicated: int
    alerts_expected: int
    alerts_delivered: int
    notes: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def actions_lost(self) -> int:
        return max(0, self.actions_expected - self.actions_taken)

    @property
    def alerts_lost(self) -> int:
        return max(0, self.alerts_expected - self.alerts_delivered)


def record(row: Row) -> None:
    target = os.environ.get(TABLE_ENV)
    if not target:
        return
    with open(target, "a", encoding="utf-8") as out:
        out.write(json.dumps({**row.__dict__, "extra": dict(row.extra), "actions_lost": row.actions_lost,
                              "alerts_lost": row.alerts_lost}) + "\n")


def delivered(webhook: RecordingServer, deployment: str, alertname: str = "PredictedSLOBreach") -> int:
    """1 when the alert reached the receiver firing and later resolved, else 0 (what 'delivered' counts)."""
    firing = alerts_for(webhook.bodies, deployment, "firing", alertname)
    resolved = alerts_for(webhook.bodies, deployment, "resolved", alertname)
    return 1 if firing and resolved else 0


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def lines(output: str) -> Iterator[dict[str, Any]]:
    for line in output.splitlines():
        if line.startswith("{"):
            try:
                yield json.loads(line)
            except ValueError:
                continue


class RampingFeeder(TrafficFeeder):
    """A release that degrades: a pod of a bad image starts at the good error share, which then grows by
    `ramp_per_second` (a leak). Only a trend over history sees it coming before it breaches."""

    def __init__(self, fake: FakeKubeAPI, live: Any, ns: str, bad_images: Any, ramp_per_second: float) -> None:
        super().__init__(fake, live, ns, bad_images)
        self.ramp_per_second = ramp_per_second
        self.first_seen: dict[str, float] = {}

    def bad_share(self, pod: str) -> float:
        since = time.monotonic() - self.first_seen.setdefault(pod, time.monotonic())
        return min(0.5, GOOD_ERROR_SHARE + self.ramp_per_second * since)
