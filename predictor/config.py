"""Validated configuration, loaded once at start by the CLI.

Every error names the field path and the bad value (`policy.horizon: expected a positive duration such as
'10m', got '-5m'`), and all errors of a file are reported together. `${VAR}` in a string value is replaced by the
environment variable VAR (the sidecar mode gets its namespace and Deployment name that way).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from predictor.domain import Action, Direction

PLACEHOLDERS = ("namespace", "deployment", "pods")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 31536000.0}
"""PromQL's duration units (a year is 365 days there)."""
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class ConfigError(ValueError):
    """One or more invalid fields; `errors` holds one `path: message` line each."""

    def __init__(self, errors: Sequence[str], source: str = "config") -> None:
        self.errors = list(errors)
        super().__init__(f"{source}: {len(self.errors)} invalid field(s):\n  " + "\n  ".join(self.errors))


def parse_duration(text: str | int | float) -> float:
    """'90s', '10m', '1h30m', '500ms' or a number of seconds -> seconds. Raises ValueError."""
    if isinstance(text, bool):
        raise ValueError("not a duration")
    if isinstance(text, int | float):
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


@dataclass(frozen=True)
class KubernetesConfig:
    kubeconfig: Path | None = None
    """None: in-cluster config when running in a pod, else the default kubeconfig."""
    context: str | None = None


@dataclass(frozen=True)
class Target:
    """Deployments to watch: all of a namespace, narrowed by a label selector and/or names."""

    namespace: str
    selector: str = ""
    names: tuple[str, ...] = ()


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

    def breached(self, value: float) -> bool:
        return value >= self.threshold if self.direction is Direction.ABOVE else value <= self.threshold


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


@dataclass(frozen=True)
class ServerConfig:
    host: str = "0.0.0.0"
    port: int = 8080


@dataclass(frozen=True)
class LoggingConfig:
    format: str = "text"
    level: str = "INFO"


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
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)

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


