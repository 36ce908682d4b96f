"""KubernetesActuator over real HTTP against the fake API server, checked through the request log, the stored
objects, and the real kubectl binary."""

from __future__ import annotations

import contextlib
import http.client
import http.server
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from predictor.actuators.kubernetes import ActuatorError, KubernetesActuator
from predictor.domain import (
    ANNOTATION_ACTED_AT,
    ANNOTATION_ACTED_REVISION,
    ANNOTATION_ACTION,
    ANNOTATION_DRY_RUN,
    ANNOTATION_METRIC,
    ANNOTATION_PREDICTED_BREACH,
    ANNOTATION_REASON,
    ANNOTATION_RISK,
    Action,
    Decision,
    DeploymentRef,
    RolloutState,
)
from predictor.rollouts.state import parse_time, rollout_state_from_objects
from tests.fakes.kubeapi import FakeKubeAPI, make_deployment
from tests.fixtures.kube import requires_kubectl

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z
REF = DeploymentRef("default", "web")
DEPLOYMENT_PATH = "/apis/apps/v1/namespaces/default/deployments/web"
REASON = "error_ratio of new pods 0.081 >= 0.05 (old 0.004); forecast crosses 0.05 in 240s"


class FixedClock:
    def __init__(self, now: float) -> None:
        self.value = now

    def now(self) -> float:
        return self.value


def decision(action: Action, revision: int = 2, *, dry_run: bool = False) -> Decision:
    return Decision(ref=REF, revision=revision, time=T0, action=action, risk=0.934, reason=REASON,
                    metric="error_ratio", predicted_breach=T0 + 240, dry_run=dry_run)


def set_image(fake: FakeKubeAPI, image: str) -> None:
    fake.patch("apps/v1", "Deployment", "default", "web",
               {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}})


def rollout(fake: FakeKubeAPI) -> RolloutState:
    """The RolloutState the rollout source would report now."""
    return rollout_state_from_objects(fake.get("apps/v1", "Deployment", "default", "web"),
                                      fake.list("apps/v1", "ReplicaSet", "default"))


def deployment(fake: FakeKubeAPI) -> dict[str, Any]:
    return fake.get("apps/v1", "Deployment", "default", "web")


def our_events(fake: FakeKubeAPI) -> list[dict[str, Any]]:
    events = fake.list("v1", "Event", "default")
    return [e for e in events if str(e.get("reason", "")).startswith("Predictor")]


def patches(fake: FakeKubeAPI) -> list[Any]:
    return fake.requests_matching("PATCH", DEPLOYMENT_PATH)


@pytest.fixture
def actuator(fake_kube: FakeKubeAPI) -> KubernetesActuator:
    return KubernetesActuator(fake_kube.api_client(), component="predictor-test", clock=FixedClock(T0),
                              conflict_backoff_seconds=0.0)


@pytest.fixture
def mid_rollout(fake_kube: FakeKubeAPI) -> FakeKubeAPI:
    """web: v1 settled, then v2 half rolled out (revision 2)."""
    fake_kube.create(make_deployment("web", image="app:v1", replicas=4))
    fake_kube.controller.settle()
    set_image(fake_kube, "app:v2")
    for _ in range(3):
        fake_kube.controller.step()
    fake_kube.clear_requests()
    return fake_kube


