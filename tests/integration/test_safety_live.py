"""`predictor run` as a process: the kill switch read every tick, and SIGHUP reloading the config (an invalid
file refused with its error lines, a valid one taking over at the next tick), against a real Prometheus and the
fake API server."""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.fakes.kubeapi import FakeKubeAPI, make_deployment
from tests.fixtures.prometheus import LivePrometheus
from tests.integration.live import (
    TrafficFeeder,
    image_of,
    set_image,
    start_daemon,
    wait_for_first_tick,
    write_config,
)

pytestmark = [pytest.mark.prometheus]


class LogTail:
    """Collects the daemon's log lines as they come, so the test can wait for one."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    def wait_for(self, pattern: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    if re.search(pattern, line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no log line matching {pattern!r}:\n" + "".join(self.lines[-40:]))
                self._changed.wait(left)

    def text(self) -> str:
        """The whole log, once the process has exited (its output pipe is closed here)."""
        self._thread.join(10)
        if self.process.stdout is not None and not self._thread.is_alive():
            self.process.stdout.close()
        return "".join(self.lines)


def metric_value(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines() if line.startswith(name))


def wait_until(predicate: Callable[[], bool], timeout: float, step: Callable[[], None] = lambda: None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        step()
        time.sleep(0.5)
    return predicate()


def test_kill_switch_withholds_and_sighup_reloads(
    fake_kube: FakeKubeAPI, live_prometheus: LivePrometheus, tmp_path: Path
) -> None:
    namespace = f"safety-{uuid.uuid4().hex[:6]}"
    fake_kube.create(make_deployment("checkout", namespace, image="checkout:v1", replicas=4))
    fake_kube.controller.settle()
    fake_kube.create({"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": {"name": "predictor-kill-switch", "namespace": namespace}, "data": {"stop": "true"}})
    config = tmp_path / "predictor.yaml"
    write_config(config, prometheus=live_prometheus.url, alertmanager=None,
                 kubeconfig=fake_kube.write_kubeconfig(tmp_path / "kubeconfig"), namespace=namespace)
    settings = yaml.safe_load(config.read_text())
    settings["safety"] = {"kill_switch": {"namespace": namespace}}
    config.write_text(yaml.safe_dump(settings))
    port = settings["server"]["port"]

    with TrafficFeeder(fake_kube, live_prometheus, namespace, bad_images={"checkout:v2"}):
        live_prometheus.wait_for(f'count(http_requests_total{{namespace="{namespace}"}})',
                                 lambda r: bool(r) and float(r[0]["value"][1]) >= 8, timeout=20)
        daemon = start_daemon(config)
        log = LogTail(daemon)
        try:
            wait_for_first_tick(config, daemon)
            log.wait_for("kill switch engaged")
            set_image(fake_kube, namespace, "checkout", "checkout:v2")
            withheld = wait_until(lambda: metric_value(port, "predictor_actions_withheld_total") >= 1, 60,
                                  step=lambda: fake_kube.controller.step(namespace))
            assert withheld, "".join(log.lines[-40:])
            log.wait_for(r"withheld, alert only: kill switch engaged")
            assert metric_value(port, "predictor_kill_switch_engaged") == 1
            deployment = fake_kube.get("apps/v1", "Deployment", namespace, "checkout")
            assert image_of(fake_kube, namespace, "checkout") == "checkout:v2" and not deployment["spec"].get("paused")
            assert "predictor.io/acted-revision" not in deployment["metadata"].get("annotations", {})

            # An invalid file is refused with the lines a start prints; the running config stays.
            good = config.read_text()
            config.write_text(good.replace("interval: 1s", "interval: 500ms"))
            daemon.send_signal(signal.SIGHUP)
            refused = log.wait_for("reload refused")
            assert "policy.interval: expected a duration of at least 1s, got '500ms'" in refused

            # A valid one takes over at the next tick: pause instead of undo.
            settings["policy"]["action"] = "pause"
            config.write_text(yaml.safe_dump(settings))
            daemon.send_signal(signal.SIGHUP)
            log.wait_for("reloaded configuration: policy changed")

            fake_kube.delete("v1", "ConfigMap", namespace, "predictor-kill-switch")
            log.wait_for("kill switch lifted")
            paused = wait_until(
                lambda: bool(fake_kube.get("apps/v1", "Deployment", namespace, "checkout")["spec"].get("paused")), 60)
            assert paused, "".join(log.lines[-40:])
        finally:
            daemon.send_signal(signal.SIGTERM)  # as stop_daemon, but the log is LogTail's to read
            try:
                daemon.wait(20)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
            output = log.text()
    assert daemon.returncode == 0, output[-3000:]
    annotations = fake_kube.get("apps/v1", "Deployment", namespace, "checkout")["metadata"]["annotations"]
    assert annotations["predictor.io/action"] == "pause", "the reloaded policy.action decided"
    assert image_of(fake_kube, namespace, "checkout") == "checkout:v2", "never undone"
    assert "Traceback" not in output
