"""Outages made visible: query failures counted as errors, predictor_dependency_up, one log line per change of
state (not one per tick), and /readyz as soon as the first sync is done."""

import logging
import urllib.request
from dataclasses import replace

import pytest

from predictor.config import PrometheusConfig, ServerConfig, TLSConfig
from predictor.daemon import Daemon
from predictor.demo import SimulatedCluster, demo_config
from predictor.detectors.trend import ThresholdTrendScorer
from predictor.domain import Action, DeploymentRef, RolloutState
from predictor.engine import Engine
from predictor.simulate import SimulatedRollout
from predictor.sources.prometheus import PrometheusMetricSource
from predictor.telemetry import DaemonMetrics, DependencyWatch
from tests.fixtures.alertmanager import free_port

START = 1_767_268_800.0


class Clock:
    def __init__(self) -> None:
        self.t = START

    def now(self) -> float:
        return self.t


class SyncingCluster(SimulatedCluster):
    """Online once listed, as the Kubernetes source is once its first LIST synced the watch cache."""

    def __init__(self, rollouts: list[SimulatedRollout]) -> None:
        super().__init__(rollouts)
        self.synced = False
        self.broken = False

    def list_rollouts(self, at: float) -> list[RolloutState]:
        if self.broken:
            raise ConnectionError("connection refused")
        self.synced = True
        return super().list_rollouts(at)

    def is_online(self) -> bool:
        return self.synced and not self.broken


def dead_prometheus() -> PrometheusMetricSource:
    return PrometheusMetricSource(PrometheusConfig(url=f"http://127.0.0.1:{free_port()}",
                                                   tls=TLSConfig(timeout_seconds=1.0)))


def make(metrics: object = None) -> tuple[Daemon, SyncingCluster, Clock]:
    config = replace(demo_config(Action.PAUSE), server=ServerConfig(host="127.0.0.1", port=0))
    cluster = SyncingCluster([SimulatedRollout(DeploymentRef("shop", "checkout"), "error_regression", START)])
    engine = Engine(config, rollouts=cluster, metrics=metrics or cluster, actuator=cluster, notifier=cluster,
                    scorer=ThresholdTrendScorer())
    clock = Clock()
    daemon = Daemon(config, engine, readiness_checks={"prometheus": lambda: True, "kubernetes": cluster.is_online},
                    clock=clock)
    return daemon, cluster, clock


def scrape(daemon: Daemon) -> str:
    from prometheus_client import generate_latest

    return generate_latest(daemon.metrics.registry).decode()


def test_failed_queries_count_as_errors_and_prometheus_goes_down_once(caplog: pytest.LogCaptureFixture) -> None:
    daemon, cluster, clock = make(metrics=dead_prometheus())
    daemon.check_readiness()
    with caplog.at_level(logging.DEBUG):
        for _ in range(4):
            daemon.tick()
            clock.t += 15.0
    metrics = scrape(daemon)
    queries = len(daemon.config.metrics)
    assert 'predictor_queries_total{metric="error_ratio",outcome="error"} 4.0' in metrics
    assert f"predictor_tick_errors_total {4.0 * queries}" in metrics
    assert 'predictor_dependency_up{dependency="prometheus"} 0.0' in metrics
    assert 'predictor_dependency_up{dependency="kubernetes"} 1.0' in metrics
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno >= logging.WARNING and r.name.startswith("predictor")]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("prometheus is down: metric error_ratio: error_ratio: query failed: cannot connect")
    assert any("query failed" in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
    assert cluster.actions == [], "no action from missing data"


def test_back_up_logs_one_info_with_how_long_it_was_down(caplog: pytest.LogCaptureFixture) -> None:
    daemon, cluster, clock = make()
    cluster.broken = True
    with caplog.at_level(logging.INFO, logger="predictor"):
        for _ in range(3):
            daemon.tick()
            clock.t += 15.0
        cluster.broken = False
        daemon.tick()
        daemon.tick()
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if "kubernetes is" in r.getMessage()]
    assert [level for level, _ in lines] == ["WARNING", "INFO"], lines
    assert lines[0][1] == ("kubernetes is down: listing rollouts failed: connection refused (retried every tick; no "
                           "action is taken on missing data)")
    assert lines[1][1].startswith("kubernetes is back after ")
    assert 'predictor_dependency_up{dependency="kubernetes"} 1.0' in scrape(daemon)


def test_readyz_is_true_right_after_the_first_sync() -> None:
    daemon, _, _ = make()
    daemon._server = None
    daemon.check_readiness()
    assert daemon.health.ready() == (False, "prometheus ok, kubernetes unreachable")
    daemon.tick()
    assert daemon.health.ready() == (True, "prometheus ok, kubernetes ok")


def test_readyz_over_http_after_start_without_waiting_for_the_probe_round() -> None:
    daemon, _, _ = make()
    daemon.start()
    try:
        url = f"http://127.0.0.1:{daemon.port}/readyz"
        # the first tick runs at once; /readyz follows it, not the 10 s readiness job
        for _ in range(100):
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            daemon.stopped.wait(0.05)
        else:
            raise AssertionError("not ready within 5 s of start")
    finally:
        daemon.stop()


def test_dependency_watch_logs_changes_only(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    watch = DependencyWatch(DaemonMetrics().dependency_up, monotonic=lambda: now[0])
    with caplog.at_level(logging.DEBUG, logger="predictor.telemetry"):
        watch.report("alertmanager", None)
        for _ in range(3):
            watch.report("alertmanager", "not answering its readiness check")
            now[0] += 30
        watch.report("alertmanager", None)
        watch.report("alertmanager", None)
    by_level = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    assert by_level == [
        ("WARNING", "alertmanager is down: not answering its readiness check (retried every tick; no action is taken "
                    "on missing data)"),
        ("INFO", "alertmanager is back after 1m30s"),
    ]
    assert not watch.is_down("alertmanager")


class OneBrokenQuery(SimulatedCluster):
    """Prometheus up, but one metric's query refused (as a query broken by a relabelling would be)."""

    def __init__(self, rollouts: list[SimulatedRollout], broken: str) -> None:
        super().__init__(rollouts)
        self.broken = broken

    def fetch(self, spec, rollouts, at):  # type: ignore[no-untyped-def]
        from predictor.sources.split import unknown_observations

        if spec.name == self.broken:
            return unknown_observations(rollouts, spec.name, at, f"{spec.name}: query failed: HTTP 400: bad_data")
        return super().fetch(spec, rollouts, at)


def test_one_failing_query_is_one_warning_then_one_info(caplog: pytest.LogCaptureFixture) -> None:
    cluster = OneBrokenQuery([SimulatedRollout(DeploymentRef("shop", "checkout"), "healthy", START)], "latency_p99")
    engine = Engine(demo_config(Action.PAUSE), rollouts=cluster, metrics=cluster, actuator=cluster,
                    notifier=cluster, scorer=ThresholdTrendScorer())
    with caplog.at_level(logging.INFO, logger="predictor.engine"):
        reports = [engine.tick(START + 15.0 * i) for i in range(3)]
        cluster.broken = ""
        engine.tick(START + 45.0)
    assert all(r.dependencies["prometheus"] is None for r in reports), "Prometheus itself is up"
    assert ("latency_p99", "error") in reports[0].query_outcomes
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if "latency_p99: query" in r.getMessage()]
    assert lines == [("WARNING", "metric latency_p99: latency_p99: query failed: HTTP 400: bad_data (retried every "
                                 "tick)"), ("INFO", "metric latency_p99: query answering again")]
