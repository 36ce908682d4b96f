"""The daemon's scheduler, probes and metrics over the in-memory simulated cluster."""

import threading
import urllib.error
import urllib.request
from dataclasses import replace

import pytest

from predictor.config import ServerConfig
from predictor.daemon import Daemon
from predictor.demo import SimulatedCluster, demo_config
from predictor.detectors.trend import ThresholdTrendScorer
from predictor.domain import Action, DeploymentRef
from predictor.engine import Engine
from predictor.simulate import SimulatedRollout

START = 1_767_268_800.0


class SteppedClock:
    def __init__(self, start: float) -> None:
        self.t = start

    def now(self) -> float:
        return self.t


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def make_daemon(ready: dict[str, bool]) -> tuple[Daemon, SimulatedCluster, SteppedClock]:
    config = replace(demo_config(Action.UNDO), server=ServerConfig(host="127.0.0.1", port=0))
    cluster = SimulatedCluster([SimulatedRollout(DeploymentRef("shop", "checkout"), "error_regression", START)])
    engine = Engine(config, rollouts=cluster, metrics=cluster, actuator=cluster, notifier=cluster,
                    scorer=ThresholdTrendScorer())
    clock = SteppedClock(START)
    checks = {name: (lambda n=name: ready[n]) for name in ready}
    return Daemon(config, engine, readiness_checks=checks, clock=clock), cluster, clock


def test_probes_and_metrics_reflect_ticks() -> None:
    ready = {"prometheus": True, "kubernetes": False}
    daemon, cluster, clock = make_daemon(ready)
    daemon.start()
    try:
        base = f"http://127.0.0.1:{daemon.port}"
        status, body = get(base + "/readyz")
        assert status == 503 and "kubernetes unreachable" in body
        ready["kubernetes"] = True
        daemon.check_readiness()
        assert get(base + "/readyz")[0] == 200
        for _ in range(3):
            daemon.tick()
            clock.t += 15.0
        status, metrics = get(base + "/metrics")
        assert status == 200
        assert 'predictor_decisions_total{action="undo"} 1.0' in metrics
        assert 'predictor_actions_total{action="undo",outcome="applied"} 1.0' in metrics
        assert "predictor_tick_duration_seconds_count" in metrics
        assert get(base + "/healthz")[0] == 200
        clock.t += 3600.0
        status, body = get(base + "/healthz")
        assert status == 503 and "stalled" in body
        assert get(base + "/nope")[0] == 404
    finally:
        daemon.stop()
    assert len(cluster.actions) == 1


def test_stop_waits_for_the_running_tick() -> None:
    daemon, _, _ = make_daemon({"prometheus": True, "kubernetes": True})
    entered, release = threading.Event(), threading.Event()
    finished: list[bool] = []
    real_tick = daemon.engine.tick

    def slow_tick(now: float):  # type: ignore[no-untyped-def]
        entered.set()
        release.wait(5)
        report = real_tick(now)
        finished.append(True)
        return report

    daemon.engine.tick = slow_tick  # type: ignore[method-assign]
    daemon.start()
    assert entered.wait(5), "the first tick runs at start"
    stopper = threading.Thread(target=daemon.stop)
    stopper.start()
    stopper.join(0.3)
    assert stopper.is_alive(), "stop must wait for the running tick"
    release.set()
    stopper.join(5)
    assert finished == [True] and daemon.stopped.is_set()


def test_reload_swaps_in_a_newer_artifact_and_reports_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from predictor.config import ModelsConfig
    from predictor.detectors.rollout_scorer import ForecastScorer
    from tests.unit.test_scoring import CREATED, write_artifact

    daemon, _, _ = make_daemon({"prometheus": True, "kubernetes": True})
    daemon.config = replace(daemon.config, models=ModelsConfig(dir=tmp_path, scorer="forecast"))
    before = daemon.engine.scorer
    daemon.reload_model()
    assert daemon.engine.scorer is before, "nothing to load: the scorer stays"
    write_artifact(tmp_path, created=CREATED)
    daemon.reload_model()
    assert isinstance(daemon.engine.scorer, ForecastScorer) and daemon.engine.scorer is not before
    loaded = daemon.engine.scorer
    daemon.reload_model()
    assert daemon.engine.scorer is loaded, "the same version is not loaded twice"
    samples = [s for m in daemon.metrics.model_loaded.collect() for s in m.samples]
    assert [(s.labels["model"], s.value) for s in samples] == [("rollout-risk", 1.0)]


def test_reload_keeps_the_running_config_when_the_new_one_is_invalid_or_needs_a_restart(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    from predictor.config import ConfigError

    daemon, _, _ = make_daemon({"prometheus": True, "kubernetes": True})
    running = daemon.config
    offered: list[object] = [ConfigError(["policy.interval: expected a duration of at least 1s, got '500ms'"],
                                         "predictor.yaml")]
    rewired: list[tuple[object, object]] = []

    def load():  # type: ignore[no-untyped-def]
        item = offered.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    daemon._load_config = load
    daemon._rewire = lambda old, new: rewired.append((old, new))
    with caplog.at_level(logging.INFO, logger="predictor.daemon"):
        assert daemon.reload_config() is False
        assert daemon.config is running and rewired == []
        changed = replace(running, server=ServerConfig(host="127.0.0.1", port=9999),
                          policy=replace(running.policy, action=Action.PAUSE, lookback_seconds=300.0))
        offered.append(changed)
        assert daemon.reload_config() is True
    assert daemon.config.server == running.server, "the bound address stays until a restart"
    assert daemon.engine.config.policy.action is Action.PAUSE
    assert daemon.engine.history.lookback_seconds == 300.0
    assert len(rewired) == 1
    messages = [r.getMessage() for r in caplog.records]
    assert ("reload refused, the running configuration stays: invalid configuration: predictor.yaml: 1 problem(s):\n"
            "  policy.interval: expected a duration of at least 1s, got '500ms'") in messages
    assert any(m.startswith("reload: server changed; that takes effect only at a restart") for m in messages)
    assert any(m.startswith("reloaded configuration: policy changed") for m in messages)
