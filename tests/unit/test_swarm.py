"""Swarm targets in the config, a service's RolloutState from the Engine API's objects, and the {service} and
{tasks} placeholders (the adapters against a real dockerd: tests/integration/test_swarm_adapters.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from predictor.config import ConfigError, parse_config
from predictor.domain import Action
from predictor.rollouts.swarm import service_rollout_state, template_hash
from predictor.sources.swarm import limit_of, render_swarm_query

PROM = {"url": "http://prometheus:9090"}


def errors_of(raw: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    return info.value.errors


def test_swarm_targets_give_the_swarm_pack_and_alert_by_default() -> None:
    config = parse_config({"prometheus": PROM, "docker": {"host": "tcp://manager:2376", "timeout": "5s"},
                           "targets": [{"swarm": {"service": "shop_web"}}, {"swarm": {"label": "team=shop"}}]})
    assert [t.service or t.label for t in config.swarm_targets] == ["shop_web", "team=shop"]
    assert config.targets == () and config.docker.host == "tcp://manager:2376" and config.docker.tls is None
    assert config.policy.action is Action.ALERT  # pause, the Kubernetes default, is impossible
    assert config.policy.undo_threshold == config.policy.risk_threshold
    names = [m.name for m in config.metrics]
    assert names == ["error_ratio", "latency_p99", "memory_limit_ratio", "cpu_limit_ratio"]
    assert all("{tasks}" in m.query for m in config.metrics)
    assert config.metric("memory_limit_ratio").limit == "memory"


@pytest.mark.parametrize(("raw", "expected"), [
    ({"targets": [{"swarm": {"service": "web"}}], "policy": {"action": "pause"}},
     "policy.action: expected undo or alert with Swarm targets (Swarm has no API to pause an update in "
     "progress), got 'pause'"),
    ({"targets": [{"swarm": {"service": "web", "label": "a=b"}}]},
     "targets[0].swarm: expected exactly one of service (a name) or label (key=value), got "),
    ({"targets": [{"swarm": {"service": "web api"}}]}, "targets[0].swarm.service: expected a Swarm service name"),
    ({"targets": [{"swarm": {"label": "team=shop", "task_label": "task-name"}}]},
     "targets[0].swarm.task_label: expected a Prometheus label name"),
    ({"targets": [{"namespace": "shop"}, {"swarm": {"service": "web"}}]},
     "targets[1]: expected targets of one host, but targets[0] is a Kubernetes namespace"),
    ({"targets": [{"swarm": {"service": "web"}}, {"swarm": {"service": "web"}}]},
     "targets[1]: expected each target once, but it repeats targets[0]"),
    ({"targets": [{"swarm": {"service": "web"}}], "docker": {"host": "docker.sock"}},
     "docker.host: expected a Docker host such as unix:///var/run/docker.sock"),
    ({"targets": [{"namespace": "shop"}], "docker": {"host": "unix:///var/run/docker.sock"}},
     "docker: expected Swarm targets"),
    ({"targets": [{"swarm": {"service": "web"}}], "policy": {"action": "undo", "undo_threshold": 0.95}},
     "policy.undo_threshold: expected none with Swarm targets"),
    ({"targets": [{"swarm": {"service": "web"}}],
      "metrics": [{"name": "e", "query": 'up{pod=~"{pods}"}', "threshold": 1}]},
     "metrics[0].query: expected exactly {service} or {tasks}, got '{pods}'"),
])
def test_bad_swarm_config_names_the_field(raw: dict, expected: str) -> None:
    errors = errors_of({"prometheus": PROM, **raw})
    assert any(e.startswith(expected) for e in errors), errors


def _task(task_id: str, slot: int, image: str, state: str = "running") -> dict:
    return {"ID": task_id, "Slot": slot, "DesiredState": "running", "CreatedAt": "2026-12-02T10:00:05Z",
            "Spec": {"ContainerSpec": {"Image": image}, "ForceUpdate": 0}, "Status": {"State": state}}


def _service(image: str, previous: str | None, update: dict | None, labels: dict | None = None) -> dict:
    service = {"ID": "s1", "CreatedAt": "2026-12-02T09:00:00Z", "UpdatedAt": "2026-12-02T10:00:00Z",
               "Spec": {"Name": "shop_web", "Labels": {"com.docker.stack.namespace": "shop", **(labels or {})},
                        "TaskTemplate": {"ContainerSpec": {"Image": image}, "ForceUpdate": 0},
                        "Mode": {"Replicated": {"Replicas": 3}}}}
    if previous:
        service["PreviousSpec"] = {"TaskTemplate": {"ContainerSpec": {"Image": previous}, "ForceUpdate": 0}}
    if update:
        service["UpdateStatus"] = update
    return service


def test_a_service_updating_is_a_rollout_of_new_and_old_tasks() -> None:
    service = _service("web:v2", "web:v1", {"State": "updating", "StartedAt": "2026-12-02T10:00:00.5Z"})
    tasks = [_task("aaa", 1, "web:v2"), _task("bbb", 2, "web:v1"), _task("ccc", 3, "web:v1"),
             _task("ddd", 1, "web:v2", state="starting")]
    state = service_rollout_state(service, tasks)
    assert (state.ref.namespace, state.ref.name, state.ref.kind) == ("shop", "shop_web", "service")
    assert state.new_hash == template_hash({"ContainerSpec": {"Image": "web:v2"}})
    assert state.revision == int(state.new_hash, 16)
    assert state.old_hashes == (template_hash({"ContainerSpec": {"Image": "web:v1"}}),)
    assert state.previous_revision == int(state.old_hashes[0], 16)
    counts = (state.desired_replicas, state.updated_replicas, state.ready_new_replicas, state.old_replicas)
    assert counts == (3, 2, 1, 2)
    assert state.completed_at is None and not state.paused and not state.is_rollback
    assert state.started_at == datetime(2026, 12, 2, 10, 0, 0, 500000, tzinfo=UTC).timestamp()
    assert [p.name for p in state.new_pods] == ["shop_web.1.aaa", "shop_web.1.ddd"]
    assert [p.name for p in state.old_pods] == ["shop_web.2.bbb", "shop_web.3.ccc"]


@pytest.mark.parametrize(("update", "labels", "completed", "paused", "rollback"), [
    ({"State": "completed", "StartedAt": "2026-12-02T10:00:00Z", "CompletedAt": "2026-12-02T10:05:00Z"}, {},
     True, False, False),
    ({"State": "paused", "StartedAt": "2026-12-02T10:00:00Z"}, {}, False, True, False),
    ({"State": "rollback_started", "StartedAt": "2026-12-02T10:00:00Z"}, {}, False, False, True),
    ({"State": "updating", "StartedAt": "2026-12-02T10:00:00Z"},
     {"predictor.io/action": "undo", "predictor.io/undone-to": str(int(template_hash(
         {"ContainerSpec": {"Image": "web:v2"}}), 16))}, False, False, True),
])
def test_update_states(update: dict, labels: dict, completed: bool, paused: bool, rollback: bool) -> None:
    state = service_rollout_state(_service("web:v2", "web:v1", update, labels), [_task("aaa", 1, "web:v2")])
    assert (state.completed_at is not None, state.paused, state.is_rollback) == (completed, paused, rollback)
    assert set(state.annotations) == set(labels)


def test_placeholders_become_escaped_regexes_of_services_and_tasks() -> None:
    service = _service("web:v2", "web:v1", {"State": "updating", "StartedAt": "2026-12-02T10:00:00Z"})
    state = service_rollout_state(service, [_task("aaa", 1, "web:v2"), _task("bbb", 2, "web:v1")])
    query = render_swarm_query('up{task=~"{tasks}", service=~"{service}"}', [state])
    assert query == r'up{task=~"shop_web\\.1\\.aaa|shop_web\\.2\\.bbb", service=~"shop_web"}'
    assert "[^" in render_swarm_query('up{task=~"{tasks}"}', [])  # matches nothing


def test_limits_in_the_unit_of_usage() -> None:
    assert limit_of({"MemoryBytes": 1024}, "memory") == 1024.0
    assert limit_of({"NanoCPUs": 500_000_000}, "cpu") == 0.5
    assert limit_of({}, "cpu") is None


def test_backtest_and_train_refuse_what_they_cannot_replay() -> None:
    from predictor.preflight import check_replayable

    swarm = parse_config({"prometheus": PROM, "targets": [{"swarm": {"service": "web"}}]})
    assert check_replayable(swarm, "backtest")[0].startswith("targets: expected Kubernetes targets for backtest")
    argo = parse_config({"prometheus": PROM, "targets": [{"namespace": "shop"}, {"namespace": "shop",
                                                                                 "kind": "Rollout"}]})
    assert check_replayable(argo, "train") == [
        "targets[1].kind: expected Deployment for train (it replays Deployments from kube-state-metrics; Argo "
        "Rollouts are not replayed), got 'Rollout'"]
    assert check_replayable(parse_config({"targets": [{"namespace": "shop"}]}), "backtest") == []
