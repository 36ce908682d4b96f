"""Validated configuration, loaded once at start by the CLI.

Every error is one line naming the field path and the bad value (`policy.horizon: expected a positive duration,
got '-5m'`), and all errors of a file are reported together. `${VAR}` in a string value is replaced by the
environment variable VAR (the sidecar mode gets its namespace and Deployment name that way). Checks that need the
world outside the file (credentials, addresses, Prometheus) are in `predictor.preflight`.
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from predictor.domain import Action, DeploymentRef, Direction, rollout_page_path
from predictor.promql import PromQLError, QueryForm, QueryShape, analyse_template

PLACEHOLDERS = ("namespace", "deployment", "pods")
WORKLOAD_KINDS = ("Deployment", "Rollout")
"""What a Kubernetes target watches: Deployments, or Argo Rollouts (their pods are named the same way)."""
SWARM_PLACEHOLDERS = ("service", "tasks")
"""A Swarm target's queries select tasks: `{service}` (a regex of the service names) and `{tasks}` (of the task
names `<service>.<slot>.<task id>` in scope)."""
DEFAULT_TASK_LABEL = "container_label_com_docker_swarm_task_name"
"""The label that carries a Swarm task's name on per-task series (cAdvisor's spelling of the container label)."""
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 31536000.0}
"""PromQL's duration units (a year is 365 days there)."""
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class ConfigError(ValueError):
    """One or more problems; `errors` holds one `path: message, got value` line each, `source` names the file."""

    def __init__(self, errors: Sequence[str], source: str = "config") -> None:
        self.errors = list(errors)
        self.source = source
        super().__init__(f"{source}: {len(self.errors)} problem(s):\n  " + "\n  ".join(self.errors))


def parse_duration(text: str | int | float) -> float:
    """'90s', '10m', '1h30m', '500ms' or a number of seconds -> seconds. Raises ValueError."""
    if isinstance(text, bool):
        raise ValueError("not a duration")
    if isinstance(text, int | float):
        if not math.isfinite(text):
            raise ValueError("not a finite duration")
        return float(text)
    stripped = text.strip()
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(stripped):
        if match.start() != pos:
            raise ValueError("not a duration")
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos == 0 or pos != len(stripped):
        raise ValueError("not a duration")
    return total


def format_duration(seconds: float) -> str:
    seconds = round(seconds)
    minutes, secs = divmod(abs(seconds), 60)
    sign = "-" if seconds < 0 else ""
    return f"{sign}{minutes}m{secs:02d}s" if minutes else f"{sign}{secs}s"


@dataclass(frozen=True)
class TLSConfig:
    bearer_token_file: Path | None = None
    ca_file: Path | None = None
    verify_tls: bool = True
    timeout_seconds: float = 10.0


@dataclass(frozen=True)
class PrometheusConfig:
    url: str = "http://localhost:9090"
    tls: TLSConfig = field(default_factory=TLSConfig)


@dataclass(frozen=True)
class AlertmanagerConfig:
    url: str | None = None
    """None: alerts are only logged."""
    tls: TLSConfig = field(default_factory=TLSConfig)
    generator_url: str = ""
    group_wait_seconds: float = 30.0
    """Alertmanager's `group_wait` (its default 30 s): a firing alert is kept firing at least this long before
    its resolve is sent, or Alertmanager would never notify it (it does not notify a resolve it never notified
    firing). Default 30s."""


@dataclass(frozen=True)
class KubernetesConfig:
    kubeconfig: Path | None = None
    """None: in-cluster config when running in a pod, else the default kubeconfig. As written (`~` is expanded
    where it is loaded, so that errors name it both ways)."""
    context: str | None = None


@dataclass(frozen=True)
class Target:
    """Deployments to watch: all of a namespace, narrowed by a label selector and/or names."""

    namespace: str
    selector: str = ""
    names: tuple[str, ...] = ()
    kind: str = "Deployment"
    """Deployment, or Rollout (Argo Rollouts' argoproj.io/v1alpha1 kind)."""


@dataclass(frozen=True)
class DockerTLSConfig:
    """TLS for a Docker Engine on TCP (`tcp://host:2376`): the CA and the client certificate Docker asks for."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    verify_tls: bool = True


@dataclass(frozen=True)
class DockerConfig:
    host: str | None = None
    """None: `DOCKER_HOST`, else unix:///var/run/docker.sock (where it is resolved: `rollouts/swarm`)."""
    tls: DockerTLSConfig | None = None
    """None: no TLS (a unix socket, or plain TCP)."""
    timeout_seconds: float = 10.0


@dataclass(frozen=True)
class SwarmTarget:
    """Docker Swarm services to watch: one by name, or all that carry a label (`key=value` or `key`)."""

    service: str | None = None
    label: str | None = None
    task_label: str = DEFAULT_TASK_LABEL
    """The label of the per-task series that holds the task name."""


@dataclass(frozen=True)
class MetricSpec:
    """One SLO metric. `query` (and `denominator`) are PromQL templates giving one series per pod.

    `query` must keep the labels `namespace` and `pod` (and `le` when `quantile` is set). Per scope (the
    Deployment, its new pods, its old pods) the per-pod values are combined: with `denominator` as
    sum(query)/sum(denominator); with `quantile` as that quantile of the summed buckets; otherwise by `aggregate`.
    A breach is `value >= threshold` for direction above, `value <= threshold` for below.
    """

    name: str
    query: str
    threshold: float
    direction: Direction = Direction.ABOVE
    denominator: str | None = None
    quantile: float | None = None
    aggregate: str = "max"
    min_denominator: float = 0.0
    """Below this summed denominator (e.g. requests per second) the scope's value is unknown: too little traffic."""
    unit: str = ""
    limit: str | None = None
    """Swarm only, set by its built-in pack: each task's value is divided by the service's `Resources.Limits`
    (`memory`: MemoryBytes, `cpu`: NanoCPUs in cores)."""

    def breached(self, value: float) -> bool:
        return value >= self.threshold if self.direction is Direction.ABOVE else value <= self.threshold

    @functools.cached_property
    def form(self) -> QueryForm:
        """Per pod (the result keeps `namespace` and `pod`) or aggregate (one value for the pods in `{pods}`), as
        `predictor.promql` reads the query; `load_config` refused queries that are neither."""
        if any("{" + word + "}" in self.query for word in SWARM_PLACEHOLDERS):
            return QueryForm.PER_POD  # a Swarm query is per task (`predictor.rollouts.swarm` splits it)
        try:
            return analyse_template(self.query).form
        except PromQLError:
            return QueryForm.PER_POD


@dataclass(frozen=True)
class PolicyConfig:
    action: Action = Action.PAUSE
    """The action taken on a rollout predicted to breach: pause, undo or alert."""
    dry_run: bool = False
    bake_seconds: float = 600.0
    """How long a completed rollout stays watched."""
    horizon_seconds: float = 1800.0
    """How far ahead a predicted breach counts."""
    interval_seconds: float = 15.0
    """Tick period."""
    consecutive_ticks: int = 2
    """Ticks in a row at risk before acting: one noisy sample never acts."""
    risk_threshold: float = 0.7
    """Risk (0..1) at or above which a tick counts as at risk: the rollout is paused (or undone, see below)."""
    alert_threshold: float = 0.5
    """Risk at or above which a warning alert fires without touching the rollout."""
    undo_threshold: float = 0.9
    """With `action: undo`, the risk needed to undo a running rollout; below it, it is paused."""
    blind_after_ticks: int = 8
    """Consecutive ticks with no usable data after which the rollout is reported blind."""
    blind_action: Action = Action.ALERT
    """alert or pause when blind; never undo."""
    lookback_seconds: float = 600.0
    """History kept per metric for trends."""
    max_watch_seconds: float = 1800.0
    """How long after completion a revision whose evidence still builds stays watched beyond `bake_seconds`
    (`policy.in_scope`)."""


