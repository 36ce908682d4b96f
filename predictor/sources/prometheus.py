"""The Prometheus adapter: the `MetricSource` port over Prometheus's HTTP API, via prometheus-api-client.

The daemon and the backtest build one `PrometheusMetricSource` from `PrometheusConfig`; each tick calls `fetch`
once per metric for all rollouts. The kube-state-metrics replay (`predictor.rollouts.replay`) and the training
job reuse `PrometheusClient` for instant and range queries. Every query is evaluated at an explicit time, so a
backtest at a simulated time sees nothing after it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import socket
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from predictor.config import MetricSpec, PrometheusConfig
from predictor.domain import DeploymentRef, Observation, RolloutState
from predictor.promql import QueryForm
from predictor.sources.split import (
    SCOPE_LABEL,
    PodSample,
    batch_query,
    needed_scopes,
    render_query,
    render_scope_query,
    scope_key,
    scope_observations,
    split_observations,
    unknown_observations,
)

_LOG = logging.getLogger(__name__)

READY_TIMEOUT_SECONDS = 2.0
"""`is_online` gives up after this long (or the configured timeout if shorter)."""
MAX_POINTS_PER_RANGE_QUERY = 10_000
MAX_BATCH_QUERY_CHARS = 32_768
"""An aggregate-form metric's scopes go in one query up to this length (POSTed, so no URL limit applies; it keeps
one query's parse and evaluation short); a longer batch, or one Prometheus refuses (400, 413, 422), is halved."""
_SPLIT_STATUSES = frozenset({400, 413, 414, 422})
"""Prometheus refuses range queries of more than 11,000 points per series; longer ranges are split."""

Labels = dict[str, str]
RangeSeries = tuple[Labels, np.ndarray, np.ndarray]
"""(labels, times in POSIX seconds, values) of one series of a range query; values may hold NaN."""