class _Reader:
    """Walks the raw YAML, collecting `path: message` errors instead of stopping at the first."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def error(self, path: str, message: str) -> None:
        self.errors.append(f"{path}: {message}")

    def section(self, raw: Mapping[str, Any], key: str, path: str, allowed: Sequence[str]) -> dict[str, Any]:
        value = raw.get(key)
        where = f"{path}.{key}" if path else key
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.error(where, f"expected a mapping, got {value!r}")
            return {}
        self.unknown_keys(value, where, allowed)
        return dict(value)

    def unknown_keys(self, raw: Mapping[str, Any], path: str, allowed: Sequence[str]) -> None:
        for key in raw:
            if key not in allowed:
                prefix = f"{path}.{key}" if path else str(key)
                self.error(prefix, f"unknown field (allowed: {', '.join(allowed)})")

    def string(self, raw: Mapping[str, Any], key: str, path: str, default: str | None) -> str | None:
        value = raw.get(key, default)
        if value is None or isinstance(value, str):
            return value
        self.error(f"{path}.{key}", f"expected a string, got {value!r}")
        return default

    def url(self, raw: Mapping[str, Any], key: str, path: str, default: str | None) -> str | None:
        value = self.string(raw, key, path, default)
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            self.error(f"{path}.{key}", f"expected an http:// or https:// URL, got {value!r}")
            return default
        return value.rstrip("/") if value else value

    def boolean(self, raw: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
        value = raw.get(key, default)
        if isinstance(value, bool):
            return value
        self.error(f"{path}.{key}", f"expected true or false, got {value!r}")
        return default

    def number(
        self, raw: Mapping[str, Any], key: str, path: str, default: float, *, low: float | None = None,
        high: float | None = None, integer: bool = False,
    ) -> float:
        value = raw.get(key, default)
        where = f"{path}.{key}"
        ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
        if isinstance(value, bool) or not ok_type:
            self.error(where, f"expected {'an integer' if integer else 'a number'}, got {value!r}")
            return default
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            self.error(where, f"expected a value {bounds}, got {value!r}")
            return default
        return float(value)

    def duration(
        self, raw: Mapping[str, Any], key: str, path: str, default: float, *, allow_zero: bool = False
    ) -> float:
        value = raw.get(key)
        if value is None:
            return default
        where = f"{path}.{key}"
        try:
            seconds = parse_duration(value)
        except (ValueError, TypeError):
            self.error(where, f"expected a duration such as '30s', '10m' or '1h30m', got {value!r}")
            return default
        if seconds < 0 or (seconds == 0 and not allow_zero):
            self.error(where, f"expected a positive duration such as '10m', got {value!r}")
            return default
        return seconds

    def choice(self, raw: Mapping[str, Any], key: str, path: str, default: str, options: Sequence[str]) -> str:
        value = raw.get(key, default)
        if value in options:
            return str(value)
        self.error(f"{path}.{key}", f"expected one of {', '.join(options)}, got {value!r}")
        return default

    def path(self, raw: Mapping[str, Any], key: str, path: str, *, must_exist: bool) -> Path | None:
        value = self.string(raw, key, path, None)
        if not value:
            return None
        result = Path(value)
        if must_exist and not result.exists():
            self.error(f"{path}.{key}", f"file {value!r} does not exist")
        return result

    def tls(self, raw: Mapping[str, Any], path: str) -> TLSConfig:
        return TLSConfig(
            bearer_token_file=self.path(raw, "bearer_token_file", path, must_exist=True),
            ca_file=self.path(raw, "ca_file", path, must_exist=True),
            verify_tls=self.boolean(raw, "verify_tls", path, True),
            timeout_seconds=self.duration(raw, "timeout", path, 10.0),
        )


_TLS_KEYS = ("bearer_token_file", "ca_file", "verify_tls", "timeout")


def _expand_env(value: Any, path: str, reader: _Reader) -> Any:
    if isinstance(value, str):
        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                reader.error(path, f"environment variable {name} is not set (referenced as ${{{name}}})")
                return match.group(0)
            return os.environ[name]

        return _ENV_REF.sub(replace, value)
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
        reader.error("targets", f"expected a non-empty list, got {raw!r}")
        return ()
    targets = []
    for i, item in enumerate(raw):
        path = f"targets[{i}]"
        if not isinstance(item, Mapping):
            reader.error(path, f"expected a mapping with namespace, selector, names; got {item!r}")
            continue
        reader.unknown_keys(item, path, ("namespace", "selector", "names"))
        namespace = reader.string(item, "namespace", path, None)
        if not namespace or not _DNS_LABEL.match(namespace):
            reader.error(f"{path}.namespace", f"expected a namespace name, got {namespace!r}")
            continue
        selector = reader.string(item, "selector", path, "") or ""
        if selector and not _valid_selector(selector):
            reader.error(f"{path}.selector", f"not a label selector: {selector!r}")
        names = item.get("names", [])
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            reader.error(f"{path}.names", f"expected a list of Deployment names, got {names!r}")
            names = []
        targets.append(Target(namespace=namespace, selector=selector, names=tuple(names)))
    return tuple(targets)


def _valid_selector(selector: str) -> bool:
    term = r"\s*!?[A-Za-z0-9./_-]+\s*((==?|!=)\s*[A-Za-z0-9._-]*|\s+(in|notin)\s*\([A-Za-z0-9._,\s-]*\))?\s*"
    return re.fullmatch(rf"{term}(,{term})*", selector) is not None


_METRIC_KEYS = (
    "name", "query", "threshold", "direction", "denominator", "quantile", "aggregate", "min_denominator", "unit",
)


def _read_metrics(raw: Any, reader: _Reader) -> tuple[MetricSpec, ...]:
    if raw is None:
        return default_metric_pack()
    if not isinstance(raw, list) or not raw:
        reader.error("metrics", f"expected a non-empty list (or leave it out for the default pack), got {raw!r}")
        return ()
    specs: list[MetricSpec] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        path = f"metrics[{i}]"
        if not isinstance(item, Mapping):
            reader.error(path, f"expected a mapping, got {item!r}")
            continue
        reader.unknown_keys(item, path, _METRIC_KEYS)
        name = reader.string(item, "name", path, None)
        if not name or not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name):
            reader.error(f"{path}.name", f"expected an identifier such as 'error_ratio', got {name!r}")
            continue
        if name in seen:
            reader.error(f"{path}.name", f"duplicate metric name {name!r}")
        seen.add(name)
        query = _read_template(item, "query", path, reader, required=True)
        denominator = _read_template(item, "denominator", path, reader, required=False)
        if "threshold" not in item:
            reader.error(f"{path}.threshold", "required: the SLO threshold of this metric")
        threshold = reader.number(item, "threshold", path, 0.0)
        direction = Direction(reader.choice(item, "direction", path, "above", [d.value for d in Direction]))
        quantile = item.get("quantile")
        if quantile is not None:
            quantile = reader.number(item, "quantile", path, 0.99, low=0.0, high=1.0)
            if denominator:
                reader.error(f"{path}.quantile", "quantile and denominator exclude each other")
        aggregate = reader.choice(item, "aggregate", path, "max", ["max", "min", "mean", "sum"])
        specs.append(
            MetricSpec(
                name=name,
                query=query or "",
                threshold=threshold,
                direction=direction,
                denominator=denominator,
                quantile=quantile,
                aggregate=aggregate,
                min_denominator=reader.number(item, "min_denominator", path, 0.0, low=0.0),
                unit=reader.string(item, "unit", path, "") or "",
            )
        )
    return tuple(specs)


def _read_template(item: Mapping[str, Any], key: str, path: str, reader: _Reader, *, required: bool) -> str | None:
    value = reader.string(item, key, path, None)
    if not value:
        if required:
            reader.error(f"{path}.{key}", "required: a PromQL template with {namespace} and {pods}")
        return None
    for token in re.findall(r"\{([a-z_]+)\}", value):
        if token not in PLACEHOLDERS:
            reader.error(f"{path}.{key}", f"unknown placeholder {{{token}}} (known: {', '.join(PLACEHOLDERS)})")
    if "{pods}" not in value and "{deployment}" not in value:
        reader.error(f"{path}.{key}", "must select pods with {pods} (or {deployment}) so results split per rollout")
    return value


def parse_config(raw: Any, source: str = "config") -> Config:
    """Validate a parsed YAML document. Raises ConfigError listing every invalid field."""
    reader = _Reader()
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError([f"(top level): expected a mapping, got {type(raw).__name__}"], source)
    raw = _expand_env(raw, "", reader)
    top_keys = ("prometheus", "alertmanager", "kubernetes", "targets", "metrics", "policy", "server", "logging",
                "models")
    reader.unknown_keys(raw, "", top_keys)

    prom = reader.section(raw, "prometheus", "", ("url", *_TLS_KEYS))
    am = reader.section(raw, "alertmanager", "", ("url", "generator_url", *_TLS_KEYS))
    kube = reader.section(raw, "kubernetes", "", ("kubeconfig", "context"))
    pol = reader.section(
        raw, "policy", "",
        ("action", "dry_run", "bake", "horizon", "interval", "consecutive", "risk_threshold", "alert_threshold",
         "undo_threshold", "blind_after", "blind_action", "lookback"),
    )
    srv = reader.section(raw, "server", "", ("host", "port"))
    log = reader.section(raw, "logging", "", ("format", "level"))
    mdl = reader.section(raw, "models", "", ("dir", "reload", "scorer"))

    interval = reader.duration(pol, "interval", "policy", 15.0)
    horizon = reader.duration(pol, "horizon", "policy", 1800.0)
    lookback = reader.duration(pol, "lookback", "policy", 600.0)
    if lookback < 4 * interval:
        reader.error("policy.lookback", f"expected at least 4 ticks of history ({4 * interval:g}s), got {lookback:g}s")
    blind_action = reader.choice(pol, "blind_action", "policy", "alert", ["alert", "pause"])
    risk_threshold = reader.number(pol, "risk_threshold", "policy", 0.7, low=0.0, high=1.0)
    alert_threshold = reader.number(pol, "alert_threshold", "policy", min(0.5, risk_threshold), low=0.0, high=1.0)
    undo_threshold = reader.number(pol, "undo_threshold", "policy", max(0.9, risk_threshold), low=0.0, high=1.0)
    if not alert_threshold <= risk_threshold <= undo_threshold:
        reader.error("policy.risk_threshold", f"expected alert_threshold <= risk_threshold <= undo_threshold, got "
                     f"{alert_threshold:g}, {risk_threshold:g}, {undo_threshold:g}")
    policy = PolicyConfig(
        action=Action(reader.choice(pol, "action", "policy", "pause", ["pause", "undo", "alert"])),
        dry_run=reader.boolean(pol, "dry_run", "policy", False),
        bake_seconds=reader.duration(pol, "bake", "policy", 600.0, allow_zero=True),
        horizon_seconds=horizon,
        interval_seconds=interval,
        consecutive_ticks=int(reader.number(pol, "consecutive", "policy", 2, low=1, integer=True)),
        risk_threshold=risk_threshold,
        alert_threshold=alert_threshold,
        undo_threshold=undo_threshold,
        blind_after_ticks=int(reader.number(pol, "blind_after", "policy", 8, low=1, integer=True)),
        blind_action=Action(blind_action),
        lookback_seconds=lookback,
    )
    config = Config(
        prometheus=PrometheusConfig(
            url=reader.url(prom, "url", "prometheus", "http://localhost:9090") or "http://localhost:9090",
            tls=reader.tls(prom, "prometheus"),
        ),
        alertmanager=AlertmanagerConfig(
            url=reader.url(am, "url", "alertmanager", None),
            tls=reader.tls(am, "alertmanager"),
            generator_url=reader.string(am, "generator_url", "alertmanager", "") or "",
        ),
        kubernetes=KubernetesConfig(
            kubeconfig=reader.path(kube, "kubeconfig", "kubernetes", must_exist=True),
            context=reader.string(kube, "context", "kubernetes", None),
        ),
        targets=_read_targets(raw.get("targets"), reader),
        metrics=_read_metrics(raw.get("metrics"), reader),
        policy=policy,
        server=ServerConfig(
            host=reader.string(srv, "host", "server", "0.0.0.0") or "0.0.0.0",
            port=int(reader.number(srv, "port", "server", 8080, low=0, high=65535, integer=True)),
        ),
        logging=LoggingConfig(
            format=reader.choice(log, "format", "logging", "text", ["text", "json"]),
            level=reader.choice(log, "level", "logging", "INFO", ["DEBUG", "INFO", "WARNING", "ERROR"]),
        ),
        models=ModelsConfig(
            dir=reader.path(mdl, "dir", "models", must_exist=False),
            reload_seconds=reader.duration(mdl, "reload", "models", 3600.0),
            scorer=reader.choice(mdl, "scorer", "models", "forecast", SCORERS),
        ),
    )
    if reader.errors:
        raise ConfigError(reader.errors, source)
    return config


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML file. Raises ConfigError (with the file name) on any problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"(file): cannot read: {exc.strerror or exc}"], str(path)) from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        raise ConfigError([f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}"], str(path)) from exc
    return parse_config(raw, str(path))


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