@dataclass(frozen=True)
class ServerConfig:
    host: str = "0.0.0.0"
    port: int = 8080
    external_url: str = ""
    """Where people reach the daemon's pages (an Ingress, not the pod IP); "" for none. Alerts' generatorURL and
    the `predictor.io/status-url` annotation link to `<external_url>/rollouts/<namespace>/<deployment>`."""

    def page_url(self, ref: DeploymentRef) -> str:
        """The rollout's page under `external_url`, "" when that is not set."""
        return f"{self.external_url}/{rollout_page_path(ref)}" if self.external_url else ""


@dataclass(frozen=True)
class LoggingConfig:
    format: str = "text"
    level: str = "INFO"


@dataclass(frozen=True)
class SafetyConfig:
    """Limits on what the daemon may do whatever the policy decides (`predictor.safety` applies them)."""

    budget_actions: int = 3
    """At most this many pauses and undos across everything watched within `budget_seconds`; beyond, alerts only."""
    budget_seconds: float = 600.0
    kill_switch_configmap: str = "predictor-kill-switch"
    """ConfigMap read every tick: its key `stop: "true"` turns every pause and undo into an alert."""
    kill_switch_namespace: str | None = None
    """Where that ConfigMap lives; None: the daemon's own namespace ($POD_NAMESPACE)."""


SCORERS = ("forecast", "trend")


@dataclass(frozen=True)
class ModelsConfig:
    dir: Path | None = None
    """Where `predictor train` writes artifacts; None: untrained scoring."""
    reload_seconds: float = 3600.0
    """How often the daemon looks for a newer artifact (default 1h)."""
    scorer: str = "forecast"
    """forecast (breach probabilities from local trends, new against old pods; trained when models.dir holds an
    artifact) or trend (threshold, new against old pods and linear trend; never trained)."""


@dataclass(frozen=True)
class Config:
    prometheus: PrometheusConfig = field(default_factory=PrometheusConfig)
    alertmanager: AlertmanagerConfig = field(default_factory=AlertmanagerConfig)
    kubernetes: KubernetesConfig = field(default_factory=KubernetesConfig)
    targets: tuple[Target, ...] = ()
    metrics: tuple[MetricSpec, ...] = ()
    docker: DockerConfig = field(default_factory=DockerConfig)
    swarm_targets: tuple[SwarmTarget, ...] = ()
    """Swarm services to watch (`- swarm: {...}` items of `targets`); a config watches one host, so with these
    `targets` is empty."""
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)

    def metric(self, name: str) -> MetricSpec:
        for spec in self.metrics:
            if spec.name == name:
                return spec
        raise KeyError(name)


def default_metric_pack() -> tuple[MetricSpec, ...]:
    """SLO metrics built on series most clusters already have (instrumented apps, cAdvisor, kube-state-metrics)."""
    sel = 'namespace=~"{namespace}", pod=~"{pods}"'

    def per_container_limit(usage: str, resource: str) -> str:
        limit = f'kube_pod_container_resource_limits{{resource="{resource}", {sel}}}'
        return (f"max by (namespace, pod) ({usage} / on (namespace, pod, container) "
                f"max by (namespace, pod, container) ({limit}))")

    return (
        MetricSpec(
            name="error_ratio",
            query=f'sum by (namespace, pod) (rate(http_requests_total{{{sel}, code=~"5.."}}[1m]))',
            denominator=f"sum by (namespace, pod) (rate(http_requests_total{{{sel}}}[1m]))",
            threshold=0.05,
            min_denominator=0.1,
            unit="ratio",
        ),
        MetricSpec(
            name="latency_p99",
            query=f"sum by (namespace, pod, le) (rate(http_request_duration_seconds_bucket{{{sel}}}[1m]))",
            quantile=0.99,
            threshold=0.5,
            unit="seconds",
        ),
        MetricSpec(
            name="memory_limit_ratio",
            query=per_container_limit(
                f'max by (namespace, pod, container) (container_memory_working_set_bytes{{{sel}, container!=""}})',
                "memory",
            ),
            threshold=0.9,
            unit="ratio",
        ),
        MetricSpec(
            name="cpu_limit_ratio",
            query=per_container_limit(
                "sum by (namespace, pod, container) "
                f'(rate(container_cpu_usage_seconds_total{{{sel}, container!=""}}[1m]))',
                "cpu",
            ),
            threshold=0.9,
            unit="ratio",
        ),
        MetricSpec(
            name="restarts_5m",
            query=f"sum by (namespace, pod) (increase(kube_pod_container_status_restarts_total{{{sel}}}[5m]))",
            threshold=3.0,
            unit="restarts",
        ),
    )


def aggregate_metric_pack() -> tuple[MetricSpec, ...]:
    """The default pack written in the aggregate form, as SLO queries are usually written (one value for the pods
    in `{pods}`): the same five metrics and thresholds, rendered per scope (`predictor.promql`)."""
    sel = 'namespace="{namespace}", pod=~"{pods}"'

    def limit_ratio(usage: str, resource: str) -> str:
        return (f"max({usage} / on (namespace, pod, container) "
                f'kube_pod_container_resource_limits{{{sel}, resource="{resource}"}})')

    return (
        MetricSpec(
            name="error_ratio",
            query=f'sum(rate(http_requests_total{{{sel}, code=~"5.."}}[1m])) '
                  f"/ sum(rate(http_requests_total{{{sel}}}[1m]))",
            threshold=0.05,
            unit="ratio",
        ),
        MetricSpec(
            name="latency_p99",
            query=f"histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{{{sel}}}[1m])))",
            threshold=0.5,
            unit="seconds",
        ),
        MetricSpec(
            name="memory_limit_ratio",
            query=limit_ratio(f'container_memory_working_set_bytes{{{sel}, container!=""}}', "memory"),
            threshold=0.9,
            unit="ratio",
        ),
        MetricSpec(
            name="cpu_limit_ratio",
            query=limit_ratio(f'sum by (namespace, pod, container) (rate(container_cpu_usage_seconds_total{{{sel}, '
                              'container!=""}[1m]))', "cpu"),
            threshold=0.9,
            unit="ratio",
        ),
        MetricSpec(
            name="restarts_5m",
            query=f"max(sum by (namespace, pod) (increase(kube_pod_container_status_restarts_total{{{sel}}}[5m])))",
            threshold=3.0,
            unit="restarts",
        ),
    )


def swarm_metric_pack(task_label: str = DEFAULT_TASK_LABEL) -> tuple[MetricSpec, ...]:
    """The default pack for Swarm services: the same SLOs per task, the task named by `task_label`; memory and CPU
    against the service spec's `Resources.Limits` (Swarm has no restart counter series: no restarts metric)."""
    sel = f'{task_label}=~"{{tasks}}"'
    by = f"sum by ({task_label})"
    return (
        MetricSpec(
            name="error_ratio",
            query=f'{by} (rate(http_requests_total{{{sel}, code=~"5.."}}[1m]))',
            denominator=f"{by} (rate(http_requests_total{{{sel}}}[1m]))",
            threshold=0.05,
            min_denominator=0.1,
            unit="ratio",
        ),
        MetricSpec(
            name="latency_p99",
            query=f"sum by ({task_label}, le) (rate(http_request_duration_seconds_bucket{{{sel}}}[1m]))",
            quantile=0.99,
            threshold=0.5,
            unit="seconds",
        ),
        MetricSpec(
            name="memory_limit_ratio",
            query=f"max by ({task_label}) (container_memory_working_set_bytes{{{sel}}})",
            threshold=0.9,
            unit="ratio",
            limit="memory",
        ),
        MetricSpec(
            name="cpu_limit_ratio",
            query=f"{by} (rate(container_cpu_usage_seconds_total{{{sel}}}[1m]))",
            threshold=0.9,
            unit="ratio",
            limit="cpu",
        ),
    )


