"""Start-up checks that need the world outside the config file: Kubernetes credentials, the HTTP server's host
and port, and Prometheus's verdict on every query.

The CLI calls these after `load_config`, before `run`, `backtest` and `check-config` (unless `--offline`) do
anything; each returns problems as config error lines (`path: message, got value`), which the CLI reports with
the file's own errors (exit 2). What is not the config's fault is not a problem: Prometheus unreachable at start
(it may come up later) is reported as such, and the daemon keeps trying.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from predictor.config import Config, MetricSpec, show_value
from predictor.sources.prometheus import PrometheusClient, QueryError, describe_cost
from predictor.sources.split import render_query
from predictor.sources.swarm import render_swarm_query

log = logging.getLogger(__name__)

QUERY_TIMEOUT_SECONDS = 5.0
"""The checks' per-query timeout (or the configured one if shorter): a query that matches nothing is cheap, and
an unreachable Prometheus should not hold the start for long."""


@dataclass(frozen=True)
class QueryCheck:
    """Prometheus's verdict on the queries: `problems` (config errors: queries it refuses, a URL that is no
    Prometheus API), how many it `accepted`, and `unreachable`: why it could not be asked (None if it was)."""

    problems: tuple[str, ...] = ()
    accepted: int = 0
    unreachable: str | None = None
    warnings: tuple[str, ...] = ()
    """Answers that are neither a verdict on the query nor unreachability (e.g. HTTP 422 on evaluation)."""


def metric_queries(metrics: Sequence[MetricSpec]) -> list[tuple[str, MetricSpec, str]]:
    """(field path, spec, template) of every query and denominator, in the order of the config."""
    found = []
    for i, spec in enumerate(metrics):
        found.append((f"metrics[{i}].query", spec, spec.query))
        if spec.denominator is not None:
            found.append((f"metrics[{i}].denominator", spec, spec.denominator))
    return found


def check_queries(config: Config, *, now: float | None = None) -> QueryCheck:
    """Run every metric query (and denominator) once at `now` with placeholders that match nothing.

    HTTP 400 (bad_data: a parse error, an unknown function, a type error) is a problem naming the metric and
    Prometheus's message; HTTP 404 means `prometheus.url` is not a Prometheus API. No answer, a 5xx, or 401/403
    (credentials that may be fixed while the daemon runs) make the check `unreachable` and stop it.
    """
    at = time.time() if now is None else now
    tls = config.prometheus.tls
    client = PrometheusClient(replace(
        config.prometheus, tls=replace(tls, timeout_seconds=min(tls.timeout_seconds, QUERY_TIMEOUT_SECONDS))))
    problems: list[str] = []
    warnings: list[str] = []
    accepted = 0
    for path, spec, template in metric_queries(config.metrics):
        which = path.rsplit(".", 1)[1]
        try:
            client.query((render_swarm_query if config.swarm_targets else render_query)(template, []), at)
        except QueryError as exc:
            if exc.status == 400:
                problems.append(f"{path}: Prometheus refuses the {which} of metric {spec.name} ({exc}), got "
                                f"{show_value(template)}")
            elif exc.status == 404:
                problems.append(f"prometheus.url: expected a Prometheus API under this URL, but {client.url}"
                                f"/api/v1/query answers HTTP 404, got {show_value(config.prometheus.url)}")
                break
            elif exc.status is not None and exc.status < 500 and exc.status not in (401, 403):
                warnings.append(f"{path}: Prometheus could not evaluate the {which} of metric {spec.name}: {exc}")
            else:
                return QueryCheck(tuple(problems), accepted, f"Prometheus: {exc}", tuple(warnings))
        else:
            accepted += 1
    return QueryCheck(tuple(problems), accepted, None, tuple(warnings))


def check_kubernetes(config: Config, *, named_only: bool = False) -> list[str]:
    """The Kubernetes credentials `run` would use load (the kubeconfig named, the pod's, or the default one).
    Only loads them: an API server that is down at start is not a config error (the watches retry).

    `named_only` (check-config): only when the file names a kubeconfig or a context; otherwise the credentials
    are those of wherever the daemon will run (its pod), not something the file says."""
    from predictor.kube import KubeConfigError, build_api_client

    if config.swarm_targets:
        return []  # Swarm targets: no Kubernetes API is used
    if named_only and config.kubernetes.kubeconfig is None and config.kubernetes.context is None:
        return []
    try:
        build_api_client(config.kubernetes).close()
    except KubeConfigError as exc:
        return [str(exc)]
    return []


def check_listen(config: Config, *, bind_port: bool) -> list[str]:
    """`server.host` resolves to an IPv4 address of this machine (the HTTP server listens on IPv4) and, with
    `bind_port`, `server.port` is free there. `check-config` passes False: the daemon it validates the file for
    may be running and holding the port; `run` passes True."""
    host, port = config.server.host, config.server.port
    try:
        socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
        return [f"server.host: expected a host name that resolves to an IPv4 address ({reason}), got "
                f"{show_value(host)}"]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as http.server does
        try:
            sock.bind((host, port if bind_port else 0))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return [f"server.port: expected a free port, but {port} is already in use on {host}, got {port}"]
            if exc.errno == errno.EACCES:
                return [f"server.port: expected a port this user may listen on (below 1024 needs privileges), "
                        f"got {port}"]
            if exc.errno == errno.EADDRNOTAVAIL:
                return [f"server.host: expected an address of this machine, got {show_value(host)}"]
            return [f"server.host: cannot listen on {host}:{port}: {exc.strerror or exc}, got {show_value(host)}"]
    return []


def check_replayable(config: Config, command: str) -> list[str]:
    """`backtest` and `train` rebuild rollouts from kube-state-metrics: Deployments only."""
    if config.swarm_targets:
        return [f"targets: expected Kubernetes targets for {command} (it replays Deployments from "
                f"kube-state-metrics; Swarm services are not replayed), got {len(config.swarm_targets)} Swarm "
                "target(s)"]
    return [f"targets[{i}].kind: expected Deployment for {command} (it replays Deployments from "
            f"kube-state-metrics; Argo Rollouts are not replayed), got 'Rollout'"
            for i, target in enumerate(config.targets) if target.kind != "Deployment"]


def check_docker(config: Config) -> list[str]:
    """With Swarm targets, `docker.host` answers as a swarm manager. Unreachable is not a config error (one
    WARNING; the daemon keeps trying); a node that answers but manages no swarm is."""
    if not config.swarm_targets:
        return []
    from docker.errors import APIError, DockerException

    from predictor.rollouts.swarm import DEFAULT_DOCKER_HOST, build_docker_client

    host = config.docker.host or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST
    if host.startswith("unix://") and not os.path.exists(host.removeprefix("unix://")):
        log.warning("Docker at %s unreachable at start: no such socket (not a config error: it is tried again on "
                    "every tick)", host)
        return []
    api = build_docker_client(replace(config.docker, timeout_seconds=min(config.docker.timeout_seconds, 5.0)))
    try:
        api.inspect_swarm()
    except APIError as exc:
        if exc.status_code == 503:  # "This node is not a swarm manager."
            return [f"docker.host: expected the Engine API of a swarm manager ({exc.explanation}), got "
                    f"{show_value(host)}"]
        log.warning("Docker at %s: %s (not a config error: it is tried again on every tick)", host, exc)
    except (DockerException, OSError) as exc:
        log.warning("Docker at %s unreachable at start: %s (not a config error: it is tried again on every "
                    "tick)", host, exc)
    finally:
        api.close()
    return []


def check_daemon_start(config: Config) -> list[str]:
    """Everything `run` checks before it starts: credentials, host and port, and the queries. Logs one line on
    the queries (accepted, or why they could not be checked) and returns the problems."""
    problems = check_kubernetes(config) + check_docker(config) + check_listen(config, bind_port=True)
    queries = check_queries(config)
    log_query_check(queries, config)
    return problems + list(queries.problems)


def log_query_check(queries: QueryCheck, config: Config) -> None:
    for warning in queries.warnings:
        log.warning("%s", warning)
    if queries.unreachable:
        log.warning("queries not checked at start: %s (not a config error: it is tried again on every tick)",
                    queries.unreachable)
    elif not queries.problems:
        log.info("Prometheus at %s accepts all %d queries of the %d metric(s)", config.prometheus.url,
                 queries.accepted, len(config.metrics))


def log_query_forms(config: Config) -> None:
    """One INFO line per metric: its query's form (per pod or aggregate) and what it costs per tick."""
    for spec in config.metrics:
        log.info("%s", describe_cost(spec))
