"""`predictor run`: the one place that wires the adapters, the clock and the scheduler around the engine.

APScheduler runs the tick every `policy.interval` (never two at once; a late tick is coalesced), an HTTP server
answers /healthz, /readyz and /metrics (and hands the status pages and API to `predictor.status.routes`), and
SIGTERM lets the running tick finish before the process exits.
SIGHUP reloads the config file: a valid new one replaces the old at the next tick (with the adapters whose
sections changed rebuilt); an invalid one is refused with the error lines a start would print, and the old one
stays.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from predictor.config import Config, ConfigError
from predictor.engine import Engine
from predictor.hooks import analysis_reply, flagger_reply
from predictor.ports import SystemClock
from predictor.status.routes import status_reply
from predictor.telemetry import DaemonMetrics, DependencyWatch

log = logging.getLogger(__name__)
MAX_HOOK_BODY_BYTES = 1 << 20
"""A webhook's body is read up to 1 MiB (Flagger's payload is a few hundred bytes)."""

RESTART_ONLY_SECTIONS = ("server", "kubernetes")
"""Sections a reload cannot apply: the HTTP server's address is bound, the credentials are loaded at start."""
CONFIG_SECTIONS = ("prometheus", "alertmanager", "kubernetes", "targets", "metrics", "policy", "server", "logging",
                   "models", "safety")



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
                 on_stop: Sequence[Callable[[], object]] = (), load_config: Callable[[], Config] | None = None,
                 rewire: Callable[[Config, Config], None] | None = None) -> None:
        """`load_config` reads and checks the config file again on SIGHUP (None: no reload); `rewire(old, new)`
        rebuilds the adapters whose sections changed before the engine gets the new config."""
        self.config = config
        self.engine = engine
        self.metrics = metrics or DaemonMetrics()
        self.clock = clock or SystemClock()
        self.health = Health(started=self.clock.now())
        self.readiness_checks = readiness_checks
        """name -> check; "prometheus" and "kubernetes" make /readyz, every one sets predictor_dependency_up."""
        self.dependencies = DependencyWatch(self.metrics.dependency_up)
        self._last_checks: dict[str, bool] = {}
        self._tick_saw: set[str] = set()
        """Dependencies the last tick observed itself (its queries, its listing): the probes leave those alone."""
        self.leader = leader
        self.on_stop = list(on_stop)
        self._model_version: str | None = None
        """Closers run after the last tick (watch threads, the alert queue's final flush)."""
        self.scheduler = BackgroundScheduler(timezone=UTC)
        self._load_config = load_config
        self._rewire = rewire
        self._reload_requested = threading.Event()
        self.stopped = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    def request_reload(self) -> None:
        """What SIGHUP does: the next tick reloads the config first (a signal handler must not do I/O)."""
        self._reload_requested.set()

    def reload_config(self) -> bool:
        """Read the config file again; True when the new one now runs. Never raises."""
        self._reload_requested.clear()
        if self._load_config is None:
            log.warning("reload asked, but this daemon was started without a config file to reload")
            return False
        try:
            new = self._load_config()
        except ConfigError as exc:
            log.error("reload refused, the running configuration stays: invalid configuration: %s", exc)
            return False
        except Exception:
            log.exception("reload failed, the running configuration stays")
            return False
        old = self.config
        kept = [name for name in RESTART_ONLY_SECTIONS if getattr(new, name) != getattr(old, name)]
        if kept:
            log.warning("reload: %s changed; that takes effect only at a restart (the running one stays)",
                        " and ".join(kept))
            new = replace(new, **{name: getattr(old, name) for name in kept})
        if new == old:
            log.info("reload: configuration unchanged")
            return True
        try:
            if self._rewire is not None:
                self._rewire(old, new)
        except Exception:
            log.exception("reload failed while rebuilding adapters, the running configuration stays")
            return False
        self.config = new
        self.engine.config = new
        self.engine.history.lookback_seconds = new.policy.lookback_seconds
        if new.policy.interval_seconds != old.policy.interval_seconds and self.scheduler.running:
            self.scheduler.reschedule_job("tick", trigger="interval", seconds=new.policy.interval_seconds)
        changed = [name for name in CONFIG_SECTIONS if getattr(new, name) != getattr(old, name)]
        log.info("reloaded configuration: %s changed; %d target(s), %d metric(s), action %s%s",
                 ", ".join(changed), len(new.targets), len(new.metrics), new.policy.action,
                 " (dry run)" if new.policy.dry_run else "")
        return True

    def tick(self) -> None:
        if self._reload_requested.is_set():
            self.reload_config()
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
        for dependency, problem in report.dependencies.items():
            self.dependencies.report(dependency, problem)
        self._tick_saw = set(report.dependencies)
        if not self.health.kubernetes_ok:
            # Ready as soon as a tick has synced the watch cache, not at the next probe round (a cheap check).
            self.check_readiness(only=("kubernetes",))
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

    def check_readiness(self, only: Sequence[str] | None = None) -> None:
        """Run the checks (those named in `only`, the others keep their last result)."""
        results = dict(self._last_checks)
        for name, check in self.readiness_checks.items():
            if only is not None and name not in only:
                continue
            try:
                results[name] = bool(check())
            except Exception:
                results[name] = False
        results = {name: ok for name, ok in results.items() if name in self.readiness_checks}
        self._last_checks = results
        self.health.prometheus_ok = results.get("prometheus", True)
        self.health.kubernetes_ok = results.get("kubernetes", results.get("docker", True))  # the host's API
        self.health.detail = ", ".join(f"{k} {'ok' if v else 'unreachable'}" for k, v in results.items())
        if self.health.last_tick_end is None:
            return  # before the first tick nothing is synced yet: not an outage
        for name, ok in results.items():
            if name not in self._tick_saw:
                self.dependencies.report(name, None if ok else "not answering its readiness check")

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

        def on_hangup(_signum: int, _frame: object) -> None:
            log.info("received SIGHUP: reloading the configuration at the next tick")
            self.request_reload()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGHUP, on_hangup)
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
            elif path == "/api/v1/analysis":  # Argo Rollouts' web metric provider
                query = self.path.split("?", 1)[1] if "?" in self.path else ""
                self._reply(*analysis_reply(daemon.engine.board, daemon.config.policy, query))
            elif (reply := status_reply(daemon.engine.board, path)) is not None:
                self._reply(*reply)
            else:
                self._reply(404, b"not found: try /, /api/v1/rollouts, /healthz, /readyz or /metrics\n")

        def do_POST(self) -> None:
            path = self.path.split("?", 1)[0]
            if path in ("/api/v1/flagger/rollback", "/api/v1/flagger/gate"):  # Flagger's webhooks
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(min(length, MAX_HOOK_BODY_BYTES))
                hook = path.rsplit("/", 1)[1]
                self._reply(*flagger_reply(daemon.engine.board, daemon.config.policy, hook, body))
            else:
                self._reply(404, b"not found: POST /api/v1/flagger/rollback or /api/v1/flagger/gate\n")

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