_NOTHING: Any = object()
"""The value of a field that is not there: shown as `got nothing`."""
MAX_DURATION_SECONDS = 366 * 86400.0
"""Longer durations are refused: no setting needs more than a year, and the scheduler overflows on huge ones."""
_DURATION_EXAMPLE = "a duration such as '30s', '10m' or '1h30m'"


def show_value(value: Any) -> str:
    """A value as an error line shows it: YAML's spelling of null, booleans and non-finite numbers, long text cut."""
    if value is _NOTHING:
        return "nothing"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
    text = repr(value)
    return text if len(text) <= 160 else text[:157] + "..."


def _duration_text(seconds: float) -> str:
    """1 -> '1s', 0.1 -> '100ms', 60 -> '1m': the spelling of a bound in an error message."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _range_text(minimum: float | None, above: float | None, maximum: float | None) -> str:
    low = f"above {above:g}" if above is not None else f"of at least {minimum:g}" if minimum is not None else ""
    if maximum is None:
        return low
    if minimum is not None and above is None:
        return f"from {minimum:g} to {maximum:g}"
    return f"{low} and at most {maximum:g}" if low else f"of at most {maximum:g}"


def _quoted_hint(value: Any) -> str:
    """' (without quotes)' for a quoted number where a number was meant, else ''."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return ""
        return " (without quotes)" if math.isfinite(number) else ""
    return ""


def _type_hint(value: Any) -> str:
    """Why YAML gave a boolean or a number where a string was meant, as a short hint ('' otherwise)."""
    if isinstance(value, bool):
        return " (quote it: YAML reads unquoted yes, no, on, off, true and false as booleans)"
    return " (quote it)" if isinstance(value, int | float) else ""


class _Reader:
    """Walks the raw YAML, collecting `path: message, got value` errors instead of stopping at the first."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.from_env: set[str] = set()
        """Paths whose string was filled in from the environment: a number or boolean there arrives as text."""

    def _typed(self, where: str, value: Any) -> Any:
        """`port: ${PORT}` gives the text '8080': read it as the number (or boolean) the environment meant."""
        if not isinstance(value, str) or where not in self.from_env:
            return value
        text = value.strip()
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
        return value

    def error(self, path: str, message: str, value: Any = _NOTHING) -> None:
        self.errors.append(f"{path}: {message}, got {show_value(value)}")

    def section(self, raw: Mapping[str, Any], key: str, path: str, allowed: Sequence[str]) -> dict[str, Any]:
        value = raw.get(key)
        where = f"{path}.{key}" if path else key
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.error(where, f"expected a mapping with the keys {', '.join(allowed)}", value)
            return {}
        self.unknown_keys(value, where, allowed)
        return dict(value)

    def unknown_keys(self, raw: Mapping[str, Any], path: str, allowed: Sequence[str]) -> None:
        for key, value in raw.items():
            if key not in allowed:
                prefix = f"{path}.{key}" if path else str(key)
                close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
                guess = f"did you mean {close[0]}? " if close else ""
                self.error(prefix, f"unknown field ({guess}allowed: {', '.join(allowed)})", value)

    def items(self, raw: list[Any], path: str, allowed: Sequence[str]) -> Iterator[tuple[int, str, Mapping[str, Any]]]:
        """(index, path, item) of each mapping in a list; another item, or an unknown key, is an error."""
        for i, item in enumerate(raw):
            where = f"{path}[{i}]"
            if not isinstance(item, Mapping):
                self.error(where, f"expected a mapping with {', '.join(allowed)}", item)
                continue
            self.unknown_keys(item, where, allowed)
            yield i, where, item

    def string(self, raw: Mapping[str, Any], key: str, path: str, default: str | None) -> str | None:
        value = raw.get(key, default)
        if value is None or isinstance(value, str):
            return value
        self.error(f"{path}.{key}", f"expected a string{_type_hint(value)}", value)
        return default

    def url(self, raw: Mapping[str, Any], key: str, path: str, default: str | None, *, api: str | None) -> str | None:
        """An http(s) URL. With `api` (the path predictor appends), the server's base URL: a path is allowed
        only as a route prefix (`http://host/prometheus`), not an API, UI, query or fragment address."""
        value = self.string(raw, key, path, None)
        if not value:
            return default
        problem = url_problem(value, api)
        if problem:
            self.error(f"{path}.{key}", problem, value)
            return default
        return value.rstrip("/")

    def boolean(self, raw: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
        value = self._typed(f"{path}.{key}", raw.get(key, default))
        if isinstance(value, bool):
            return value
        hint = " (without quotes)" if isinstance(value, str) and value.lower() in ("true", "false") else ""
        self.error(f"{path}.{key}", f"expected true or false{hint}", value)
        return default

    def number(
        self, raw: Mapping[str, Any], key: str, path: str, default: float, *, minimum: float | None = None,
        above: float | None = None, maximum: float | None = None, integer: bool = False, hint: str = "",
    ) -> float:
        """A finite number (a whole one with `integer`) within the bounds; `hint` is added to the message."""
        if key not in raw:
            return default
        where = f"{path}.{key}"
        value = self._typed(where, raw[key])
        kind = "a whole number" if integer else "a number"
        bounds = _range_text(minimum, above, maximum)
        expected = f"expected {kind}{' ' + bounds if bounds else ''}{hint}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(where, expected + _quoted_hint(value), value)
            return default
        if not math.isfinite(value):
            self.error(where, f"expected a finite number{' ' + bounds if bounds else ''}{hint}", value)
            return default
        if integer and not isinstance(value, int):
            self.error(where, expected, value)
            return default
        if ((minimum is not None and value < minimum) or (above is not None and value <= above)
                or (maximum is not None and value > maximum)):
            self.error(where, expected, value)
            return default
        return float(value)

    def duration(
        self, raw: Mapping[str, Any], key: str, path: str, default: float, *, minimum: float = 0.0,
        allow_zero: bool = False,
    ) -> float:
        """A positive duration (or 0 with `allow_zero`) of at least `minimum` seconds; a bare number is seconds."""
        if key not in raw:
            return default
        where = f"{path}.{key}"
        value = self._typed(where, raw[key])
        try:
            seconds = read_duration(value, allow_zero=allow_zero)
        except ValueError as exc:
            self.error(where, str(exc), value)
            return default
        if seconds < minimum and not (allow_zero and seconds == 0):
            self.error(where, f"expected a duration of at least {_duration_text(minimum)}", value)
            return default
        if seconds > MAX_DURATION_SECONDS:
            self.error(where, "expected a duration of at most 1y", value)
            return default
        return seconds

    def choice(
        self, raw: Mapping[str, Any], key: str, path: str, default: str, options: Sequence[str], *,
        any_case: bool = False,
    ) -> str:
        value = raw.get(key, default)
        if isinstance(value, str) and any_case:
            for option in options:
                if value.lower() == option.lower():
                    return option
        if isinstance(value, str) and value in options:
            return value
        self.error(f"{path}.{key}", f"expected one of {', '.join(options)}", value)
        return default

    def path(self, raw: Mapping[str, Any], key: str, path: str, *, kind: str = "file",
             must_exist: bool = False, expand: bool = True) -> Path | None:
        """A path, `~` expanded (unless not `expand`: then its user expands it, naming it as written); a `kind`
        ('file' or 'directory') that exists and is readable with `must_exist`, and not the other kind if it
        exists."""
        value = self.string(raw, key, path, None)
        if not value:
            return None
        result = Path(value).expanduser()
        where = f"{path}.{key}"
        shown = f" ({result})" if str(result) != value else ""
        is_kind = result.is_dir() if kind == "directory" else result.is_file()
        if result.exists() and not is_kind:
            self.error(where, f"expected a {kind}, not a {'file' if kind == 'directory' else 'directory'}{shown}",
                       value)
        elif must_exist and not result.exists():
            self.error(where, f"expected an existing {kind}{shown}", value)
        elif must_exist and not os.access(result, os.R_OK):
            self.error(where, f"expected a readable {kind} (permission denied){shown}", value)
        return result if expand else Path(value)

    def tls(self, raw: Mapping[str, Any], path: str) -> TLSConfig:
        verify = self.boolean(raw, "verify_tls", path, True)
        ca_file = self.path(raw, "ca_file", path, must_exist=True)
        if ca_file is not None and not verify:
            self.error(f"{path}.ca_file", "expected no ca_file with verify_tls: false (it would be ignored)",
                       raw.get("ca_file"))
        return TLSConfig(
            bearer_token_file=self.path(raw, "bearer_token_file", path, must_exist=True),
            ca_file=ca_file,
            verify_tls=verify,
            timeout_seconds=self.duration(raw, "timeout", path, 10.0, minimum=MIN_TIMEOUT_SECONDS),
        )


MIN_TIMEOUT_SECONDS = 0.1
"""A request timeout below 100 ms fails every query."""
_TLS_KEYS = ("bearer_token_file", "ca_file", "verify_tls", "timeout")


def read_duration(value: Any, *, allow_zero: bool = False) -> float:
    """Seconds of a duration as a user writes it in the config or on the command line ('15s', '1h30m', or a bare
    number of seconds): positive, or 0 with `allow_zero`. Raises ValueError saying what was expected ('-15s' is
    "expected a positive duration")."""
    positive = "expected 0 or a positive duration" if allow_zero else "expected a positive duration"
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected {_DURATION_EXAMPLE}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("expected a finite duration")
    text = value.strip() if isinstance(value, str) else value
    if isinstance(text, str) and text.startswith("-"):
        raise ValueError(positive if _is_duration(text[1:]) else f"expected {_DURATION_EXAMPLE}")
    try:
        seconds = parse_duration(text)
    except ValueError:
        unit = " (with a unit: '15s', not '15')" if _quoted_hint(value) else ""
        raise ValueError(f"expected {_DURATION_EXAMPLE}{unit}") from None
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise ValueError(positive)
    return seconds


def _is_duration(text: str) -> bool:
    try:
        parse_duration(text)
    except ValueError:
        return False
    return True


def url_problem(value: str, api: str | None) -> str | None:
    """Why `value` is not a usable http(s) URL (None if it is). With `api`, it must be a server's base URL."""
    if any(ch.isspace() for ch in value):
        return "expected an http:// or https:// URL without spaces"
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return "expected an http:// or https:// URL"
    try:
        parts.port  # noqa: B018 - raises ValueError on a port out of range
    except ValueError:
        return "expected an http:// or https:// URL with a port from 1 to 65535"
    if not parts.hostname:
        return "expected an http:// or https:// URL with a host"
    if api is None:
        return None
    if parts.query or parts.fragment or re.search(r"/(api|graph|alerts|-)(/|$)", parts.path):
        return (f"expected the server's base URL such as 'http://host:port' (predictor adds {api}; a path is only "
                "for a route prefix)")
    return None


