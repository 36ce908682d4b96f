"""End to end on a real Swarm: `predictor run` as a process, a real dockerd in swarm mode, a real Prometheus
scraping per-task traffic keyed by the real task names, a real Alertmanager with a webhook receiver.

Two services roll out with `parallelism 1`: a bad image (10 % errors on its tasks) is rolled back by predictor
before the service as a whole reaches 5 % errors; a good image beside it is left alone and never alerted on.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Collection
from pathlib import Path
from typing import Any

import pytest

from predictor.rollouts.state import parse_time
from predictor.rollouts.swarm import task_name
from tests.fixtures.alertmanager import RecordingServer, free_port, webhook_alerts
from tests.fixtures.docker import Swarm
from tests.fixtures.prometheus import LivePrometheus
from tests.integration.live import (
    BAD_ERROR_SHARE,
    GOOD_ERROR_SHARE,
    CounterFeeder,
    start_daemon,
    stop_daemon,
    wait_for_first_tick,
)
from tests.integration.test_swarm_adapters import create_service, running_tasks, set_image, wait_until

pytestmark = [pytest.mark.prometheus, pytest.mark.alertmanager]
TASK_LABEL = "container_label_com_docker_swarm_task_name"


class TaskTrafficFeeder(CounterFeeder):
    """The tasks of Swarm services, keyed by the task names the Docker API gives: tasks running one of
    `bad_images` answer 10 % errors, others 0.5 %. `history` keeps (time, bad tasks, good tasks) of every service at
    every step."""

    def __init__(self, swarm: Swarm, live: LivePrometheus, services: Collection[str],
                 bad_images: Collection[str]) -> None:
        super().__init__(live)
        self.swarm, self.services, self.bad_images = swarm, tuple(services), set(bad_images)
        self.history: dict[str, list[tuple[float, int, int]]] = {name: [] for name in self.services}

    def workers(self) -> list[tuple[dict[str, str], float]]:
        assert self.swarm.api is not None
        out = []
        now = time.time()
        for name in self.services:
            bad = good = 0
            for task in running_tasks(self.swarm, name):
                is_bad = task["Spec"]["ContainerSpec"]["Image"] in self.bad_images
                bad, good = bad + is_bad, good + (not is_bad)
                out.append(({TASK_LABEL: task_name(name, task)}, BAD_ERROR_SHARE if is_bad else GOOD_ERROR_SHARE))
            self.history[name].append((now, bad, good))
        return out


def write_config(path: Path, *, prometheus: str, alertmanager: str, docker_host: str, team: str) -> None:
    selector = f'{TASK_LABEL}=~"{{tasks}}"'
    path.write_text(f"""
prometheus:
  url: {prometheus}
  timeout: 5s
alertmanager:
  url: {alertmanager}
docker:
  host: {docker_host}
targets:
  - swarm: {{label: "team={team}"}}
metrics:
  - name: error_ratio
    query: 'sum by ({TASK_LABEL}) (rate(http_requests_total{{{selector}, code=~"5.."}}[10s]))'
    denominator: 'sum by ({TASK_LABEL}) (rate(http_requests_total{{{selector}}}[10s]))'
    min_denominator: 1
    threshold: 0.05
policy:
  action: undo
  interval: 1s
  lookback: 30s
  consecutive: 2
  bake: 1m
  blind_after: 30
server:
  host: 127.0.0.1
  port: {free_port()}
logging:
  format: json
  level: INFO
models:
  scorer: trend  # wall-clock rollouts 30 times faster than life: see tests/integration/live.py
