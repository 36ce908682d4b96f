"""The Swarm rollout source and actuator against a real dockerd in swarm mode (`tests/fixtures/docker.py`).

A service is updated with parallelism 1 and a long delay, so it stays mid-update while the test looks: the
source tells its new task from its old one by their specs and names them as Swarm names their containers; the
actuator rolls it back once (Swarm's own state says so), records why in the service's labels, and a second
decision on the same revision changes nothing.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest

from predictor.actuators.swarm import SwarmActuator
from predictor.config import SwarmTarget, parse_config
from predictor.domain import Action, Decision, RolloutState
from predictor.preflight import check_docker
from predictor.rollouts.swarm import SwarmRolloutSource
from tests.fixtures.docker import Swarm

NANO = 1_000_000_000


def wait_until(condition: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def create_service(swarm: Swarm, name: str, image: str, *, replicas: int, delay_seconds: float,
                   labels: dict[str, str], memory_limit: int | None = None) -> str:
    assert swarm.api is not None
    template = docker.types.TaskTemplate(
        container_spec=docker.types.ContainerSpec(image, ["sleep", "100000"], stop_grace_period=NANO // 10),
        resources=docker.types.Resources(mem_limit=memory_limit) if memory_limit else None,
        networks=["host"],
    )
    update = docker.types.UpdateConfig(parallelism=1, delay=int(delay_seconds * NANO), order="stop-first",
                                       failure_action="pause", monitor=NANO)
    created = swarm.api.create_service(template, name=name, labels=labels, update_config=update,
                                       mode=docker.types.ServiceMode("replicated", replicas=replicas))
    return str(created["ID"])


def running_tasks(swarm: Swarm, service_id: str) -> list[dict[str, Any]]:
    assert swarm.api is not None
    tasks = swarm.api.tasks(filters={"service": service_id, "desired-state": "running"})
    return [t for t in tasks if (t.get("Status") or {}).get("State") == "running"]


def set_image(swarm: Swarm, service_id: str, image: str) -> None:
    """What `docker service update --image IMAGE --no-resolve-image` sends: the current spec, image changed."""
    assert swarm.api is not None
    service = swarm.api.inspect_service(service_id)
    spec = service["Spec"]
    spec["TaskTemplate"]["ContainerSpec"]["Image"] = image
    url = swarm.api._url("/services/{0}/update", service_id)
    response = swarm.api._post_json(url, data=spec, params={"version": service["Version"]["Index"]})
    swarm.api._result(response, json=True)


def state_of(source: SwarmRolloutSource, name: str) -> RolloutState:
    return next(s for s in source.list_rollouts(time.time()) if s.ref.name == name)


@pytest.fixture
def team() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


def test_a_service_mid_update_is_a_rollout_with_new_and_old_tasks(swarm: Swarm, team: str) -> None:
    assert swarm.api is not None
    name = f"{team}-web"
    service_id = create_service(swarm, name, "app:v1", replicas=2, delay_seconds=300, labels={"team": team},
                                memory_limit=64 * 1024 * 1024)
    wait_until(lambda: len(running_tasks(swarm, service_id)) == 2, what="two v1 tasks")
    source = SwarmRolloutSource(swarm.api, [SwarmTarget(label=f"team={team}")])
    before = state_of(source, name)
    assert before.ref.kind == "service" and before.ref.namespace == ""
    assert before.completed_at is not None and before.old_hashes == ()  # never updated: complete
    assert before.updated_replicas == 2 and before.previous_revision is None

    set_image(swarm, service_id, swarm.image("v2"))
    during = wait_until(lambda: (s := state_of(source, name)).ready_new_replicas == 1 and s.old_replicas == 1 and s,
                        what="one new task running beside one old one")
    assert during.completed_at is None and not during.is_rollback
    assert during.revision != before.revision and during.previous_revision == before.revision
    assert [p.template_hash for p in during.old_pods] == [before.new_hash]
    # the tasks are named as Swarm names their containers, the label cAdvisor exports
    containers = swarm.api.containers(filters={"label": f"com.docker.swarm.service.id={service_id}"})
    names = {c["Labels"]["com.docker.swarm.task.name"] for c in containers if c["State"] == "running"}
    assert {p.name for p in during.pods} == names
    assert all(p.name.startswith(f"{name}.") for p in during.new_pods)
    assert source.limits(during.ref) == {"MemoryBytes": 64 * 1024 * 1024}
    assert source.task_label(during.ref) == "container_label_com_docker_swarm_task_name"

    actuator = SwarmActuator(swarm.api)
    decision = Decision(ref=during.ref, revision=during.revision, time=time.time(), action=Action.UNDO, risk=0.95,
                        reason="undo: error_ratio: new tasks 0.1 vs old tasks 0.005", metric="error_ratio",
                        predicted_breach=time.time() + 60)
    result = actuator.apply(decision, during)
    assert result.applied, result.detail
    service = swarm.api.inspect_service(service_id)
    assert service["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == "app:v1"
    labels = service["Spec"]["Labels"]
    assert labels["predictor.io/acted-revision"] == str(during.revision)
    assert labels["predictor.io/action"] == "undo" and "error_ratio" in labels["predictor.io/reason"]
    assert labels["predictor.io/undone-to"] == str(before.revision) and labels["team"] == team
    wait_until(lambda: {t["Spec"]["ContainerSpec"]["Image"] for t in running_tasks(swarm, service_id)} == {"app:v1"}
               and len(running_tasks(swarm, service_id)) == 2, what="the v2 task replaced by v1")

    after = state_of(source, name)
    assert after.revision == before.revision and after.is_rollback  # a rollback: the policy never undoes it
    assert after.acted_revision == during.revision
    version = swarm.api.inspect_service(service_id)["Version"]["Index"]
    again = actuator.apply(decision, during)  # a restarted daemon deciding again on the bad revision
    assert not again.applied and "already acted" in again.detail
    assert swarm.api.inspect_service(service_id)["Version"]["Index"] == version, "nothing written twice"


def test_alert_and_dry_run_leave_the_service_as_it_is(swarm: Swarm, team: str) -> None:
    assert swarm.api is not None
    name = f"{team}-api"
    service_id = create_service(swarm, name, "app:v1", replicas=1, delay_seconds=1, labels={"team": team})
    wait_until(lambda: len(running_tasks(swarm, service_id)) == 1, what="a v1 task")
    source = SwarmRolloutSource(swarm.api, [SwarmTarget(service=name)])
    state = state_of(source, name)
    version = swarm.api.inspect_service(service_id)["Version"]["Index"]
    actuator = SwarmActuator(swarm.api)
    for action, dry_run in ((Action.ALERT, False), (Action.UNDO, True), (Action.PAUSE, False)):
        decision = Decision(ref=state.ref, revision=state.revision, time=time.time(), action=action, risk=0.8,
                            reason="test", dry_run=dry_run)
        assert not actuator.apply(decision, state).applied
    assert swarm.api.inspect_service(service_id)["Version"]["Index"] == version


def test_a_name_target_matches_that_service_only(swarm: Swarm, team: str) -> None:
    assert swarm.api is not None
    for name in (f"{team}-shop", f"{team}-shop-admin"):
        create_service(swarm, name, "app:v1", replicas=1, delay_seconds=1, labels={})
    source = SwarmRolloutSource(swarm.api, [SwarmTarget(service=f"{team}-shop")])
    assert [s.ref.name for s in source.list_rollouts(time.time())] == [f"{team}-shop"]  # the API filters by prefix
    assert source.is_online()


def test_start_checks_ask_the_swarm_manager(swarm: Swarm, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = parse_config({"docker": {"host": swarm.host}, "targets": [{"swarm": {"service": "web"}}]})
    assert check_docker(config) == []
    targets = [{"swarm": {"service": "web"}}]
    missing = parse_config({"docker": {"host": f"unix://{tmp_path}/none.sock"}, "targets": targets})
    with caplog.at_level(logging.WARNING, logger="predictor.preflight"):
        assert check_docker(missing) == []  # down at start: not the config's fault
    assert "unreachable at start" in caplog.text