def _expand_env(value: Any, path: str, reader: _Reader) -> Any:
    if isinstance(value, str):
        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                reader.error(path, f"environment variable {name} is not set (referenced as ${{{name}}})", value)
                return match.group(0)
            return os.environ[name]

        expanded = _ENV_REF.sub(replace, value)
        if expanded != value:
            reader.from_env.add(path)
        return expanded
    if isinstance(value, Mapping):
        return {k: _expand_env(v, f"{path}.{k}" if path else str(k), reader) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, f"{path}[{i}]", reader) for i, v in enumerate(value)]
    return value


def _read_targets(raw: Any, reader: _Reader) -> tuple[Target, ...]:
    if raw is None:
        reader.error("targets", "required: a list of {namespace, selector, names} to watch")
        return ()
    if not isinstance(raw, list) or not raw:
        reader.error("targets", "expected a non-empty list of {namespace, selector, names}", raw)
        return ()
    targets = []
    seen: dict[tuple[str, str, tuple[str, ...], str], int] = {}
    for i, path, item in reader.items(raw, "targets", ("namespace", "selector", "names", "kind", "swarm")):
        if "swarm" in item:
            continue  # read by _read_swarm_targets
        if "namespace" not in item:
            reader.error(f"{path}.namespace", "required: the namespace to watch")
            continue
        namespace = item["namespace"]
        if not isinstance(namespace, str):
            reader.error(f"{path}.namespace", f"expected a namespace name{_type_hint(namespace)}", namespace)
            continue
        if not _is_dns_label(namespace):
            if not _ENV_REF.search(namespace):  # an unset ${VAR} is reported as such
                reader.error(f"{path}.namespace", "expected a namespace name (lowercase letters, digits and '-', at "
                             "most 63 characters)", namespace)
            continue
        before = len(reader.errors)
        selector = _read_selector(item, path, reader)
        names = _read_names(item, path, reader)
        kind = reader.choice(item, "kind", path, "Deployment", WORKLOAD_KINDS)
        identity = (namespace, selector, tuple(sorted(names)), kind)
        if len(reader.errors) > before:
            continue
        if identity in seen:
            reader.error(path, f"expected each target once, but it repeats targets[{seen[identity]}]", dict(item))
            continue
        seen[identity] = i
        targets.append(Target(namespace=namespace, selector=selector, names=names, kind=kind))
    return tuple(targets)


_SWARM_SERVICE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_SWARM_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]*(=.*)?$")
_PROMETHEUS_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_SWARM_KEYS = ("service", "label", "task_label")