def test_pause_patches_once_records_why_and_emits_an_event(mid_rollout: FakeKubeAPI,
                                                           actuator: KubernetesActuator) -> None:
    fake = mid_rollout
    before = deployment(fake)
    result = actuator.apply(decision(Action.PAUSE), rollout(fake))
    assert result.applied and result.detail == "paused at revision 2"

    after = deployment(fake)
    assert after["spec"]["paused"] is True
    assert after["spec"]["template"] == before["spec"]["template"]
    annotations = after["metadata"]["annotations"]
    assert {k: v for k, v in annotations.items() if k.startswith("predictor.io/")} == {
        ANNOTATION_ACTED_REVISION: "2",
        ANNOTATION_ACTION: "pause",
        ANNOTATION_ACTED_AT: "2027-01-15T08:00:00Z",
        ANNOTATION_REASON: REASON,
        ANNOTATION_RISK: "0.934",
        ANNOTATION_PREDICTED_BREACH: "2027-01-15T08:04:00Z",
        ANNOTATION_DRY_RUN: "false",
        ANNOTATION_METRIC: "error_ratio",
    }
    assert annotations["deployment.kubernetes.io/revision"] == "2"  # other annotations untouched

    (patch,) = patches(fake)
    assert patch.content_type == "application/merge-patch+json"
    assert patch.body["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]

    (event,) = our_events(fake)
    assert (event["reason"], event["type"], event["message"], event["count"]) == (
        "PredictorPaused", "Warning", REASON, 1)
    assert event["metadata"]["name"].startswith("web.")
    involved = event["involvedObject"]
    assert {k: involved[k] for k in ("kind", "name", "namespace", "apiVersion", "uid")} == {
        "kind": "Deployment", "name": "web", "namespace": "default", "apiVersion": "apps/v1",
        "uid": before["metadata"]["uid"],
    }
    assert event["source"]["component"] == event["reportingComponent"] == "predictor-test"
    # Compared as times: the fake re-serialises timestamps as +00:00 where a real server writes Z.
    assert parse_time(event["firstTimestamp"]) == parse_time(event["lastTimestamp"]) == T0

    # Same revision again: nothing.
    again = actuator.apply(decision(Action.PAUSE), rollout(fake))
    assert (again.applied, again.detail) == (False, "already acted on revision 2 (pause)")
    assert len(patches(fake)) == 1 and len(our_events(fake)) == 1

    # A person resumes: the daemon does not pause the same revision again.
    fake.patch("apps/v1", "Deployment", "default", "web", {"spec": {"paused": False}}, patch_type="merge")
    third = actuator.apply(decision(Action.PAUSE), rollout(fake))
    assert not third.applied and "already acted" in third.detail
    assert deployment(fake)["spec"]["paused"] is False
    assert len(patches(fake)) == 1 and len(our_events(fake)) == 1


def test_alert_only_writes_annotations_and_a_later_pause_still_lands(mid_rollout: FakeKubeAPI,
                                                                    actuator: KubernetesActuator) -> None:
    fake = mid_rollout
    before = deployment(fake)
    assert actuator.apply(decision(Action.ALERT), rollout(fake)).applied
    after = deployment(fake)
    assert after["spec"] == before["spec"]
    assert after["metadata"]["annotations"][ANNOTATION_ACTION] == "alert"
    assert [e["reason"] for e in our_events(fake)] == ["PredictorAlert"]
    assert not actuator.apply(decision(Action.ALERT), rollout(fake)).applied

    # An alert does not use up the revision: escalating to a pause acts.
    assert actuator.apply(decision(Action.PAUSE), rollout(fake)).applied
    assert deployment(fake)["spec"]["paused"] is True
    assert sorted(e["reason"] for e in our_events(fake)) == ["PredictorAlert", "PredictorPaused"]
    assert len(patches(fake)) == 2


def test_pausing_an_already_paused_deployment_records_why_but_reports_no_change(
    mid_rollout: FakeKubeAPI, actuator: KubernetesActuator
) -> None:
    fake = mid_rollout
    fake.patch("apps/v1", "Deployment", "default", "web", {"spec": {"paused": True}}, patch_type="merge")
    result = actuator.apply(decision(Action.PAUSE), rollout(fake))
    assert (result.applied, result.detail) == (False, "already paused at revision 2; reason recorded")
    assert deployment(fake)["metadata"]["annotations"][ANNOTATION_ACTED_REVISION] == "2"
    assert [e["reason"] for e in our_events(fake)] == ["PredictorPaused"]


@requires_kubectl
def test_undo_restores_the_previous_template_as_kubectl_does(fake_kube: FakeKubeAPI,
                                                            actuator: KubernetesActuator) -> None:
    fake_kube.create(make_deployment("web", image="app:v1"))
    fake_kube.controller.settle()
    v1_template = deployment(fake_kube)["spec"]["template"]
    set_image(fake_kube, "app:v2")
    fake_kube.controller.step()
    state = rollout(fake_kube)
    assert (state.revision, state.previous_revision) == (2, 1)
    fake_kube.clear_requests()

    result = actuator.apply(decision(Action.UNDO), state)
    assert result.applied
    assert result.detail.startswith("rolled back from revision 2 to the template of revision 1")

    after = deployment(fake_kube)
    assert after["spec"]["template"] == v1_template
    (patch,) = patches(fake_kube)
    assert patch.content_type == "application/json-patch+json"
    ops = {op["path"]: op for op in patch.body}
    assert "pod-template-hash" not in ops["/spec/template"]["value"]["metadata"]["labels"]
    assert ops["/metadata/resourceVersion"]["op"] == "replace"  # the precondition
    # The controller brought v1's ReplicaSet back as revision 3.
    assert after["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    assert after["metadata"]["annotations"][ANNOTATION_ACTED_REVISION] == "2"
    assert [e["reason"] for e in our_events(fake_kube)] == ["PredictorRolledBack"]
    restored = rollout(fake_kube)
    assert (restored.revision, restored.is_rollback, restored.new_hash) == (3, True, state.old_hashes[0])

    history = fake_kube.kubectl("rollout", "history", "deployment/web")
    assert history.returncode == 0, history.stderr
    assert re.findall(r"^(\d+)\s", history.stdout, re.MULTILINE) == ["2", "3"]  # revision 1 became 3
    third = fake_kube.kubectl("rollout", "history", "deployment/web", "--revision=3")
    assert third.returncode == 0 and re.search(r"Image:\s+app:v1", third.stdout), third.stdout + third.stderr

    # Same decision again: already acted; the Deployment is now at revision 3 anyway.
    assert not actuator.apply(decision(Action.UNDO), state).applied
    assert len(patches(fake_kube)) == 1


def test_undo_of_a_paused_deployment_resumes_it_in_the_same_patch(mid_rollout: FakeKubeAPI,
                                                                 actuator: KubernetesActuator) -> None:
    fake = mid_rollout
    assert actuator.apply(decision(Action.PAUSE), rollout(fake)).applied
    assert deployment(fake)["spec"]["paused"] is True
    fake.clear_requests()

    result = actuator.apply(decision(Action.UNDO), rollout(fake))  # an undo may follow a pause
    assert result.applied
    (patch,) = patches(fake)
    ops = {op["path"]: op["value"] for op in patch.body}
    assert ops["/spec/paused"] is False and "/spec/template" in ops
    after = deployment(fake)
    assert after["spec"]["paused"] is False
    assert after["spec"]["template"]["spec"]["containers"][0]["image"] == "app:v1"
    assert after["metadata"]["annotations"][ANNOTATION_ACTION] == "undo"
    fake.controller.settle()
    assert fake.controller.is_complete("default", "web")
    assert rollout(fake).old_hashes == ()


def test_undo_does_nothing_when_the_template_already_matches(mid_rollout: FakeKubeAPI,
                                                            actuator: KubernetesActuator) -> None:
    """Someone reverted the template and the controller has not synced yet (a race on a real cluster)."""
    fake = mid_rollout
    state = rollout(fake)
    controller_hook, fake.state.on_write = fake.state.on_write, None  # hold the simulated controller back
    try:
        set_image(fake, "app:v1")
        assert deployment(fake)["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
        fake.clear_requests()
        result = actuator.apply(decision(Action.UNDO), state)
    finally:
        fake.state.on_write = controller_hook
    assert (result.applied, result.detail) == (False, "already at template of revision 1")
    assert patches(fake) == [] and our_events(fake) == []


def test_undo_without_an_earlier_revision_is_a_clear_error(fake_kube: FakeKubeAPI,
                                                          actuator: KubernetesActuator) -> None:
    fake_kube.create(make_deployment("web"))
    fake_kube.controller.settle()
    with pytest.raises(ActuatorError, match="undo of default/web revision 1 failed: no ReplicaSet of an"):
        actuator.apply(decision(Action.UNDO, revision=1), rollout(fake_kube))


def test_conflicts_are_retried_on_a_fresh_read(mid_rollout: FakeKubeAPI,
                                               actuator: KubernetesActuator) -> None:
    fake = mid_rollout
    fake.inject_conflicts("Deployment", "default", "web", count=2)
    result = actuator.apply(decision(Action.PAUSE), rollout(fake))
    assert (result.applied, result.detail) == (True, "paused at revision 2 (attempt 3)")
    assert [r.status for r in patches(fake)] == [409, 409, 200]
    reads = fake.requests_matching("GET", DEPLOYMENT_PATH)
    assert len(reads) == 3  # one fresh read per attempt
    assert deployment(fake)["spec"]["paused"] is True
    assert len(our_events(fake)) == 1


def test_conflicts_beyond_the_attempts_are_a_clear_error(mid_rollout: FakeKubeAPI,
                                                        actuator: KubernetesActuator) -> None:
    fake = mid_rollout
    fake.inject_conflicts("Deployment", "default", "web", count=6)
    with pytest.raises(ActuatorError, match=r"pause of default/web revision 2 failed: .*409 Conflict on all"):
        actuator.apply(decision(Action.PAUSE), rollout(fake))
    assert len(patches(fake)) == 5
    assert deployment(fake)["spec"].get("paused") is not True
    assert ANNOTATION_ACTED_REVISION not in deployment(fake)["metadata"]["annotations"]
    assert our_events(fake) == []


def test_a_stale_read_gets_409_from_the_server(mid_rollout: FakeKubeAPI,
                                               actuator: KubernetesActuator) -> None:
    """The resourceVersion precondition is real: a write that raced ours is not overwritten."""
    fake = mid_rollout
    stale = deployment(fake)["metadata"]["resourceVersion"]
    fake.patch("apps/v1", "Deployment", "default", "web", {"metadata": {"labels": {"touched": "yes"}}},
               patch_type="merge")
    api = fake.api_client()
    with pytest.raises(ApiException) as caught:
        client.AppsV1Api(api).patch_namespaced_deployment(
            "web", "default", {"spec": {"paused": True}, "metadata": {"resourceVersion": stale}},
            _content_type="application/merge-patch+json")
    assert caught.value.status == 409
    assert actuator.apply(decision(Action.PAUSE), rollout(fake)).applied  # ours reads fresh


def test_dry_run_records_what_it_would_do_and_emits_one_event_per_action(
        mid_rollout: FakeKubeAPI, actuator: KubernetesActuator, fake_kube: FakeKubeAPI) -> None:
    fake = mid_rollout
    before = deployment(fake)
    for action in (Action.PAUSE, Action.UNDO):
        result = actuator.apply(decision(action, dry_run=True), rollout(fake))
        assert (result.applied, result.detail) == (False, f"dry run: would {action.value} (recorded)")
    after = deployment(fake)
    assert after["spec"] == before["spec"], "nothing changed but the record"
    assert after["metadata"]["annotations"]["predictor.io/dry-run"] == "would undo revision 2 at 2027-01-15T08:00:00Z"
    assert "predictor.io/acted-revision" not in after["metadata"]["annotations"], "going live later still acts"
    assert [p.content_type for p in patches(fake)] == ["application/merge-patch+json"] * 2
    events = our_events(fake)
    assert [e["reason"] for e in events] == ["PredictorDryRun", "PredictorDryRun"]
    assert events[0]["message"] == REASON
    assert len({e["metadata"]["name"] for e in events}) == 2  # unique names at the same instant

    # A restarted daemon (a new actuator, no memory) decides the same again: the record says it was done.
    restarted = KubernetesActuator(fake_kube.api_client(), component="predictor-test", clock=FixedClock(T0 + 60))
    for action in (Action.PAUSE, Action.UNDO):
        again = restarted.apply(decision(action, dry_run=True), rollout(fake))
        assert again.detail == "dry run: already recorded (would undo revision 2 at 2027-01-15T08:00:00Z)"
    assert len(our_events(fake)) == 2, "no PredictorDryRun Event repeated"
    assert len(patches(fake)) == 2


def test_a_deployment_gone_or_moved_on_is_left_alone(mid_rollout: FakeKubeAPI,
                                                    actuator: KubernetesActuator) -> None:
    fake = mid_rollout
    state = rollout(fake)
    moved = actuator.apply(decision(Action.PAUSE, revision=1), state)
    assert (moved.applied, moved.detail) == (False, "deployment is at revision 2, not 1: left alone")
    fake.delete("apps/v1", "Deployment", "default", "web")
    gone = actuator.apply(decision(Action.PAUSE), state)
    assert (gone.applied, gone.detail) == (False, "deployment gone")
    assert patches(fake) == [] and our_events(fake) == []


class _EventRejectingProxy(http.server.ThreadingHTTPServer):
    """Forwards every request to the fake except Event creation, answered 500 (an unhealthy API server)."""

    daemon_threads = True

    def __init__(self, upstream_port: int) -> None:
        upstream = upstream_port

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                """Silence the access log."""

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.command == "POST" and self.path.split("?")[0].endswith("/events"):
                    payload = b'{"kind":"Status","apiVersion":"v1","status":"Failure","code":500}'
                    self.send_response(500)
                else:
                    conn = http.client.HTTPConnection("127.0.0.1", upstream, timeout=10)
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    answer = conn.getresponse()
                    payload = answer.read()
                    conn.close()
                    self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _forward

        super().__init__(("127.0.0.1", 0), Handler)


@pytest.fixture
def event_rejecting_url(fake_kube: FakeKubeAPI) -> Iterator[str]:
    proxy = _EventRejectingProxy(fake_kube.port)
    thread = threading.Thread(target=proxy.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{proxy.server_address[1]}"
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join(timeout=5)


def test_an_event_failure_is_logged_and_does_not_fail_the_action(
    mid_rollout: FakeKubeAPI, event_rejecting_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with contextlib.closing(client.ApiClient(client.Configuration(host=event_rejecting_url))) as api:
        actuator = KubernetesActuator(api, clock=FixedClock(T0), conflict_backoff_seconds=0.0)
        with caplog.at_level("INFO", logger="predictor.actuators.kubernetes"):
            result = actuator.apply(decision(Action.PAUSE), rollout(mid_rollout))
    assert result.applied
    assert deployment(mid_rollout)["spec"]["paused"] is True
    assert our_events(mid_rollout) == []
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    (error,) = errors
    assert "could not create Event PredictorPaused on deployment default/web: HTTP 500" in error
    infos = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
    assert infos == [f"deployment default/web: paused at revision 2 (risk 0.93): {REASON}"]
    # The one WARNING per action is the engine's (it logs this result's detail).
    assert [r for r in caplog.records if r.levelname == "WARNING"] == []


def test_no_action_touches_nothing(mid_rollout: FakeKubeAPI, actuator: KubernetesActuator) -> None:
    result = actuator.apply(decision(Action.NONE), rollout(mid_rollout))
    assert not result.applied
    assert mid_rollout.requests == []



def test_a_missing_event_is_created_from_the_deployments_record_once(mid_rollout: FakeKubeAPI,
                                                                     actuator: KubernetesActuator) -> None:
    fake = mid_rollout
    assert actuator.apply(decision(Action.PAUSE), rollout(fake)).applied
    [event] = our_events(fake)
    assert actuator.ensure_recorded(rollout(fake)), "the Event is there"
    assert len(our_events(fake)) == 1, "a second create of the same Event is refused, not duplicated"
    fake.delete("v1", "Event", "default", event["metadata"]["name"])  # as if killed between PATCH and Event
    assert actuator.ensure_recorded(rollout(fake))
    [again] = our_events(fake)
    assert (again["metadata"]["name"], again["reason"], again["message"]) == (
        event["metadata"]["name"], "PredictorPaused", REASON)
    assert again["involvedObject"]["uid"] == deployment(fake)["metadata"]["uid"]
    assert patches(fake) != [] and len(patches(fake)) == 1, "nothing re-applied"