class QueryError(RuntimeError):
    """A Prometheus request that failed; the message says why (HTTP status and Prometheus's error, timeout...).

    `status` is the HTTP status of an answer Prometheus gave (400: a query it refuses), None when none came."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class _FormPostSession(requests.Session):
    """Sends a POST's parameters as a form body, as Prometheus's query API accepts them, instead of in the URL.

    prometheus-api-client passes them as `params` whatever the method; a query listing many pods would then hit
    the URL limits of proxies in front of Prometheus.
    """

    def request(  # type: ignore[override]
        self, method: str | bytes, url: str | bytes, params: Any = None, data: Any = None, **kwargs: Any
    ) -> requests.Response:
        if str(method).upper() == "POST" and params and data is None:
            return super().request(method, url, data=params, **kwargs)
        return super().request(method, url, params=params, data=data, **kwargs)


class PrometheusClient:
    """Instant and range queries at explicit times, with the bearer token re-read when its file changes.

    Queries are POSTed as forms by default, so long pod regexes pass proxies that limit URLs. One retry on
    connection failures only: a query that reached Prometheus is never sent twice.
    """

    def __init__(self, config: PrometheusConfig, *, method: str = "POST") -> None:
        self.url = config.url.rstrip("/")
        self.timeout_seconds = config.tls.timeout_seconds
        self._token_file: Path | None = config.tls.bearer_token_file
        self._token_stamp: tuple[int, int, int] | None = None
        self._token: str | None = None
        self._session: requests.Session | None = _FormPostSession()
        if not config.tls.verify_tls:
            self._session.verify = False
            _LOG.warning("prometheus: TLS certificate verification is off for %s", self.url)
        elif config.tls.ca_file is not None:
            self._session.verify = str(config.tls.ca_file)  # a CA bundle path replaces the system roots
        retry = Retry(total=1, connect=1, read=0, status=0, other=0, redirect=2, backoff_factor=0)
        self._connect = PrometheusConnect(
            url=self.url, session=self._session, retry=retry, timeout=self.timeout_seconds, method=method
        )
        self.queries_sent = 0
        """Instant and range requests sent (what a tick costs; `benchmarks/query_cost.py` reads it)."""

    @classmethod
    def from_connect(cls, connect: PrometheusConnect, timeout_seconds: float = 10.0) -> PrometheusClient:
        """Wrap a ready-made connection (its own headers, session and retries are kept as they are)."""
        client = cls.__new__(cls)
        client.url = connect.url.rstrip("/")
        client.timeout_seconds = timeout_seconds
        client._token_file = None
        client._token_stamp = None
        client._token = None
        client._session = None
        client._connect = connect
        client.queries_sent = 0
        return client

    # --- auth -------------------------------------------------------------------------------------------------

    def _refresh_token(self) -> None:
        """Re-read the bearer token when its file changed (projected tokens rotate by swapping a symlink)."""
        if self._token_file is None:
            return
        try:
            info = os.stat(self._token_file)
            stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
            if stamp != self._token_stamp:
                self._token = self._token_file.read_text(encoding="utf-8").strip()
                self._token_stamp = stamp
        except OSError as exc:
            raise QueryError(f"cannot read bearer token file {self._token_file}: {exc.strerror or exc}") from exc
        headers = dict(self._connect.headers or {})
        headers["Authorization"] = f"Bearer {self._token}"
        self._connect.headers = headers

    # --- queries ----------------------------------------------------------------------------------------------

    def query(self, promql: str, at: float) -> list[tuple[Labels, float]]:
        """Evaluate an instant query at `at` (POSIX seconds): one (labels, value) per series. Raises QueryError."""
        _LOG.debug("prometheus query at %.3f: %s", at, promql)
        params = {"time": _format_time(at), "timeout": self._server_timeout()}
        result = self._call(lambda: self._connect.custom_query(query=promql, params=params))
        return _parse_vector(result)

    def query_range(self, promql: str, start: float, end: float, step: float) -> list[RangeSeries]:
        """Evaluate a range query; ranges over MAX_POINTS_PER_RANGE_QUERY points are split. Raises QueryError."""
        if step <= 0:
            raise ValueError(f"step: expected a positive number of seconds, got {step!r}")
        if end < start:
            raise ValueError(f"end ({end}) is before start ({start})")
        merged: dict[tuple[tuple[str, str], ...], tuple[Labels, list[float], list[float]]] = {}
        chunk = step * (MAX_POINTS_PER_RANGE_QUERY - 1)
        chunk_start = start
        while chunk_start <= end:
            chunk_end = min(end, chunk_start + chunk)
            _LOG.debug("prometheus range query %.3f..%.3f step %gs: %s", chunk_start, chunk_end, step, promql)
            params = {
                "start": _format_time(chunk_start), "end": _format_time(chunk_end), "step": f"{step:g}",
                "timeout": self._server_timeout(),
            }
            result = self._call(
                lambda p=params: self._connect.custom_query_range(
                    query=promql, start_time=_datetime(start), end_time=_datetime(end), step=p["step"], params=p
                )
            )
            for labels, times, values in _parse_matrix(result):
                key = tuple(sorted(labels.items()))
                entry = merged.setdefault(key, (labels, [], []))
                entry[1].extend(times)
                entry[2].extend(values)
            chunk_start = chunk_end + step
        return [(labels, np.asarray(t, dtype=float), np.asarray(v, dtype=float)) for labels, t, v in merged.values()]

    def _server_timeout(self) -> str:
        """Prometheus stops evaluating after this; plain seconds, as its API parses '0.5' but not '0.5s'."""
        return f"{self.timeout_seconds:g}"

    def is_ready(self) -> bool:
        """GET /-/ready with a short timeout; False on any failure."""
        timeout = min(READY_TIMEOUT_SECONDS, self.timeout_seconds)
        try:
            if self._session is None:
                return bool(self._connect.check_prometheus_connection())
            self._refresh_token()
            response = self._session.get(f"{self.url}/-/ready", headers=self._connect.headers, timeout=timeout)
            return response.status_code == 200
        except (QueryError, requests.RequestException) as exc:
            _LOG.debug("prometheus at %s is not ready: %s", self.url, exc)
            return False

    def _call(self, request: Any) -> Any:
        self.queries_sent += 1
        try:
            self._refresh_token()
            return request()
        except QueryError:
            raise
        except requests.JSONDecodeError as exc:  # before RequestException, of which it is a subclass
            raise QueryError(f"malformed response from {self.url} (not JSON): {exc}") from exc
        except requests.Timeout as exc:
            raise QueryError(f"timed out after {self.timeout_seconds:g}s ({self.url})") from exc
        except requests.ConnectionError as exc:
            raise QueryError(f"cannot connect to {self.url}: {_root_cause(exc)}") from exc
        except requests.RequestException as exc:
            raise QueryError(f"request to {self.url} failed: {exc}") from exc
        except PrometheusApiClientException as exc:
            status = _STATUS.search(str(exc))
            raise QueryError(_describe_http_error(str(exc)), int(status.group(1)) if status else None) from exc
        except (ValueError, KeyError, TypeError) as exc:
            # requests' JSONDecodeError is a ValueError; a JSON body without data.result is a KeyError/TypeError.
            raise QueryError(f"malformed response from {self.url}: {type(exc).__name__}: {exc}") from exc


class PrometheusMetricSource:
    """`MetricSource` over Prometheus. A per-pod metric costs one instant query per tick for all rollouts (two with
    a denominator); an aggregate one is rendered per scope of each rollout, the scopes batched into as few
    queries as `max_batch_chars` allows (see `queries_per_tick`)."""

    def __init__(self, config: PrometheusConfig, *, max_batch_chars: int = MAX_BATCH_QUERY_CHARS) -> None:
        self.client = PrometheusClient(config)
        self.max_batch_chars = max_batch_chars

    def fetch(self, spec: MetricSpec, rollouts: Sequence[RolloutState], at: float) -> list[Observation]:
        """Observations of `spec` at `at` for all rollouts (deployment, new, old each). Never raises."""
        if not rollouts:
            return []
        if spec.form is QueryForm.AGGREGATE:
            try:
                return self._fetch_aggregate(spec, rollouts, at)
            except Exception as exc:  # as below: a bug must not stop the tick
                _LOG.exception("metric %s: unexpected error", spec.name)
                return unknown_observations(rollouts, spec.name, at, f"{spec.name}: internal error: {exc!r}")
        try:
            samples = self._fetch_samples(spec, spec.query, rollouts, at, "query")
            if isinstance(samples, str):
                return unknown_observations(rollouts, spec.name, at, samples)
            denominator: list[PodSample] | None = None
            if spec.denominator is not None:
                fetched = self._fetch_samples(spec, spec.denominator, rollouts, at, "denominator")
                if isinstance(fetched, str):
                    return unknown_observations(rollouts, spec.name, at, fetched)
                denominator = fetched
            return split_observations(spec, rollouts, samples, at, denominator=denominator)
        except Exception as exc:  # the port promises never to raise: a bug here must not stop the tick
            _LOG.exception("metric %s: unexpected error", spec.name)
            return unknown_observations(rollouts, spec.name, at, f"{spec.name}: internal error: {exc!r}")

    def _fetch_samples(
        self, spec: MetricSpec, template: str, rollouts: Sequence[RolloutState], at: float, which: str
    ) -> list[PodSample] | str:
        """Per-pod samples, or the error text of the observations when the query failed."""
        promql = render_query(template, rollouts)
        try:
            series = self.client.query(promql, at)
        except QueryError as exc:
            # DEBUG: the daemon logs one WARNING when Prometheus goes down and one INFO when it is back.
            _LOG.debug("metric %s: %s failed: %s", spec.name, which, exc)
            return f"{spec.name}: {which} failed: {exc}"
        samples: list[PodSample] = []
        unlabelled = 0
        for labels, value in series:
            namespace, pod = labels.get("namespace"), labels.get("pod")
            if not namespace or not pod:
                unlabelled += 1
                continue
            le = None
            if spec.quantile is not None and which == "query":
                le = parse_le(labels.get("le"))
            samples.append(PodSample(namespace, pod, value, le))
        if unlabelled and not samples:
            message = (
                f"{spec.name}: {which} returned {unlabelled} series without 'namespace' and 'pod' labels "
                "(aggregate with `by (namespace, pod)`)"
            )
            _LOG.warning("metric %s: %s", spec.name, message)
            return message
        if unlabelled:
            _LOG.debug("metric %s: ignored %d series without namespace/pod labels", spec.name, unlabelled)
        return samples

    def _fetch_aggregate(self, spec: MetricSpec, rollouts: Sequence[RolloutState], at: float) -> list[Observation]:
        values, errors = self._fetch_scopes(spec, spec.query, rollouts, at, "query")
        denominator: dict[str, list[float]] | None = None
        if spec.denominator is not None:
            denominator, den_errors = self._fetch_scopes(spec, spec.denominator, rollouts, at, "denominator")
            errors = {**den_errors, **errors}
        return scope_observations(spec, rollouts, values, at, denominator=denominator, errors=errors)

    def _fetch_scopes(
        self, spec: MetricSpec, template: str, rollouts: Sequence[RolloutState], at: float, which: str
    ) -> tuple[dict[str, list[float]], dict[str, str]]:
        """Each needed scope's series values by `scope_key`, and the error of each scope whose query failed."""
        parts = [(scope_key(r.ref, scope), render_scope_query(template, r, scope))
                 for r in rollouts for scope in needed_scopes(r)]
        values: dict[str, list[float]] = {}
        errors: dict[str, str] = {}
        for batch in batches(parts, self.max_batch_chars):
            self._run_batch(spec, batch, at, which, values, errors)
        return values, errors

    def _run_batch(
        self, spec: MetricSpec, batch: Sequence[tuple[str, str]], at: float, which: str,
        values: dict[str, list[float]], errors: dict[str, str],
    ) -> None:
        promql = batch[0][1] if len(batch) == 1 else batch_query(batch)
        try:
            series = self.client.query(promql, at)
        except QueryError as exc:
            if len(batch) > 1 and exc.status in _SPLIT_STATUSES:
                _LOG.debug("metric %s: %s of %d scopes refused (%s): halving", spec.name, which, len(batch), exc)
                half = len(batch) // 2
                self._run_batch(spec, batch[:half], at, which, values, errors)
                self._run_batch(spec, batch[half:], at, which, values, errors)
                return
            _LOG.warning("metric %s: %s failed: %s", spec.name, which, exc)
            for key, _ in batch:
                errors[key] = f"{which} failed: {exc}"
            return
        if len(batch) == 1:
            values[batch[0][0]] = [value for _, value in series]
            return
        wanted = {key for key, _ in batch}
        for labels, value in series:
            key = labels.get(SCOPE_LABEL)
            if key in wanted:
                values.setdefault(key, []).append(value)

    def queries_per_tick(self, spec: MetricSpec, rollouts: Sequence[RolloutState]) -> int:
        """What `fetch` costs in queries when none is refused: per pod 1 (2 with a denominator) whatever the
        rollouts; aggregate, the batches of the rollouts' scopes (times 2 with a denominator)."""
        templates = 1 if spec.denominator is None else 2
        if spec.form is not QueryForm.AGGREGATE:
            return templates if rollouts else 0
        total = 0
        for template in (spec.query, spec.denominator):
            if template is not None:
                parts = [(scope_key(r.ref, s), render_scope_query(template, r, s)) for r in rollouts
                         for s in needed_scopes(r)]
                total += len(batches(parts, self.max_batch_chars))
        return total

    def is_online(self) -> bool:
        return self.client.is_ready()

    def fetch_range(self, query: str, start: float, end: float, step: float) -> list[RangeSeries]:
        """Range query for the backtest and training: (labels, times, values) per series. Raises QueryError."""
        return self.client.query_range(query, start, end, step)