def _read_swarm_targets(raw: Any, reader: _Reader) -> tuple[SwarmTarget, ...]:
    """The `- swarm: {service: NAME}` / `- swarm: {label: "key=value"}` items of `targets` (errors in the others
    are `_read_targets`'). A config watches one host: Swarm items beside Kubernetes ones are refused."""
    if not isinstance(raw, list):
        return ()
    kubernetes = [i for i, item in enumerate(raw) if isinstance(item, Mapping) and "swarm" not in item]
    targets: list[SwarmTarget] = []
    seen: dict[SwarmTarget, int] = {}
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping) or "swarm" not in item:
            continue
        path = f"targets[{i}]"
        if kubernetes:
            reader.error(path, f"expected targets of one host, but targets[{kubernetes[0]}] is a Kubernetes "
                         "namespace and this a Swarm service (run one predictor per host)", dict(item))
            continue
        if len(item) > 1:
            others = ", ".join(str(k) for k in item if k != "swarm")
            reader.error(path, f"expected only the swarm key in a Swarm target (not {others})", dict(item))
            continue
        spec = item["swarm"]
        where = f"{path}.swarm"
        if not isinstance(spec, Mapping):
            reader.error(where, "expected a mapping such as {service: web} or {label: 'team=shop'}", spec)
            continue
        before = len(reader.errors)
        reader.unknown_keys(spec, where, _SWARM_KEYS)
        service, label = spec.get("service"), spec.get("label")
        if (service is None) == (label is None):
            reader.error(where, "expected exactly one of service (a name) or label (key=value)", dict(spec))
        elif service is not None and (not isinstance(service, str) or not _SWARM_SERVICE.match(service)):
            reader.error(f"{where}.service", "expected a Swarm service name (letters, digits, '_', '.' and '-', at "
                         "most 63 characters)", service)
        elif label is not None and (not isinstance(label, str) or not _SWARM_LABEL.match(label)):
            reader.error(f"{where}.label", "expected a service label filter such as 'team=shop' or 'team'", label)
        task_label = spec.get("task_label", DEFAULT_TASK_LABEL)
        if not isinstance(task_label, str) or not _PROMETHEUS_LABEL.match(task_label):
            reader.error(f"{where}.task_label", "expected a Prometheus label name such as "
                         f"{DEFAULT_TASK_LABEL}", task_label)
        if len(reader.errors) > before:
            continue
        target = SwarmTarget(service=service, label=label, task_label=task_label)
        if target in seen:
            reader.error(path, f"expected each target once, but it repeats targets[{seen[target]}]", dict(item))
            continue
        seen[target] = i
        targets.append(target)
    return tuple(targets)


_DOCKER_SCHEMES = ("unix", "tcp", "http", "https", "ssh")


def _read_docker(raw: Mapping[str, Any], reader: _Reader, swarm: bool) -> DockerConfig:
    """`docker: {host, ca_file, cert_file, key_file, verify_tls, timeout}`: the Docker Engine of a swarm manager."""
    if raw and not swarm:
        reader.error("docker", "expected Swarm targets (- swarm: {service: NAME}) with it (it would be ignored)",
                     dict(raw))
    host = reader.string(raw, "host", "docker", None)
    if host is not None:
        scheme, _, rest = host.partition("://")
        if scheme not in _DOCKER_SCHEMES or not rest:
            reader.error("docker.host", "expected a Docker host such as unix:///var/run/docker.sock or "
                         "tcp://manager:2376", host)
            host = None
    verify = reader.boolean(raw, "verify_tls", "docker", True)
    files = {key: reader.path(raw, key, "docker", must_exist=True) for key in ("ca_file", "cert_file", "key_file")}
    if (files["cert_file"] is None) != (files["key_file"] is None):
        missing = "key_file" if files["key_file"] is None else "cert_file"
        reader.error(f"docker.{missing}", "required with the other half of the client certificate "
                     "(cert_file and key_file)")
    uses_tls = any(files.values()) or "verify_tls" in raw
    tls = DockerTLSConfig(ca_file=files["ca_file"], cert_file=files["cert_file"], key_file=files["key_file"],
                          verify_tls=verify) if uses_tls else None
    return DockerConfig(host=host, tls=tls,
                        timeout_seconds=reader.duration(raw, "timeout", "docker", 10.0, minimum=MIN_TIMEOUT_SECONDS))


def _swarm_policy(policy: PolicyConfig, pol: Mapping[str, Any], reader: _Reader) -> PolicyConfig:
    """Swarm has no API to pause an update in progress (moby #26159): `undo` or `alert` only, alert by default;
    and with no pause to grade by confidence, an undo acts at `risk_threshold` (raise it to act more cautiously)."""
    why = "expected undo or alert with Swarm targets (Swarm has no API to pause an update in progress)"
    if pol.get("action") == "pause":
        reader.error("policy.action", why, "pause")
    if pol.get("blind_action") == "pause":
        reader.error("policy.blind_action", why.replace("undo or alert", "alert"), "pause")
    if "undo_threshold" in pol:
        reader.error("policy.undo_threshold", "expected none with Swarm targets (there is no pause below it: an "
                     "undo acts at risk_threshold)", pol["undo_threshold"])
    return replace(
        policy,
        action=policy.action if "action" in pol else Action.ALERT,
        blind_action=Action.ALERT,
        undo_threshold=policy.risk_threshold,
    )


def _is_dns_label(text: str) -> bool:
    return len(text) <= 63 and _DNS_LABEL.match(text) is not None


def _read_names(item: Mapping[str, Any], path: str, reader: _Reader) -> tuple[str, ...]:
    raw = item.get("names")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        reader.error(f"{path}.names", "expected a list of Deployment names such as [checkout, cart]", raw)
        return ()
    names: list[str] = []
    for j, name in enumerate(raw):
        where = f"{path}.names[{j}]"
        if not isinstance(name, str) or len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
            reader.error(where, "expected a Deployment name (lowercase letters, digits, '-' and '.')", name)
        elif name in names:
            reader.error(where, "expected each name once", name)
        else:
            names.append(name)
    return tuple(names)


_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_LABEL_KEY = rf"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?{_LABEL_NAME}"
_LABEL_VALUE = rf"({_LABEL_NAME})?"
_SELECTOR_TERMS = (
    re.compile(rf"\s*!?\s*{_LABEL_KEY}\s*"),
    re.compile(rf"\s*{_LABEL_KEY}\s*(=|==|!=)\s*{_LABEL_VALUE}\s*"),
    re.compile(rf"\s*{_LABEL_KEY}\s+(in|notin)\s*\(\s*{_LABEL_NAME}(\s*,\s*{_LABEL_VALUE})*\s*\)\s*"),
)
_SELECTOR_EXAMPLE = "a label selector such as 'app=web,tier in (api,worker),!canary'"
_SELECTOR_OPERATORS = {"In": "in", "NotIn": "notin", "Exists": "", "DoesNotExist": "!"}


def selector_problem(selector: str) -> str | None:
    """Why `selector` is not a Kubernetes label selector (None if it is): names the first term that is not one."""
    depth, term, terms = 0, "", []
    for ch in selector:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            terms.append(term)
            term = ""
        else:
            term += ch
    terms.append(term)
    for term in terms:
        if not any(pattern.fullmatch(term) for pattern in _SELECTOR_TERMS):
            return f"expected {_SELECTOR_EXAMPLE} (cannot read {term.strip()!r})"
    return None


def _read_selector(item: Mapping[str, Any], path: str, reader: _Reader) -> str:
    """A label selector as kubectl's `-l` takes it, or as a Deployment's spec.selector (matchLabels,
    matchExpressions), which is turned into that string form."""
    value = item.get("selector")
    where = f"{path}.selector"
    if value is None or value == "":
        return ""
    if isinstance(value, Mapping):
        value = _selector_from_mapping(value, where, reader)
        if value is None:
            return ""
    if not isinstance(value, str):
        reader.error(where, f"expected {_SELECTOR_EXAMPLE} (or matchLabels/matchExpressions)", value)
        return ""
    problem = selector_problem(value)
    if problem:
        reader.error(where, problem, value)
        return ""
    return value.strip()


