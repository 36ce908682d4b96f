"""What the tests of `predictor run` as a process share: pods' traffic fed to a real Prometheus, a config
file, and starting and stopping the daemon."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Collection, Mapping
from pathlib import Path

import yaml

from tests.fakes.kubeapi import FakeKubeAPI
from tests.fixtures.alertmanager import free_port
from tests.fixtures.prometheus import LivePrometheus, key

ROOT = Path(__file__).parents[2]
REQUESTS_PER_SECOND = 20.0
BAD_ERROR_SHARE = 0.10
GOOD_ERROR_SHARE = 0.005


class CounterFeeder:
    """Plays the HTTP servers of a release's workers (pods, Swarm tasks): per worker counters of requests by code,
    in the exporter Prometheus scrapes, at `REQUESTS_PER_SECOND` each. Subclasses say which workers run now, with
    their labels and error share; a worker that stops running loses its series."""

    def __init__(self, live: LivePrometheus) -> None:
        self.live = live
        self.counts: dict[str, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def workers(self) -> list[tuple[dict[str, str], float]]:
        """(labels, error share) of every worker serving now."""
        raise NotImplementedError

    def tick(self, seconds: float) -> None:
        total = REQUESTS_PER_SECOND * seconds
        live = set()
        for labels, share in self.workers():
            for code, amount in (("200", total * (1 - share)), ("500", total * share)):
                series = key("http_requests_total", **labels, code=code)
                self.counts[series] = self.counts.get(series, 0.0) + amount
                self.live.exporter.set(series, self.counts[series])
                live.add(series)
        for series in list(self.counts):
            if series not in live:
                self.live.exporter.remove(series)
                del self.counts[series]

    def _run(self) -> None:
        last = time.monotonic()
        while not self.stop.wait(0.25):
            now = time.monotonic()
            self.tick(now - last)
            last = now

    def __enter__(self) -> CounterFeeder:
        self.tick(0.0)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


class TrafficFeeder(CounterFeeder):
    """The pods of a namespace in the fake API server: pods of a ReplicaSet whose template runs one of
    `bad_images` answer 10 % errors (`bad_share`, which a subclass may grow), the others 0.5 %."""

    def __init__(self, fake: FakeKubeAPI, live: LivePrometheus, namespace: str, bad_images: Collection[str]) -> None:
        super().__init__(live)
        self.fake, self.namespace, self.bad_images = fake, namespace, set(bad_images)

    def _bad_replicasets(self) -> set[str]:
        bad = set()
        for rs in self.fake.list("apps/v1", "ReplicaSet", self.namespace):
            images = [c["image"] for c in rs["spec"]["template"]["spec"]["containers"]]
            if self.bad_images.intersection(images):
                bad.add(rs["metadata"]["name"])
        return bad

    def bad_share(self, pod: str) -> float:
        return BAD_ERROR_SHARE

    def workers(self) -> list[tuple[dict[str, str], float]]:
        bad = self._bad_replicasets()
        out = []
        for pod in (p["metadata"]["name"] for p in self.fake.list("v1", "Pod", self.namespace)):
            share = self.bad_share(pod) if pod.rsplit("-", 1)[0] in bad else GOOD_ERROR_SHARE
            out.append(({"namespace": self.namespace, "pod": pod}, share))
        return out


def write_config(
    path: Path, *, prometheus: str, alertmanager: str | None, kubeconfig: Path, namespace: str
) -> None:
    selector = 'namespace=~"{namespace}", pod=~"{pods}"'
    alerting = f"alertmanager:\n  url: {alertmanager}\n" if alertmanager else ""
    path.write_text(f"""
prometheus:
  url: {prometheus}
  timeout: 5s
{alerting}kubernetes:
  kubeconfig: {kubeconfig}
targets:
  - namespace: {namespace}
metrics:
  - name: error_ratio
    query: 'sum by (namespace, pod) (rate(http_requests_total{{{selector}, code=~"5.."}}[10s]))'
    denominator: 'sum by (namespace, pod) (rate(http_requests_total{{{selector}}}[10s]))'
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
  # This test runs the rollout 30 times faster than life (1 s ticks, a pod every 2 s). The forecast scorer waits
  # out a new pod's first minute of warm-up in wall time, so here the trend scorer decides; the forecast scorer's
  # decisions are tested in tests/unit/test_rollout_scorer.py and over Prometheus history in test_backtest.py.
  scorer: trend
""")


def image_of(fake: FakeKubeAPI, namespace: str, name: str) -> str:
    deployment = fake.get("apps/v1", "Deployment", namespace, name)
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


def start_daemon(config: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    """`predictor run --config CONFIG` as a process, its log (JSON lines) on stdout."""
    return subprocess.Popen(
        [sys.executable, "-m", "predictor.cli", "run", "--config", str(config)], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )


def wait_for_first_tick(config: Path, daemon: subprocess.Popen[str], timeout: float = 90.0) -> None:
    """Returns once the daemon's /metrics counts a tick, as a user starts the daemon before rolling out.

    Start-up (imports, the start-up checks against Prometheus and the API server, the first LIST) takes a few
    seconds on an idle machine and far longer on a loaded one; a rollout started before it would be half done
    when the daemon first looks."""
    port = yaml.safe_load(config.read_text())["server"]["port"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise AssertionError(f"the daemon exited with {daemon.returncode}: {daemon.communicate()[0][-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                body = response.read().decode()
        except OSError:
            body = ""
        if any(line.startswith("predictor_ticks_total ") and float(line.split()[1]) >= 1
               for line in body.splitlines()):
            return
        time.sleep(0.2)
    raise AssertionError(f"no tick within {timeout:.0f}s of start")


def stop_daemon(daemon: subprocess.Popen[str]) -> str:
    """SIGTERM, as Kubernetes stops a pod; returns the log. Killed if it does not exit in 20 s."""
    daemon.send_signal(signal.SIGTERM)
    try:
        output, _ = daemon.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        daemon.kill()
        output, _ = daemon.communicate()
    return output


def set_image(fake: FakeKubeAPI, namespace: str, name: str, image: str) -> None:
    fake.patch("apps/v1", "Deployment", namespace, name,
               {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}})
