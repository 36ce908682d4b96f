"""End to end: `predictor run` as a process, a real Prometheus scraping per-pod traffic, a real Alertmanager
with a webhook receiver, and the fake Kubernetes API server with its deployment controller.

A bad release (10 % errors on its new pods) is undone before the Deployment-level error ratio breaches 5 %,
the alert reaches the webhook and resolves after the undo; a healthy release rolling out beside it is left
alone and never alerted on.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.kubeapi import FakeKubeAPI, make_deployment
from tests.fixtures.alertmanager import RecordingServer, webhook_alerts
from tests.fixtures.prometheus import LivePrometheus
from tests.integration.live import (
    BAD_ERROR_SHARE,
    GOOD_ERROR_SHARE,
    TrafficFeeder,
    image_of,
    set_image,
    start_daemon,
    stop_daemon,
    wait_for_first_tick,
    write_config,
)

pytestmark = [pytest.mark.prometheus, pytest.mark.alertmanager]


def alerts_for(bodies: list[Any], deployment: str, status: str) -> list[dict[str, Any]]:
    return [a for a in webhook_alerts(bodies, status) if a["labels"].get("deployment") == deployment]


def test_bad_release_is_undone_and_alerted_healthy_release_is_left_alone(
    fake_kube: FakeKubeAPI,
    live_prometheus: LivePrometheus,
    alertmanager: Any,
    webhook_receiver: RecordingServer,
    tmp_path: Path,
) -> None:
    namespace = f"e2e-{uuid.uuid4().hex[:6]}"
    fake_kube.create(make_deployment("checkout", namespace, image="checkout:v1", replicas=4))
    fake_kube.create(make_deployment("catalog", namespace, image="catalog:v1", replicas=4))
    fake_kube.controller.settle()
    config = tmp_path / "predictor.yaml"
    write_config(config, prometheus=live_prometheus.url, alertmanager=alertmanager.url,
                 kubeconfig=fake_kube.write_kubeconfig(tmp_path / "kubeconfig"), namespace=namespace)

    with TrafficFeeder(fake_kube, live_prometheus, namespace, bad_images={"checkout:v2"}):
        live_prometheus.wait_for(f'count(http_requests_total{{namespace="{namespace}"}})',
                                 lambda r: bool(r) and float(r[0]["value"][1]) >= 16, timeout=20)
        daemon = start_daemon(config)
        try:
            wait_for_first_tick(config, daemon)
            for name, image in (("checkout", "checkout:v2"), ("catalog", "catalog:v2")):
                set_image(fake_kube, namespace, name, image)
            # The rollout moves one replica every 2 seconds, like a controller waiting for readiness.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and image_of(fake_kube, namespace, "checkout") != "checkout:v1":
                fake_kube.controller.step(namespace)
                time.sleep(2.0)
            assert image_of(fake_kube, namespace, "checkout") == "checkout:v1", "the bad release was not undone"
            checkout = fake_kube.get("apps/v1", "Deployment", namespace, "checkout")
            # replicas move only when the test steps the controller, so these are the counts at the undo
            pods_at_undo = {"checkout:v1": 0, "checkout:v2": 0}
            for rs in fake_kube.list("apps/v1", "ReplicaSet", namespace):
                image = rs["spec"]["template"]["spec"]["containers"][0]["image"]
                if image in pods_at_undo:
                    pods_at_undo[image] += rs["spec"]["replicas"]
            annotations = checkout["metadata"]["annotations"]
            assert annotations["predictor.io/acted-revision"] == "2"
            assert annotations["predictor.io/action"] == "undo"
            assert "error_ratio" in annotations["predictor.io/reason"]

            firing = webhook_receiver.wait_for(lambda b: alerts_for(b, "checkout", "firing"), timeout=20)
            alert = alerts_for(firing, "checkout", "firing")[0]
            assert alert["labels"]["alertname"] == "PredictedSLOBreach"
            assert alert["labels"]["revision"] == "2" and alert["labels"]["metric"] == "error_ratio"
            assert alert["labels"]["namespace"] == namespace
            assert alerts_for(webhook_receiver.bodies, "checkout", "resolved") == [], "resolved before the rollback"

            # the rollback completes, the healthy rollout finishes and bakes a while under watch
            for _ in range(12):
                fake_kube.controller.step(namespace)
                time.sleep(0.5)
            resolved = webhook_receiver.wait_for(lambda b: alerts_for(b, "checkout", "resolved"), timeout=20)
            assert alerts_for(resolved, "checkout", "resolved")[0]["labels"]["revision"] == "2"
        finally:
            output = stop_daemon(daemon)
    assert daemon.returncode == 0, output[-3000:]

    # Undone before the Deployment as a whole breached 5 %: its error ratio at the undo, from the pod counts.
    bad, good = pods_at_undo["checkout:v2"], pods_at_undo["checkout:v1"]
    assert bad >= 1
    deployment_error_ratio = (bad * BAD_ERROR_SHARE + good * GOOD_ERROR_SHARE) / (bad + good)
    assert deployment_error_ratio < 0.05, f"acted after the breach: {bad} bad and {good} good pods"
    catalog = fake_kube.get("apps/v1", "Deployment", namespace, "catalog")
    assert image_of(fake_kube, namespace, "catalog") == "catalog:v2"
    assert "predictor.io/acted-revision" not in catalog["metadata"].get("annotations", {})
    assert alerts_for(webhook_receiver.bodies, "catalog", "firing") == []
    events = [e for e in fake_kube.list("v1", "Event", namespace) if e.get("reason", "").startswith("Predictor")]
    assert [(e["involvedObject"]["name"], e["reason"]) for e in events] == [("checkout", "PredictorRolledBack")]
    deployments = rf"/apis/apps/v1/namespaces/{namespace}/deployments/"
    applied = [r for r in fake_kube.requests_matching(method="PATCH", path=deployments + ".*") if r.status < 300]
    assert [r.path.rsplit("/", 1)[-1] for r in applied] == ["checkout"], "exactly one patch, the undo"
    warnings = [line for line in output.splitlines() if '"level": "WARNING"' in line and "undo" in line]
    assert len(warnings) == 1 and f"{namespace}/checkout" in warnings[0], output[-3000:]