def _selector_from_mapping(raw: Mapping[str, Any], where: str, reader: _Reader) -> str | None:
    """{matchLabels: {app: web}, matchExpressions: [{key, operator, values}]} -> 'app=web,...'."""
    before = len(reader.errors)
    reader.unknown_keys(raw, where, ("matchLabels", "matchExpressions"))
    terms: list[str] = []
    labels = raw.get("matchLabels") or {}
    if not isinstance(labels, Mapping):
        reader.error(f"{where}.matchLabels", "expected a mapping of label: value", labels)
        labels = {}
    for label, value in labels.items():
        if not isinstance(value, str):
            reader.error(f"{where}.matchLabels.{label}", "expected a string (quote it)", value)
            continue
        terms.append(f"{label}={value}")
    expressions = raw.get("matchExpressions") or []
    if not isinstance(expressions, list):
        reader.error(f"{where}.matchExpressions", "expected a list of {key, operator, values}", expressions)
        expressions = []
    for _, at, expression in reader.items(expressions, f"{where}.matchExpressions", ("key", "operator", "values")):
        key, operator, values = expression.get("key"), expression.get("operator"), expression.get("values") or []
        if operator not in _SELECTOR_OPERATORS:
            reader.error(f"{at}.operator", f"expected one of {', '.join(_SELECTOR_OPERATORS)}", operator)
            continue
        if not isinstance(key, str) or not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            reader.error(at, "expected a string key and a list of string values", dict(expression))
            continue
        if operator in ("In", "NotIn") and not values:
            reader.error(f"{at}.values", f"expected at least one value with operator {operator}", values)
            continue
        if operator in ("In", "NotIn"):
            terms.append(f"{key} {_SELECTOR_OPERATORS[operator]} ({','.join(values)})")
        else:
            terms.append(f"{_SELECTOR_OPERATORS[operator]}{key}")
    if len(reader.errors) > before:
        return None
    return ",".join(terms)


_METRIC_KEYS = (
    "name", "query", "threshold", "direction", "denominator", "quantile", "aggregate", "min_denominator", "unit",
)


def _read_metrics(raw: Any, reader: _Reader, swarm: Sequence[SwarmTarget] = ()) -> tuple[MetricSpec, ...]:
    if raw is None and swarm:
        labels = sorted({t.task_label for t in swarm})
        if len(labels) > 1:
            reader.error("metrics", "required when Swarm targets name different task_labels (the default pack "
                         "reads one)", ", ".join(labels))
        return swarm_metric_pack(labels[0])
    if raw is None:
        return default_metric_pack()
    if not isinstance(raw, list) or not raw:
        reader.error("metrics", "expected a non-empty list (or leave it out for the default pack)", raw)
        return ()
    specs: list[MetricSpec] = []
    seen: set[str] = set()
    for _, path, item in reader.items(raw, "metrics", _METRIC_KEYS):
        name = reader.string(item, "name", path, None)
        if not name or not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name):
            reader.error(f"{path}.name", "expected an identifier such as 'error_ratio'", item.get("name", _NOTHING))
            continue
        if name in seen:
            reader.error(f"{path}.name", "expected each metric name once", name)
        seen.add(name)
        query = _read_template(item, "query", path, reader, required=True, swarm=bool(swarm))
        denominator = _read_template(item, "denominator", path, reader, required=False, swarm=bool(swarm))
        direction = Direction(reader.choice(item, "direction", path, "above", [d.value for d in Direction]))
        unit = reader.string(item, "unit", path, "") or ""
        threshold = _read_threshold(item, path, reader, direction, unit)
        quantile = None
        if "quantile" in item:
            quantile = reader.number(item, "quantile", path, 0.99, above=0.0, maximum=1.0, hint=" (0.99 for p99)")
            if denominator:
                reader.error(f"{path}.quantile", "expected quantile or denominator, not both", item["quantile"])
        if "aggregate" in item and (denominator or quantile is not None):
            reader.error(f"{path}.aggregate", "expected no aggregate with a denominator or quantile (it would be "
                         "ignored: those combine pods by their own rule)", item["aggregate"])
        if "min_denominator" in item and not denominator:
            reader.error(f"{path}.min_denominator", "expected no min_denominator without a denominator (it would "
                         "be ignored)", item["min_denominator"])
        if not swarm:
            _check_query_forms(item, path, reader, query, denominator, quantile)
        specs.append(
            MetricSpec(
                name=name,
                query=query or "",
                threshold=threshold,
                direction=direction,
                denominator=denominator,
                quantile=quantile,
                aggregate=reader.choice(item, "aggregate", path, "max", ["max", "min", "mean", "sum"]),
                min_denominator=reader.number(item, "min_denominator", path, 0.0, minimum=0.0),
                unit=unit,
            )
        )
    return tuple(specs)


def _shape(template: str | None, where: str, reader: _Reader) -> QueryShape | None:
    """The parsed shape of a template whose placeholders were fine (None, with the error recorded, otherwise)."""
    if not template or placeholder_problems(template):
        return None
    try:
        return analyse_template(template)
    except PromQLError as exc:
        reader.error(where, str(exc), template)
        return None


def _check_query_forms(
    item: Mapping[str, Any], path: str, reader: _Reader, query: str | None, denominator: str | None,
    quantile: float | None,
) -> None:
    """What cannot work given the form of the query (see `predictor.promql`): a quantile without `le` per pod or on
    an aggregate query, a denominator in the other form, an aggregate query that cannot be split into scopes."""
    shape = _shape(query, f"{path}.query", reader)
    den_shape = _shape(denominator, f"{path}.denominator", reader)
    for key, template, found in (("query", query, shape), ("denominator", denominator, den_shape)):
        if found is None or found.form is not QueryForm.AGGREGATE:
            continue
        if not found.uses_pods:
            reader.error(f"{path}.{key}", "expected pod=~\"{pods}\" in an aggregate query (it is rendered once per "
                         "scope, {pods} the regex of that scope's pods, to tell new pods from old)", template)
        for selector in found.selectors_without_namespace:
            reader.error(f"{path}.{key}", "expected a namespace matcher (namespace=\"{namespace}\") beside {pods} in "
                         "an aggregate query (the same pod names in another namespace would be summed in)", selector)
    if shape is None:
        return
    if quantile is not None and shape.form is QueryForm.AGGREGATE:
        reader.error(f"{path}.quantile", "expected no quantile with an aggregate query (its result has no pods to "
                     "sum the buckets of: write histogram_quantile(0.99, sum by (le) (...)) in the query)",
                     item["quantile"])
    elif quantile is not None and not shape.keeps_le:
        reader.error(f"{path}.quantile", "expected a query that keeps the buckets' 'le' label with quantile (`sum "
                     f"by (namespace, pod, le)`); this one keeps {shape.labels.describe()}", item["quantile"])
    if "aggregate" in item and shape.form is QueryForm.AGGREGATE and not denominator and quantile is None:
        reader.error(f"{path}.aggregate", "expected no aggregate with an aggregate query (it would be ignored: the "
                     "query combines the pods itself)", item["aggregate"])
    if den_shape is not None and den_shape.form is not shape.form:
        reader.error(f"{path}.denominator", f"expected the same form as the query ({shape.form}), got the "
                     f"{den_shape.form} form", denominator)


def _read_threshold(item: Mapping[str, Any], path: str, reader: _Reader, direction: Direction, unit: str) -> float:
    """The SLO threshold. Rates, ratios, quantiles and counts are never negative, so with direction above a
    threshold must be above 0 (at 0 every healthy value breaches), and with direction below at least 0 (below 0
    nothing ever breaches); with unit ratio at most 1 (5 % is 0.05)."""
    where = f"{path}.threshold"
    if "threshold" not in item:
        reader.error(where, "required: the SLO threshold of this metric")
        return 0.0
    before = len(reader.errors)
    if direction is Direction.ABOVE:
        threshold = reader.number(item, "threshold", path, 0.0, above=0.0,
                                  hint=" with direction above (every value >= 0 would breach)")
    else:
        threshold = reader.number(item, "threshold", path, 0.0, minimum=0.0,
                                  hint=" with direction below (no value < 0 can breach)")
    if len(reader.errors) == before and (problem := threshold_problem(threshold, direction, unit)):
        reader.error(where, problem, item["threshold"])
    return threshold


