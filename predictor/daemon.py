"""`predictor run`: the one place that wires the adapters, the clock and the scheduler around the engine.

APScheduler runs the tick every `policy.interval` (never two at once; a late tick is coalesced), an HTTP server
answers /healthz, /readyz and /metrics, and SIGTERM lets the running tick finish before the process exits.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from predictor.config import Config
from predictor.engine import Engine
from predictor.ports import SystemClock
from predictor.status.routes import status_reply
from predictor.telemetry import DaemonMetrics

log = logging.getLogger(__name__)



@dataclass
class Health:
    """What the probes report; written by the tick and the readiness check, read by the HTTP server."""

    started: float = field(default_factory=time.time)
    last_tick_end: float | None = None
    prometheus_ok: bool = False
    kubernetes_ok: bool = False
    detail: str = "not checked yet"

    def alive(self, now: float, interval: float) -> tuple[bool, str]:
        """Alive unless ticks stopped: nothing finished for 10 intervals (and 2 minutes) since the last one."""
        reference = self.last_tick_end or self.started
        stalled = now - reference > max(10 * interval, 120.0)
        return (not stalled, f"last tick ended {now - reference:.0f}s ago")

    def ready(self) -> tuple[bool, str]:
        return (self.prometheus_ok and self.kubernetes_ok, self.detail)


class Daemon:
    def __init__(self, config: Config, engine: Engine, *, readiness_checks: dict[str, Any],
                 metrics: DaemonMetrics | None = None, clock: Any = None, leader: Any = None,
                 on_stop: Sequence[Callable[[], object]] = ()) -> None:
        self.config = config
        self.engine = engine
        self.metrics = metrics or DaemonMetrics()
        self.clock = clock or SystemClock()
        self.health = Health(started=self.clock.now())
        self.readiness_checks = readiness_checks
        self.leader = leader
        self.on_stop = list(on_stop)
        self._model_version: str | None = None
        """Closers run after the last tick (watch threads, the alert queue's final flush)."""
        self.scheduler = BackgroundScheduler(timezone=UTC)
        self.stopped = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    def tick(self) -> None:
        started = time.monotonic()
        now = self.clock.now()
        try:
            report = self.engine.tick(now)
        except Exception:
            log.exception("tick failed")
            self.metrics.tick_errors.inc()
            return
        finally:
            self.health.last_tick_end = self.clock.now()
        self.metrics.observe(report, time.monotonic() - started)
        if self.leader is not None:
            self.metrics.is_leader.set(1 if self.leader.is_leader() else 0)

    def set_model(self, artifact: Any) -> None:
        """Record which trained artifact scores (None: untrained) in the predictor_model_loaded gauge."""
        self.metrics.model_loaded.clear()
        self._model_version = getattr(artifact, "version", None)
        if artifact is not None:
            self.metrics.model_loaded.labels(artifact.name, artifact.version).set(1)

    def reload_model(self) -> None:
        """Swap in a newer trained artifact; a refused one leaves the current scorer in place."""
        from predictor.scoring import newest_usable_artifact

        assert self.config.models.dir is not None
        found = newest_usable_artifact(self.config.models.dir, self.config)
        if found is None or found[0].version == self._model_version:
            return
        artifact, scorer = found
        self.engine.scorer = scorer  # the next tick uses it; it catches up from the engine's history
        self.set_model(artifact)
        log.info("loaded model %s version %s", artifact.name, artifact.version)

    def check_readiness(self) -> None:
        results = {}
        for name, check in self.readiness_checks.items():
            try:
                results[name] = bool(check())
            except Exception:
                results[name] = False
        self.health.prometheus_ok = results.get("prometheus", True)
        self.health.kubernetes_ok = results.get("kubernetes", results.get("docker", True))  # the host's API
        self.health.detail = ", ".join(f"{k} {'ok' if v else 'unreachable'}" for k, v in results.items())

    def start(self) -> None:
        interval = self.config.policy.interval_seconds
        self._server = serve_http(self, self.config.server.host, self.config.server.port)
        self.check_readiness()
        self.scheduler.add_job(self.tick, "interval", seconds=interval, id="tick", max_instances=1, coalesce=True,
                               next_run_time=datetime.now(UTC), misfire_grace_time=int(interval))
        if self.config.models.dir is not None and self.config.models.scorer == "forecast":
            self.scheduler.add_job(self.reload_model, "interval", seconds=self.config.models.reload_seconds,
                                   id="reload-model", max_instances=1, coalesce=True)
        self.scheduler.add_job(self.check_readiness, "interval", seconds=max(interval, 10.0), id="readiness",
                               max_instances=1, coalesce=True)
        if self.leader is not None:
            self.leader.start()
        self.scheduler.start()
        log.info("predictor running: %d target(s), %d metric(s), tick every %gs, action %s%s, http on %s:%d",
                 len(self.config.targets) or len(self.config.swarm_targets), len(self.config.metrics), interval,
                 self.config.policy.action,
                 " (dry run)" if self.config.policy.dry_run else "", self.config.server.host, self.port)

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server else 0

    def stop(self) -> None:
        """Let a running tick finish, then stop the scheduler and the HTTP server."""
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        if self.leader is not None:
            self.leader.stop(timeout_seconds=5.0)  # releases the Lease: the follower takes over at once
        for close in self.on_stop:
            try:
                close()
            except Exception:  # shutting down regardless
                log.exception("error while closing")
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self.stopped.set()
        log.info("predictor stopped")

    def run_until_signalled(self) -> None:
        stop_requested = threading.Event()

        def on_signal(signum: int, _frame: object) -> None:
            log.info("received %s: finishing the current tick", signal.Signals(signum).name)
            stop_requested.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.start()
        stop_requested.wait()
        self.stop()


def serve_http(daemon: Daemon, host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                ok, detail = daemon.health.alive(daemon.clock.now(), daemon.config.policy.interval_seconds)
                self._reply(200 if ok else 503, f"{'ok' if ok else 'stalled'}: {detail}\n".encode())
            elif path == "/readyz":
                ok, detail = daemon.health.ready()
                self._reply(200 if ok else 503, f"{'ready' if ok else 'not ready'}: {detail}\n".encode())
            elif path == "/metrics":
                self._reply(200, generate_latest(daemon.metrics.registry), CONTENT_TYPE_LATEST)
            elif (reply := status_reply(daemon.engine.board, path)) is not None:
                self._reply(*reply)
            else:
                self._reply(404, b"not found: try /, /api/v1/rollouts, /healthz, /readyz or /metrics\n")

        def _reply(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http: " + format, *args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server


def build_daemon(config: Config) -> Daemon:
    """Wire the real adapters: Kubernetes API (or a swarm manager's Engine API), Prometheus, Alertmanager, the
    wall clock."""
    if config.swarm_targets:
        return build_swarm_daemon(config)
    from kubernetes import client as kube_client

    from predictor.actuators.kubernetes import CRASH_AT_ENV, CRASH_POINTS, KubernetesActuator
    from predictor.alerting import AlertmanagerNotifier, LoggingNotifier
    from predictor.config import ConfigError
    from predictor.hosts import ActuatorByKind, CombinedRolloutSource
    from predictor.kube import KubeConfigError, build_api_client
    from predictor.leader import LeaderElectionConfig, LeaderElectionConfigError, LeaderElector
    from predictor.rollouts.kubernetes import KubernetesRolloutSource
    from predictor.scoring import build_scorer
    from predictor.sources.prometheus import PrometheusMetricSource

    try:
        election = LeaderElectionConfig.from_env()
    except LeaderElectionConfigError as exc:
        raise ConfigError([str(exc)], "environment") from exc
    try:
        api_client = build_api_client(config.kubernetes)
    except KubeConfigError as exc:
        raise ConfigError([str(exc)], "kubernetes credentials") from exc
    deployment_targets = [t for t in config.targets if t.kind == "Deployment"]
    rollout_targets = [t for t in config.targets if t.kind == "Rollout"]
    sources: list[Any] = [KubernetesRolloutSource(api_client, deployment_targets)] if deployment_targets else []
    crash_at = os.environ.get(CRASH_AT_ENV) or None  # a test hook, read once (predictor/actuators/kubernetes.py)
    if crash_at is not None and crash_at not in CRASH_POINTS:
        raise ConfigError([f"{CRASH_AT_ENV}: expected one of {', '.join(CRASH_POINTS)}, got {crash_at!r}"],
                          "environment")
    actuators: dict[str, Any] = {"deployment": KubernetesActuator(api_client, clock=SystemClock(), crash_at=crash_at)}
    if rollout_targets:  # Argo Rollouts beside (or instead of) Deployments
        from predictor.actuators.argo import ArgoActuator
        from predictor.rollouts.argo import ArgoRolloutSource

        sources.append(ArgoRolloutSource(api_client, rollout_targets))
        actuators["rollout"] = ArgoActuator(api_client, clock=SystemClock())
    rollouts = sources[0] if len(sources) == 1 else CombinedRolloutSource(sources)
    metrics = PrometheusMetricSource(config.prometheus)
    clock = SystemClock()
    notifier: Any
    if config.alertmanager.url:
        notifier = AlertmanagerNotifier(config.alertmanager, resend_seconds=config.policy.interval_seconds, clock=clock)
    else:
        notifier = LoggingNotifier()
    leader = None
    if election is not None:
        leader = LeaderElector(kube_client.CoordinationV1Api(api_client), election, clock=clock)
    scorer, artifact = build_scorer(config, scorer=config.models.scorer)
    engine = Engine(config, rollouts=rollouts, metrics=metrics, actuator=ActuatorByKind(actuators),
                    notifier=notifier, scorer=scorer, may_act=leader.is_leader if leader is not None else lambda: True,
                    kill_switch=build_kill_switch(config, api_client), rebuild_history=True)
    # Readiness never depends on leadership: a follower is ready to take over.
    checks = {"prometheus": metrics.is_online, "kubernetes": rollouts.is_online}
    daemon = Daemon(config, engine, readiness_checks=checks, clock=clock, leader=leader,
                    on_stop=[rollouts.close, notifier.close])
    daemon.set_model(artifact)
    return daemon


def build_swarm_daemon(config: Config) -> Daemon:
    """Wire the Docker Swarm adapters (`rollouts/swarm`, `sources/swarm`, `actuators/swarm`) around the same
    engine: one predictor per swarm, no leader election (run one replica)."""
    from predictor.actuators.swarm import SwarmActuator
    from predictor.alerting import AlertmanagerNotifier, LoggingNotifier
    from predictor.rollouts.swarm import SwarmRolloutSource, build_docker_client
    from predictor.scoring import build_scorer
    from predictor.sources.swarm import SwarmMetricSource

    api = build_docker_client(config.docker)
    rollouts = SwarmRolloutSource(api, config.swarm_targets)
    metrics = SwarmMetricSource(config.prometheus, task_label=rollouts.task_label, limits=rollouts.limits)
    clock = SystemClock()
    notifier: Any
    if config.alertmanager.url:
        notifier = AlertmanagerNotifier(config.alertmanager, resend_seconds=config.policy.interval_seconds, clock=clock)
    else:
        notifier = LoggingNotifier()
    scorer, artifact = build_scorer(config, scorer=config.models.scorer)
    engine = Engine(config, rollouts=rollouts, metrics=metrics, actuator=SwarmActuator(api, clock=clock),
                    notifier=notifier, scorer=scorer)
    checks = {"prometheus": metrics.is_online, "docker": rollouts.is_online}
    daemon = Daemon(config, engine, readiness_checks=checks, clock=clock, on_stop=[rollouts.close, notifier.close])
    daemon.set_model(artifact)
    return daemon


def build_kill_switch(config: Config, api_client: Any, environ: Mapping[str, str] | None = None) -> Any:
    """The ConfigMap kill switch in `safety.kill_switch.namespace`, or the daemon's own namespace; None (with a
    WARNING) when neither is known, as when run outside a pod without the setting."""
    from predictor.kill_switch import ConfigMapKillSwitch
    from predictor.leader import ENV_POD_NAMESPACE

    env = os.environ if environ is None else environ
    namespace = config.safety.kill_switch_namespace or env.get(ENV_POD_NAMESPACE)
    if not namespace:
        log.warning("no kill switch: set safety.kill_switch.namespace (or %s) to read ConfigMap %s",
                    ENV_POD_NAMESPACE, config.safety.kill_switch_configmap)
        return None
    return ConfigMapKillSwitch(api_client, namespace, config.safety.kill_switch_configmap)
