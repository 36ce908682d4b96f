"""`server.external_url`: validated at start, and where it leads: the alert's generatorURL (over HTTP to a recording
Alertmanager API) and the `predictor.io/status-url` annotation (through the fake Kubernetes API server)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from predictor.actuators.kubernetes import KubernetesActuator
from predictor.alerting import AlertmanagerNotifier
from predictor.config import AlertmanagerConfig, ConfigError, ServerConfig, load_config
from predictor.domain import ANNOTATION_STATUS_URL, Action, Alert, Decision, DeploymentRef
from predictor.rollouts.state import rollout_state_from_objects
from tests.fakes.kubeapi import FakeKubeAPI, make_deployment
from tests.fixtures.alertmanager import RecordingServer

SERVER = ServerConfig(external_url="https://predictor.example.com/ops")


def config_with(tmp_path: Path, server: str) -> Path:
    path = tmp_path / "predictor.yaml"
    path.write_text(f"targets:\n  - namespace: shop\nserver:\n{server}", encoding="utf-8")
    return path


def test_the_page_url_is_read_with_its_route_prefix_and_bad_ones_are_refused(tmp_path: Path) -> None:
    config = load_config(config_with(tmp_path, "  external_url: https://predictor.example.com/ops/\n"))
    assert config.server.external_url == "https://predictor.example.com/ops"
    assert config.server.page_url(DeploymentRef("shop", "checkout")) == (
        "https://predictor.example.com/ops/rollouts/shop/checkout")
    assert load_config(config_with(tmp_path, "  port: 8080\n")).server.page_url(DeploymentRef("a", "b")) == ""
    for bad, problem in (("predictor.example.com", "expected an http:// or https:// URL"),
                         ("https://predictor.example.com/rollouts/?x=1", "expected the server's base URL")):
        with pytest.raises(ConfigError) as caught:
            load_config(config_with(tmp_path, f"  external_url: '{bad}'\n"))
        assert f"server.external_url: {problem}" in str(caught.value) and bad in str(caught.value)


def test_the_alert_links_to_the_rollouts_page() -> None:
    receiver = RecordingServer()
    notifier = AlertmanagerNotifier(AlertmanagerConfig(url=receiver.url, generator_url="http://fallback:8080/"),
                                    resend_seconds=60.0, page_url=SERVER.page_url)
    try:
        now = time.time()
        alert = Alert(name="PredictedSLOBreach", ref=DeploymentRef("shop", "checkout"), revision=2,
                      severity="critical", metric="error_ratio", summary="s", description="d", starts_at=now - 30)
        notifier.send([alert], [], now)
        [batch] = receiver.wait_for(lambda bodies: bodies)
        assert [a["generatorURL"] for a in batch] == ["https://predictor.example.com/ops/rollouts/shop/checkout"]
    finally:
        notifier.close(timeout=1.0)
        receiver.close()


def test_the_action_records_the_page_on_the_deployment(fake_kube: FakeKubeAPI) -> None:
    fake_kube.create(make_deployment("web", image="app:v1", replicas=4))
    fake_kube.controller.settle()
    fake_kube.patch("apps/v1", "Deployment", "default", "web",
                    {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app:v2"}]}}}})
    fake_kube.controller.step()
    state = rollout_state_from_objects(fake_kube.get("apps/v1", "Deployment", "default", "web"),
                                       fake_kube.list("apps/v1", "ReplicaSet", "default"))
    actuator = KubernetesActuator(fake_kube.api_client(), conflict_backoff_seconds=0.0, page_url=SERVER.page_url)
    decision = Decision(ref=DeploymentRef("default", "web"), revision=state.revision, time=time.time(),
                        action=Action.PAUSE, risk=0.9, reason="why", metric="error_ratio")
    assert actuator.apply(decision, state).applied
    annotations = fake_kube.get("apps/v1", "Deployment", "default", "web")["metadata"]["annotations"]
    assert annotations[ANNOTATION_STATUS_URL] == "https://predictor.example.com/ops/rollouts/default/web"