def threshold_problem(threshold: float, direction: Direction, unit: str) -> str | None:
    """Why `threshold` cannot be a metric's SLO threshold (see `_read_threshold`), or None. Also checks the
    per-Deployment overrides (`predictor.io/threshold.<metric>`)."""
    if not math.isfinite(threshold):
        return "expected a finite number"
    if direction is Direction.ABOVE and threshold <= 0:
        return "expected a number above 0 with direction above (every value >= 0 would breach)"
    if direction is Direction.BELOW and threshold < 0:
        return "expected a number of at least 0 with direction below (no value < 0 can breach)"
    if unit == "ratio" and threshold > 1:
        return "expected at most 1 with unit ratio (5 % is 0.05)"
    return None


_BRACED = re.compile(r"\{\{[^{}]*\}\}|\{\s*[A-Za-z_][A-Za-z0-9_.\-]*\s*\}")
"""What looks like a placeholder: a word in braces (`{pod}`, `{ pods }`, `{Namespace}`) or a `{{...}}` template
variable as Argo Rollouts, Flagger and Helm write them. PromQL itself never puts a bare word in braces."""


def placeholder_problems(template: str, placeholders: Sequence[str] = PLACEHOLDERS) -> list[tuple[str, str]]:
    """(message, token) for every brace token in `template` that is not exactly one of `placeholders` ({namespace},
    {deployment}, {pods}; a Swarm config's {service}, {tasks})."""
    problems = []
    names = [f"{{{p}}}" for p in placeholders]
    listed = f"{', '.join(names[:-1])} or {names[-1]}"
    for match in _BRACED.finditer(template):
        token = match.group(0)
        if token.strip("{}") in placeholders and token.count("{") == 1:
            continue
        if token.startswith("{{"):
            message = (f"expected {listed} in single braces (Argo Rollouts', Flagger's "
                       "and Helm's {{ }} variables are not filled in here)")
        else:
            word = token.strip("{} ")
            close = difflib.get_close_matches(word.lower(), placeholders, n=1, cutoff=0.6)
            guess = f" (did you mean {{{close[0]}}}?)" if close else ""
            message = f"expected exactly {listed}{guess}"
        problems.append((message, token))
    return problems


def _read_template(item: Mapping[str, Any], key: str, path: str, reader: _Reader, *, required: bool,
                   swarm: bool = False) -> str | None:
    value = reader.string(item, key, path, None)
    where = f"{path}.{key}"
    if not value or not value.strip():
        if required:
            wanted = "{tasks}" if swarm else "{namespace} and {pods}"
            reader.error(where, f"required: a PromQL template with {wanted}", item.get(key, _NOTHING))
        return None
    problems = placeholder_problems(value, SWARM_PLACEHOLDERS if swarm else PLACEHOLDERS)
    for message, token in problems:
        reader.error(where, message, token)
    if swarm:
        if not problems and "{tasks}" not in value and "{service}" not in value:
            reader.error(where, "expected a query that selects tasks with {tasks} (or {service}), so that results "
                         "split per rollout", value)
        return value
    if not problems and "{pods}" not in value and "{deployment}" not in value:
        reader.error(where, "expected a query that selects pods with {pods} (or {deployment}), so that results "
                     "split per rollout", value)
    return value


def parse_config(raw: Any, source: str = "config") -> Config:
    """Validate a parsed YAML document. Raises ConfigError listing every invalid field."""
    reader = _Reader()
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError([f"(top level): expected a mapping of sections, got {show_value(raw)}"], source)
    raw = _expand_env(raw, "", reader)
    top_keys = ("prometheus", "alertmanager", "kubernetes", "targets", "metrics", "policy", "server", "logging",
                "models", "safety", "docker")
    reader.unknown_keys(raw, "", top_keys)

    prom = reader.section(raw, "prometheus", "", ("url", *_TLS_KEYS))
    am = reader.section(raw, "alertmanager", "", ("url", "generator_url", "group_wait", *_TLS_KEYS))
    kube = reader.section(raw, "kubernetes", "", ("kubeconfig", "context"))
    pol = reader.section(
        raw, "policy", "",
        ("action", "dry_run", "bake", "horizon", "interval", "consecutive", "risk_threshold", "alert_threshold",
         "undo_threshold", "blind_after", "blind_action", "lookback", "max_watch"),
    )
    srv = reader.section(raw, "server", "", ("host", "port", "external_url"))
    log = reader.section(raw, "logging", "", ("format", "level"))
    mdl = reader.section(raw, "models", "", ("dir", "reload", "scorer"))
    dock = reader.section(raw, "docker", "", ("host", "ca_file", "cert_file", "key_file", "verify_tls", "timeout"))
    safety = _read_safety(reader.section(raw, "safety", "", ("budget", "kill_switch")), reader)

    if am and not am.get("url"):
        for key in am:
            if key != "url":
                reader.error(f"alertmanager.{key}", "expected alertmanager.url with it (without a url alerts are "
                             "only logged, and this would be ignored)", am[key])
    config = Config(
        prometheus=PrometheusConfig(
            url=reader.url(prom, "url", "prometheus", "http://localhost:9090", api="/api/v1/query")
            or "http://localhost:9090",
            tls=reader.tls(prom, "prometheus"),
        ),
        alertmanager=AlertmanagerConfig(
            url=reader.url(am, "url", "alertmanager", None, api="/api/v2/alerts"),
            tls=reader.tls(am, "alertmanager"),
            generator_url=reader.url(am, "generator_url", "alertmanager", "", api=None) or "",
            group_wait_seconds=reader.duration(am, "group_wait", "alertmanager", 30.0, allow_zero=True),
        ),
        kubernetes=KubernetesConfig(
            kubeconfig=reader.path(kube, "kubeconfig", "kubernetes", expand=False),
            context=reader.string(kube, "context", "kubernetes", None),
        ),
        targets=_read_targets(raw.get("targets"), reader),
        swarm_targets=(swarm := _read_swarm_targets(raw.get("targets"), reader)),
        docker=_read_docker(dock, reader, bool(swarm)),
        metrics=_read_metrics(raw.get("metrics"), reader, swarm),
        policy=_swarm_policy(_read_policy(pol, reader), pol, reader) if swarm else _read_policy(pol, reader),
        server=ServerConfig(
            host=_read_host(srv, reader),
            port=int(reader.number(srv, "port", "server", 8080, minimum=0, maximum=65535, integer=True)),
            external_url=reader.url(srv, "external_url", "server", "", api="/rollouts/{namespace}/{deployment}")
            or "",
        ),
        logging=LoggingConfig(
            format=reader.choice(log, "format", "logging", "text", ["text", "json"], any_case=True),
            level=reader.choice(log, "level", "logging", "INFO", ["DEBUG", "INFO", "WARNING", "ERROR"],
                                any_case=True),
        ),
        models=ModelsConfig(
            dir=reader.path(mdl, "dir", "models", kind="directory"),
            reload_seconds=reader.duration(mdl, "reload", "models", 3600.0, minimum=1.0),
            scorer=reader.choice(mdl, "scorer", "models", "forecast", SCORERS),
        ),
        safety=safety,
    )
    if reader.errors:
        raise ConfigError(reader.errors, source)
    return config