""")


def alerts_for(bodies: list[Any], service: str, status: str) -> list[dict[str, Any]]:
    return [a for a in webhook_alerts(bodies, status) if a["labels"].get("service") == service]


def image_of(swarm: Swarm, name: str) -> str:
    assert swarm.api is not None
    return str(swarm.api.inspect_service(name)["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"])


def test_bad_image_is_rolled_back_before_its_breach_good_image_is_left_alone(
    swarm: Swarm, live_prometheus: LivePrometheus, alertmanager: Any, webhook_receiver: RecordingServer,
    tmp_path: Path,
) -> None:
    assert swarm.api is not None
    team = f"e{uuid.uuid4().hex[:8]}"
    bad_name, good_name = f"{team}-checkout", f"{team}-catalog"
    # 12 s between tasks: the time a real rollout gives each batch to show itself (and this loaded machine's
    # daemon to read it); the good one moves faster, watched all the way.
    for name, delay in ((bad_name, 12), (good_name, 4)):
        create_service(swarm, name, "app:v1", replicas=4, delay_seconds=delay, labels={"team": team})
    wait_until(lambda: all(len(running_tasks(swarm, n)) == 4 for n in (bad_name, good_name)), what="8 v1 tasks")
    bad_image, good_image = swarm.image(f"{team}-bad"), swarm.image(f"{team}-good")
    config = tmp_path / "predictor.yaml"
    write_config(config, prometheus=live_prometheus.url, alertmanager=alertmanager.url, docker_host=swarm.host,
                 team=team)

    with TaskTrafficFeeder(swarm, live_prometheus, (bad_name, good_name), bad_images={bad_image}) as feeder:
        live_prometheus.wait_for(f'count(http_requests_total{{{TASK_LABEL}=~"{team}-.*"}})',
                                 lambda r: bool(r) and float(r[0]["value"][1]) >= 16, timeout=30)
        daemon = start_daemon(config)
        try:
            wait_for_first_tick(config, daemon)
            set_image(swarm, bad_name, bad_image)
            set_image(swarm, good_name, good_image)
            wait_until(lambda: image_of(swarm, bad_name) == "app:v1", timeout=120, what="the bad image rolled back")
            # the labels follow the rollback in a second write (Swarm has no metadata-only one)
            labels = wait_until(lambda: (found := swarm.api.inspect_service(bad_name)["Spec"]["Labels"]).get(
                "predictor.io/action") and found, timeout=10, what="the action recorded in labels")
            assert labels["predictor.io/action"] == "undo" and "error_ratio" in labels["predictor.io/reason"]
            acted_at = parse_time(labels["predictor.io/acted-at"])
            assert acted_at is not None
            firing = webhook_receiver.wait_for(lambda b: alerts_for(b, bad_name, "firing"), timeout=30)
            alert = alerts_for(firing, bad_name, "firing")[0]
            assert alert["labels"]["alertname"] == "PredictedSLOBreach"
            assert alert["labels"]["revision"] == labels["predictor.io/acted-revision"]
            assert "deployment" not in alert["labels"]
            wait_until(lambda: {t["Spec"]["ContainerSpec"]["Image"] for t in running_tasks(swarm, bad_name)}
                       == {"app:v1"} and len(running_tasks(swarm, bad_name)) == 4, timeout=90,
                       what="every bad task replaced")
            wait_until(lambda: (swarm.api.inspect_service(good_name).get("UpdateStatus") or {}).get("State")
                       == "completed", timeout=120, what="the good rollout completed")
        finally:
            output = stop_daemon(daemon)
    assert daemon.returncode == 0, output[-3000:]

    # Rolled back before the service as a whole breached 5 %: its error ratio from the tasks running until then.
    before = [(bad, good) for at, bad, good in feeder.history[bad_name] if at < acted_at + 1]
    assert max(bad for bad, _ in before) >= 1, "the bad image never ran"
    worst = max((bad * BAD_ERROR_SHARE + good * GOOD_ERROR_SHARE) / (bad + good) for bad, good in before if bad + good)
    assert worst < 0.05, f"acted after the breach: {before[-5:]}"
    assert image_of(swarm, good_name) == good_image
    assert not any(k.startswith("predictor.io/") for k in swarm.api.inspect_service(good_name)["Spec"]["Labels"])
    assert alerts_for(webhook_receiver.bodies, good_name, "firing") == []
    warnings = [line for line in output.splitlines() if '"level": "WARNING"' in line and "undo" in line]
    assert len(warnings) == 1 and bad_name in warnings[0], output[-3000:]