def build_daemon(config: Config, config_path: str | os.PathLike[str] | None = None) -> Daemon:
    """Wire the real adapters: Kubernetes API (or a swarm manager's Engine API), Prometheus, Alertmanager, the
    wall clock. With `config_path`, SIGHUP reloads that file (Kubernetes only)."""
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
    crash_at = os.environ.get(CRASH_AT_ENV) or None  # a test hook, read once (predictor/actuators/kubernetes.py)
    if crash_at is not None and crash_at not in CRASH_POINTS:
        raise ConfigError([f"{CRASH_AT_ENV}: expected one of {', '.join(CRASH_POINTS)}, got {crash_at!r}"],
                          "environment")

    def build_hosts(targets: Sequence[Any]) -> tuple[Any, Any]:
        """The rollout source and the actuator for these targets (Deployments, Argo Rollouts or both)."""
        deployment_targets = [t for t in targets if t.kind == "Deployment"]
        rollout_targets = [t for t in targets if t.kind == "Rollout"]
        sources: list[Any] = [KubernetesRolloutSource(api_client, deployment_targets)] if deployment_targets else []
        actuators: dict[str, Any] = {"deployment": KubernetesActuator(api_client, clock=SystemClock(),
                                                                      crash_at=crash_at,
                                                                      page_url=config.server.page_url)}
        if rollout_targets:  # Argo Rollouts beside (or instead of) Deployments
            from predictor.actuators.argo import ArgoActuator
            from predictor.rollouts.argo import ArgoRolloutSource

            sources.append(ArgoRolloutSource(api_client, rollout_targets))
            actuators["rollout"] = ArgoActuator(api_client, clock=SystemClock())
        source = sources[0] if len(sources) == 1 else CombinedRolloutSource(sources)
        return source, ActuatorByKind(actuators)

    rollouts, actuator = build_hosts(config.targets)
    metrics = PrometheusMetricSource(config.prometheus)
    clock = SystemClock()

    def build_notifier(settings: Config) -> Any:
        if settings.alertmanager.url:
            return AlertmanagerNotifier(settings.alertmanager, resend_seconds=settings.policy.interval_seconds,
                                        clock=clock, page_url=settings.server.page_url)
        return LoggingNotifier()

    notifier = build_notifier(config)
    leader = None
    if election is not None:
        leader = LeaderElector(kube_client.CoordinationV1Api(api_client), election, clock=clock)
    scorer, artifact = build_scorer(config, scorer=config.models.scorer)
    engine = Engine(config, rollouts=rollouts, metrics=metrics, actuator=actuator,
                    notifier=notifier, scorer=scorer, may_act=leader.is_leader if leader is not None else lambda: True,
                    kill_switch=build_kill_switch(config, api_client), rebuild_history=True)
    # Readiness never depends on leadership: a follower is ready to take over.
    checks: dict[str, Callable[[], bool]] = {"prometheus": metrics.is_online, "kubernetes": rollouts.is_online}
    if config.alertmanager.url:
        checks["alertmanager"] = lambda: bool(engine.notifier.is_online())

    def load_checked() -> Config:
        from predictor import preflight
        from predictor.config import load_config

        assert config_path is not None
        new = load_config(config_path)
        queries = preflight.check_queries(new)
        if queries.problems:
            raise ConfigError(list(queries.problems), str(config_path))
        return new

    def rewire(old: Config, new: Config) -> None:
        """Rebuild what the changed sections feed; the engine's history and memory are kept."""
        from predictor.telemetry import configure_logging

        if new.targets != old.targets:
            source, new_actuator = build_hosts(new.targets)
            if hasattr(source, "sync"):
                source.sync()  # raises when the API server cannot list the new targets: the old ones stay
            previous, engine.rollouts, engine.actuator = engine.rollouts, source, new_actuator
            checks["kubernetes"] = source.is_online
            previous.close()
        if new.prometheus != old.prometheus:
            engine.metrics = PrometheusMetricSource(new.prometheus)
            checks["prometheus"] = engine.metrics.is_online
        if new.alertmanager != old.alertmanager or new.policy.interval_seconds != old.policy.interval_seconds:
            previous, engine.notifier = engine.notifier, build_notifier(new)
            previous.close()
            if new.alertmanager.url:
                checks["alertmanager"] = lambda: bool(engine.notifier.is_online())
            else:
                checks.pop("alertmanager", None)
        if new.metrics != old.metrics or new.models != old.models:
            engine.scorer, loaded = build_scorer(new, scorer=new.models.scorer)
            daemon.set_model(loaded)
        if new.safety != old.safety:
            engine.kill_switch = build_kill_switch(new, api_client)
        if new.logging != old.logging:
            configure_logging(new.logging.format, new.logging.level)

    daemon = Daemon(config, engine, readiness_checks=checks, clock=clock, leader=leader,
                    on_stop=[lambda: engine.rollouts.close(), lambda: engine.notifier.close()],
                    load_config=load_checked if config_path is not None else None, rewire=rewire)
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
        notifier = AlertmanagerNotifier(config.alertmanager, resend_seconds=config.policy.interval_seconds, clock=clock,
                                        page_url=config.server.page_url)
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