MIN_INTERVAL_SECONDS = 1.0
"""A tick under a second is finer than any scrape and than the queries' own time."""


def _read_policy(pol: Mapping[str, Any], reader: _Reader) -> PolicyConfig:
    interval = reader.duration(pol, "interval", "policy", 15.0, minimum=MIN_INTERVAL_SECONDS)
    horizon = reader.duration(pol, "horizon", "policy", 1800.0)
    if "horizon" in pol and horizon < interval:
        reader.error("policy.horizon", f"expected at least one tick ({_duration_text(interval)}, policy.interval)",
                     pol["horizon"])
    lookback = reader.duration(pol, "lookback", "policy", 600.0)
    if lookback < 4 * interval:
        reader.error("policy.lookback", f"expected at least 4 ticks of history ({_duration_text(4 * interval)})",
                     pol.get("lookback", f"{_duration_text(lookback)} (the default)"))
    bake = reader.duration(pol, "bake", "policy", 600.0, allow_zero=True)
    max_watch = reader.duration(pol, "max_watch", "policy", max(1800.0, bake), allow_zero=True)
    if max_watch < bake:
        reader.error("policy.max_watch", f"expected at least policy.bake ({_duration_text(bake)}): it extends the "
                     f"bake while evidence still builds", pol["max_watch"])
    fraction = {"above": 0.0, "maximum": 1.0}
    risk_threshold = reader.number(pol, "risk_threshold", "policy", 0.7, **fraction)
    alert_threshold = reader.number(pol, "alert_threshold", "policy", min(0.5, risk_threshold), **fraction)
    undo_threshold = reader.number(pol, "undo_threshold", "policy", max(0.9, risk_threshold), **fraction)
    if not alert_threshold <= risk_threshold <= undo_threshold:
        reader.errors.append(
            f"policy.risk_threshold: expected alert_threshold <= risk_threshold <= undo_threshold, got "
            f"{alert_threshold:g}, {risk_threshold:g}, {undo_threshold:g}")
    return PolicyConfig(
        action=Action(reader.choice(pol, "action", "policy", "pause", ["pause", "undo", "alert"])),
        dry_run=reader.boolean(pol, "dry_run", "policy", False),
        bake_seconds=bake,
        horizon_seconds=horizon,
        interval_seconds=interval,
        consecutive_ticks=int(reader.number(pol, "consecutive", "policy", 2, minimum=1, integer=True)),
        risk_threshold=risk_threshold,
        alert_threshold=alert_threshold,
        undo_threshold=undo_threshold,
        blind_after_ticks=int(reader.number(pol, "blind_after", "policy", 8, minimum=1, integer=True)),
        blind_action=Action(reader.choice(pol, "blind_action", "policy", "alert", ["alert", "pause"])),
        lookback_seconds=lookback,
        max_watch_seconds=max_watch,
    )


def _read_safety(raw: Mapping[str, Any], reader: _Reader) -> SafetyConfig:
    budget = reader.section(raw, "budget", "safety", ("actions", "per"))
    switch = reader.section(raw, "kill_switch", "safety", ("configmap", "namespace"))
    configmap = reader.string(switch, "configmap", "safety.kill_switch", "predictor-kill-switch")
    namespace = reader.string(switch, "namespace", "safety.kill_switch", None)
    if configmap is not None and (len(configmap) > 253 or not _DNS_NAME.match(configmap)):
        reader.error("safety.kill_switch.configmap", "expected a ConfigMap name (lower case letters, digits, '-' "
                     "and '.')", configmap)
    if namespace is not None and (len(namespace) > 63 or not _DNS_LABEL.match(namespace)):
        reader.error("safety.kill_switch.namespace", "expected a namespace name (lower case letters, digits and "
                     "'-')", namespace)
    return SafetyConfig(
        budget_actions=int(reader.number(budget, "actions", "safety.budget", 3, minimum=1, integer=True)),
        budget_seconds=reader.duration(budget, "per", "safety.budget", 600.0, minimum=1.0),
        kill_switch_configmap=configmap or "predictor-kill-switch",
        kill_switch_namespace=namespace or None,
    )


_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
"""A DNS subdomain (RFC 1123), as ConfigMap names are."""


_HOST_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\.?$", re.IGNORECASE)


def _read_host(srv: Mapping[str, Any], reader: _Reader) -> str:
    """A host name or IP address to listen on: its syntax here; whether it resolves to an address of this machine
    is for `predictor.preflight`, which can ask the resolver."""
    host = reader.string(srv, "host", "server", "0.0.0.0")
    if host is None:
        return "0.0.0.0"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if len(host) > 253 or not _HOST_NAME.match(host):
            reader.error("server.host", "expected a host name or IP address to listen on, such as 0.0.0.0 (no "
                         "scheme; the port goes in server.port)", host)
            return "0.0.0.0"
    return host


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML file. Raises ConfigError (with the file name) on any problem."""
    path = Path(path).expanduser()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"(file): expected a readable file: {exc.strerror or exc}, got {str(path)!r}"],
                          str(path)) from exc
    text = _decode(data, str(path))
    try:
        raw = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader refusing duplicate keys
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        if isinstance(exc, _DuplicateKey):
            raise ConfigError([f"{where}: {exc.problem}"], str(path)) from exc
        problem = str(getattr(exc, "problem", None) or exc).replace(", but found ", ", got ")
        if ", got " not in problem:
            problem = f"{problem}, got {show_value(_line_at(text, mark))}"
        raise ConfigError([f"{where}: expected valid YAML: {problem}"], str(path)) from exc
    return parse_config(raw, str(path))


def _decode(data: bytes, source: str) -> str:
    """UTF-8 text (a byte-order mark is dropped); anything else is an error naming the byte offset and line."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConfigError(["(file): expected UTF-8 text, got UTF-16 (a byte-order mark at offset 0: save the file "
                           "as UTF-8)"], source)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        bad = data[exc.start : exc.end]
        raise ConfigError([f"(file): expected UTF-8 text, got the byte(s) {bad!r} at byte offset {exc.start} "
                           f"(line {line})"], source) from None


def _line_at(text: str, mark: Any) -> str:
    if mark is None:
        return ""
    lines = text.splitlines()
    return lines[mark.line].strip() if 0 <= mark.line < len(lines) else ""


class _DuplicateKey(yaml.MarkedYAMLError):
    """A mapping that gives the same key twice: PyYAML would keep the last one silently."""


class _StrictLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses duplicate keys."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    first: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            if key in first:
                raise _DuplicateKey(
                    problem=f"expected each key once in a mapping (first on line {first[key] + 1}), got {key!r} "
                            "again", problem_mark=key_node.start_mark)
            first[key] = key_node.start_mark.line
        except TypeError:  # an unhashable key: construct_mapping reports it
            break
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_time(text: str, now: float) -> float:
    """A point in time for the CLI: RFC 3339 ('2026-11-27T10:00:00Z'), POSIX seconds, 'now', or a duration before
    now ('-7d', 'now-2h'). Raises ValueError naming the text."""
    stripped = text.strip()
    if stripped == "now":
        return now
    relative = stripped.removeprefix("now")
    if relative.startswith("-"):
        try:
            return now - parse_duration(relative[1:])
        except ValueError:
            pass
    try:
        return float(stripped)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(stripped.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"expected RFC 3339 time, POSIX seconds, 'now' or '-7d', got {text!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def format_time(seconds: float | None) -> str | None:
    """RFC 3339 UTC with a Z, or None."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