def describe_cost(spec: MetricSpec, max_batch_chars: int = MAX_BATCH_QUERY_CHARS) -> str:
    """The start-up line of one metric: its form and what it costs in queries per tick."""
    templates = [t for t in (spec.query, spec.denominator) if t is not None]
    per = "2 queries (query and denominator)" if len(templates) == 2 else "1 query"
    if spec.form is not QueryForm.AGGREGATE:
        return (f"metric {spec.name}: per-pod form (the result keeps namespace and pod): {per} per tick for all "
                "Deployments, split per pod")
    example = RolloutState(ref=DeploymentRef("a-namespace", "a-deployment-name"), revision=2, new_hash="5d8f7c6b9a",
                           old_hashes=("7b9c4d2e1f",), desired_replicas=1, updated_replicas=1, ready_new_replicas=1,
                           old_replicas=1, started_at=0.0)
    longest = max(len(batch_query([(scope_key(example.ref, s), render_scope_query(t, example, s))]))
                  for t in templates for s in needed_scopes(example))
    rollouts_per_query = max(1, max_batch_chars // (3 * (longest + len(" or "))))
    return (f"metric {spec.name}: aggregate form (pods aggregated away): {per} per scope (the Deployment, its new "
            f"pods, its old pods) of each rollout, batched: {per} per tick for every {rollouts_per_query} rollouts "
            f"or so ({max_batch_chars} characters a query)")


def batches(parts: Sequence[tuple[str, str]], max_chars: int) -> list[list[tuple[str, str]]]:
    """Consecutive runs of (scope key, rendered query) whose `batch_query` stays within `max_chars` (a single part
    longer than that is a batch of its own)."""
    result: list[list[tuple[str, str]]] = []
    current: list[tuple[str, str]] = []
    length = 0
    for part in parts:
        size = len(batch_query([part])) + len(" or ")
        if current and length + size > max_chars:
            result.append(current)
            current, length = [], 0
        current.append(part)
        length += size
    if current:
        result.append(current)
    return result


# --- parsing ---------------------------------------------------------------------------------------------------


def _format_time(at: float) -> str:
    return f"{at:.3f}"


def _datetime(at: float) -> datetime:
    return datetime.fromtimestamp(at, tz=UTC)


def _parse_float(raw: Any) -> float:
    if not isinstance(raw, str | int | float) or isinstance(raw, bool):
        raise TypeError(f"expected a sample value, got {raw!r}")
    return float(raw)


def parse_le(raw: str | None) -> float | None:
    """A histogram bucket's `le` label as a number (+Inf included); None when absent or not a number."""
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return None if math.isnan(value) else value


def _parse_vector(result: Any) -> list[tuple[Labels, float]]:
    if not isinstance(result, list):
        raise QueryError(f"malformed response: expected an instant vector, got {type(result).__name__}")
    series: list[tuple[Labels, float]] = []
    for item in result:
        if not isinstance(item, Mapping) or not isinstance(item.get("metric"), Mapping):
            raise QueryError(f"malformed response: expected an instant vector (one series per pod), got {item!r:.80}")
        value = item.get("value")
        if not isinstance(value, list | tuple) or len(value) != 2:
            raise QueryError(f"malformed response: sample without [time, value]: {item!r:.80}")
        try:
            series.append(({str(k): str(v) for k, v in item["metric"].items()}, _parse_float(value[1])))
        except (TypeError, ValueError) as exc:
            raise QueryError(f"malformed response: bad sample value {value[1]!r}") from exc
    return series


def _parse_matrix(result: Any) -> list[tuple[Labels, list[float], list[float]]]:
    if not isinstance(result, list):
        raise QueryError(f"malformed response: expected a range vector, got {type(result).__name__}")
    series: list[tuple[Labels, list[float], list[float]]] = []
    for item in result:
        if not isinstance(item, Mapping) or not isinstance(item.get("metric"), Mapping):
            raise QueryError(f"malformed response: expected a range vector, got {item!r:.80}")
        values = item.get("values")
        if not isinstance(values, list):
            raise QueryError(f"malformed response: series without values: {item!r:.80}")
        try:
            times = [float(point[0]) for point in values]
            samples = [_parse_float(point[1]) for point in values]
        except (TypeError, ValueError, IndexError, KeyError) as exc:
            raise QueryError(f"malformed response: bad range sample in {item!r:.80}") from exc
        series.append(({str(k): str(v) for k, v in item["metric"].items()}, times, samples))
    return series


_STATUS = re.compile(r"HTTP Status Code (\d+)")


def _describe_http_error(message: str) -> str:
    """'HTTP Status Code 400 (b'{"status":"error","error":"..."}')' -> 'HTTP 400: bad_data: ...'."""
    status = _STATUS.search(message)
    code = status.group(1) if status else "?"
    start, end = message.find("{"), message.rfind("}")
    if start >= 0 and end > start:
        raw = message[start : end + 1]
        try:
            body = json.loads(raw.encode("utf-8").decode("unicode_escape"))
        except (ValueError, UnicodeDecodeError):
            body = None
        if isinstance(body, Mapping) and body.get("error"):
            kind = f"{body['errorType']}: " if body.get("errorType") else ""
            return f"HTTP {code}: {kind}{body['error']}"
    detail = message[message.find("(") + 1 : -1] if "(" in message else message
    return f"HTTP {code}: {detail[:300]}"


def _root_cause(exc: BaseException) -> str:
    cause: BaseException | None = exc
    for _ in range(10):
        if cause is None:
            break
        if "Connection refused" in str(cause):
            return "connection refused"
        if "Failed to resolve" in str(cause) or isinstance(cause, socket.gaierror):
            return "the host name does not resolve"
        cause = cause.__cause__ or cause.__context__
    return str(exc)[:300]

