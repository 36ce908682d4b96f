"""Fuzzing (hypothesis) of what the daemon reads from outside: config files, Prometheus answers and Kubernetes
objects. Bad input never crashes it and never acts by itself: a config is ok or exit 2 with no traceback, a
Prometheus answer becomes known finite values or unknowns, a Kubernetes object becomes a rollout state or none.

Each test is bounded to a few seconds (`max_examples`, `deadline`)."""

from __future__ import annotations

import contextlib
import io
import json
import math
import string
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from predictor.cli import main
from predictor.config import PrometheusConfig, TLSConfig
from predictor.demo import SimulatedCluster, demo_config
from predictor.detectors.trend import ThresholdTrendScorer
from predictor.domain import Action, DeploymentRef, RolloutState
from predictor.engine import Engine
from predictor.rollouts.state import rollout_state_from_objects
from predictor.simulate import SimulatedRollout
from predictor.sources.prometheus import PrometheusMetricSource

START = 1_767_268_800.0
FAST = settings(max_examples=30, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])

# --- building blocks ---------------------------------------------------------------------------------------

odd_text = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", " ", "-1", "0", "1e309", "NaN", "+Inf", "-Inf", "1.5", "abc", "${NOPE}", "{pods}",
                     "15s", "-5m", "500ms", "1y", "9" * 40, "\u00e9\u00e8\u2603", "\x00", "true", "no"]),
)
odd_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), odd_text,
)
json_like = st.recursive(odd_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(odd_text, inner, max_size=4)), max_leaves=12)

SECTIONS: dict[str, list[str]] = {
    "prometheus": ["url", "timeout", "verify_tls", "ca_file", "bearer_token_file"],
    "alertmanager": ["url", "generator_url", "timeout"],
    "kubernetes": ["kubeconfig", "context"],
    "policy": ["action", "dry_run", "bake", "horizon", "interval", "consecutive", "risk_threshold",
               "alert_threshold", "undo_threshold", "blind_after", "blind_action", "lookback"],
    "server": ["host", "port"],
    "logging": ["format", "level"],
    "models": ["dir", "reload", "scorer"],
    "safety": ["budget", "kill_switch"],
}
METRIC_KEYS = ["name", "query", "denominator", "quantile", "threshold", "direction", "aggregate",
               "min_denominator", "unit"]


@st.composite
def config_documents(draw: st.DrawFn) -> Any:
    """Mostly well-shaped documents with odd values, some of any shape at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_like)
    doc: dict[str, Any] = {}
    for section, keys in SECTIONS.items():
        if draw(st.booleans()):
            chosen = draw(st.lists(st.sampled_from(keys), max_size=4, unique=True))
            doc[section] = {key: draw(json_like) for key in chosen}
    if draw(st.integers(0, 3)):
        doc["targets"] = draw(st.lists(st.fixed_dictionaries(
            {"namespace": odd_text}, optional={"selector": odd_scalar, "names": json_like}), max_size=3))
    if draw(st.booleans()):
        doc["metrics"] = draw(st.lists(st.dictionaries(st.sampled_from(METRIC_KEYS), json_like, max_size=6),
                                       max_size=3))
    return doc


def yaml_text(doc: Any) -> str:
    try:
        return yaml.safe_dump(doc, allow_unicode=True)
    except (yaml.YAMLError, ValueError):
        return json.dumps(doc, default=str)


# --- config files ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def config_dir() -> Iterator[Path]:
    """A scratch folder for the module. Not tmp_path: pytest 9's numbered-directory search leaves a scandir
    iterator open, which "error" in filterwarnings turns into a failed run once the iterator is collected."""
    with tempfile.TemporaryDirectory(prefix="predictor-fuzz-") as folder:
        yield Path(folder)


@pytest.fixture(scope="module")
def config_path(config_dir: Path) -> Path:
    """One file, rewritten by every example."""
    return config_dir / "predictor.yaml"


@FAST
@given(doc=config_documents(), raw_tail=st.binary(max_size=20))
def test_any_config_file_is_ok_or_exit_2_without_a_traceback(config_path: Path, doc: Any, raw_tail: bytes) -> None:
    path = config_path
    data = yaml_text(doc).encode("utf-8")
    path.write_bytes(data + raw_tail if raw_tail.startswith(b"#") else data)
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        status = main(["check-config", "--offline", str(path)])
    assert status in (0, 2)
    assert "Traceback" not in stderr.getvalue()
    if status == 2:
        assert stderr.getvalue().startswith("predictor: invalid configuration: "), stderr.getvalue()


@settings(max_examples=40, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=200))
def test_any_bytes_as_a_config_file_are_ok_or_exit_2(config_path: Path, data: bytes) -> None:
    path = config_path
    path.write_bytes(data)
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        status = main(["check-config", "--offline", str(path)])
    assert status in (0, 2) and "Traceback" not in stderr.getvalue()


# --- Prometheus answers ------------------------------------------------------------------------------------


class Answers:
    """A real HTTP server on 127.0.0.1 answering every query with the body (and status) the test sets."""

    def __init__(self) -> None:
        self.body = b"{}"
        self.status = 200
        answers = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                self.send_response(answers.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answers.body)))
                self.end_headers()
                self.wfile.write(answers.body)

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def answers() -> Iterator[Answers]:
    server = Answers()
    yield server
    server.close()


POD = "checkout-7b9c4d2e1f-abcde"
label_values = st.one_of(st.sampled_from(["shop", POD, "checkout-5d8f7c6b9a-xyz12", "+Inf", "0.5"]),
                         st.text(max_size=30), st.text(min_size=200, max_size=400))
sample_values = st.one_of(st.sampled_from(["NaN", "+Inf", "-Inf", "1e308", "-1", "0", "0.2", "1e-320", "x", ""]),
                          st.floats(allow_nan=True, allow_infinity=True).map(repr), json_like)


@st.composite
def prometheus_bodies(draw: st.DrawFn) -> tuple[int, bytes]:
    kind = draw(st.integers(0, 9))
    status = draw(st.sampled_from([200, 200, 200, 400, 422, 500, 503]))
    if kind == 0:
        return status, draw(st.binary(max_size=80))
    if kind == 1:
        return status, json.dumps(draw(json_like)).encode()
    series = draw(st.lists(st.fixed_dictionaries({
        "metric": st.dictionaries(st.sampled_from(["namespace", "pod", "le", "code", "\u2603"]), label_values,
                                  max_size=4),
        "value": st.one_of(st.tuples(st.floats(0, 2e9), sample_values).map(list), json_like),
    }), max_size=5))
    body = {"status": draw(st.sampled_from(["success", "error", "weird"])),
            "data": {"resultType": draw(st.sampled_from(["vector", "matrix", "scalar", "string"])), "result": series}}
    text = json.dumps(body, allow_nan=True)
    if kind == 2:
        text = text[: draw(st.integers(0, len(text)))]  # truncated
    return status, text.encode("utf-8", "surrogatepass")


def rollout() -> RolloutState:
    return RolloutState(ref=DeploymentRef("shop", "checkout"), revision=2, new_hash="7b9c4d2e1f",
                        old_hashes=("5d8f7c6b9a",), desired_replicas=4, updated_replicas=2, ready_new_replicas=2,
                        old_replicas=2, started_at=START - 60)


@FAST
@given(answer=prometheus_bodies())
def test_any_prometheus_answer_gives_finite_values_or_unknowns(answers: Answers, answer: tuple[int, bytes]) -> None:
    answers.status, answers.body = answer
    source = PrometheusMetricSource(PrometheusConfig(url=answers.url, tls=TLSConfig(timeout_seconds=2.0)))
    for spec in demo_config().metrics:
        observations = source.fetch(spec, [rollout()], START)
        assert len(observations) == 3
        for obs in observations:
            assert obs.value is None or math.isfinite(obs.value), obs
            assert obs.value is not None or obs.error, "an unknown says why"


class FixedAnswers(SimulatedCluster):
    """The simulated cluster's rollouts with metrics from a (fuzzed) Prometheus."""

    def __init__(self, sims: list[SimulatedRollout], source: PrometheusMetricSource) -> None:
        super().__init__(sims)
        self.source = source

    def fetch(self, spec, rollouts, at):  # type: ignore[no-untyped-def]
        return self.source.fetch(spec, rollouts, at)


@settings(max_examples=15, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(answer=prometheus_bodies())
def test_garbage_from_prometheus_never_acts(answers: Answers, answer: tuple[int, bytes]) -> None:
    """Whatever Prometheus answers about pods that are not the rollout's (as after a relabelling gone wrong, or
    garbage), nothing is paused or undone, even after the rollout is reported blind."""
    answers.status, answers.body = answer
    source = PrometheusMetricSource(PrometheusConfig(url=answers.url, tls=TLSConfig(timeout_seconds=2.0)))
    sim = SimulatedRollout(DeploymentRef("shop", "payments"), "healthy", START)
    assert not POD.startswith("payments-"), "the fuzzed pods are never this rollout's"
    cluster = FixedAnswers([sim], source)
    config = demo_config(Action.UNDO)
    engine = Engine(replace(config, policy=replace(config.policy, blind_after_ticks=2)), rollouts=cluster,
                    metrics=cluster, actuator=cluster, notifier=cluster, scorer=ThresholdTrendScorer())
    for i in range(3):
        engine.tick(START + 15.0 * i)
    assert cluster.actions == []


# --- Kubernetes objects ------------------------------------------------------------------------------------

names = st.one_of(st.sampled_from(["checkout", "checkout-7b9c4d2e1f", ""]), st.text(max_size=20),
                  st.text(alphabet=string.ascii_lowercase, min_size=250, max_size=300))
revisions = st.one_of(st.sampled_from(["1", "2", "0", "-1", "007", "2.5", "", "99999999999999999999999", "x",
                                       " 3 ", "٣"]), st.text(max_size=10))
counts = st.one_of(st.integers(min_value=-3, max_value=10), st.integers(min_value=2**40, max_value=2**63 - 1))
times = st.sampled_from(["2026-01-01T11:59:00Z", "2026-01-01T11:59:00.123456Z", "1970-01-01T00:00:00Z",
                         "9999-12-31T23:59:59Z", "yesterday", ""])


def maybe(draw: st.DrawFn, mapping: dict[str, Any]) -> dict[str, Any]:
    """`mapping` with some of its fields missing."""
    keys = draw(st.lists(st.sampled_from(sorted(mapping)), unique=True)) if draw(st.booleans()) else list(mapping)
    return {k: mapping[k] for k in keys}


@st.composite
def kube_objects(draw: st.DrawFn) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A Deployment and its ReplicaSets as an API server could serve them: every field of its schema's type (the
    server validates those), but any of them missing, odd revision annotations, huge or unicode labels and
    names, odd counts and times."""
    uid = draw(st.sampled_from(["u1", "u2", ""]))
    hashes = st.one_of(st.sampled_from(["7b9c4d2e1f", "5d8f7c6b9a"]), st.text(max_size=12))

    def meta(extra: dict[str, Any]) -> dict[str, Any]:
        return maybe(draw, {
            "name": draw(names), "namespace": "shop", "uid": uid, "creationTimestamp": draw(times),
            "labels": draw(st.dictionaries(st.one_of(names, st.just("pod-template-hash")), label_values, max_size=3)),
            "annotations": draw(st.dictionaries(st.sampled_from(
                ["deployment.kubernetes.io/revision", "predictor.io/acted-revision", "predictor.io/action",
                 "predictor.io/acted-at", "predictor.io/enabled", "predictor.io/dry-run",
                 "predictor.io/policy.action", "predictor.io/threshold.error_ratio"]), revisions, max_size=4)),
            **extra})

    def template() -> dict[str, Any]:
        return maybe(draw, {"metadata": maybe(draw, {"labels": draw(st.dictionaries(
            st.sampled_from(["app", "pod-template-hash"]), hashes, max_size=2))}),
            "spec": maybe(draw, {"containers": [maybe(draw, {"name": "app", "image": draw(names)})]})})

    condition = st.fixed_dictionaries({"type": st.sampled_from(["Progressing", "Available", "Odd"]),
                                       "status": st.sampled_from(["True", "False", "Unknown"])},
                                      optional={"reason": st.sampled_from(["NewReplicaSetAvailable",
                                                                           "ProgressDeadlineExceeded", ""]),
                                                "lastUpdateTime": times})
    deployment = {
        "metadata": meta({}),
        "spec": maybe(draw, {"replicas": draw(counts), "paused": draw(st.booleans()),
                             "selector": {"matchLabels": {"app": "checkout"}}, "template": template()}),
        "status": maybe(draw, {"replicas": draw(counts), "updatedReplicas": draw(counts),
                               "readyReplicas": draw(counts), "observedGeneration": draw(counts),
                               "conditions": draw(st.lists(condition, max_size=3))}),
    }
    replicasets = []
    for _ in range(draw(st.integers(0, 3))):
        owner = maybe(draw, {"kind": "Deployment", "uid": uid, "controller": draw(st.booleans()),
                             "name": draw(names), "apiVersion": "apps/v1"})
        replicasets.append({
            "metadata": meta({"ownerReferences": [owner]}),
            "spec": maybe(draw, {"replicas": draw(counts), "template": template()}),
            "status": maybe(draw, {"replicas": draw(counts), "readyReplicas": draw(counts)}),
        })
    return deployment, replicasets


@FAST
@given(objects=kube_objects())
def test_odd_kubernetes_objects_become_a_rollout_state(objects: tuple[Any, list[dict[str, Any]]]) -> None:
    deployment, replicasets = objects
    state = rollout_state_from_objects(deployment, replicasets)
    assert isinstance(state, RolloutState)
    assert state.progress >= 0.0


@settings(max_examples=40, deadline=3000)
@given(objects=kube_objects())
def test_odd_kubernetes_objects_never_act(objects: tuple[Any, list[dict[str, Any]]]) -> None:
    """A rollout state built from odd objects, with metrics that are all unknown: nothing is ever done."""
    deployment, replicasets = objects
    state = rollout_state_from_objects(deployment, replicasets)

    class OddCluster(SimulatedCluster):
        def list_rollouts(self, at: float) -> list[RolloutState]:
            return [state]

        def fetch(self, spec, rollouts, at):  # type: ignore[no-untyped-def]
            return []

    cluster = OddCluster([])
    engine = Engine(demo_config(Action.UNDO), rollouts=cluster, metrics=cluster, actuator=cluster,
                    notifier=cluster, scorer=ThresholdTrendScorer())
    for i in range(4):
        engine.tick(START + 15.0 * i)
    assert cluster.actions == []


def test_the_fuzzers_reach_both_outcomes(config_dir: Path) -> None:
    """The config fuzzer is worth something only if valid files pass and invalid ones fail: one of each."""
    good, bad = config_dir / "good.yaml", config_dir / "bad.yaml"
    good.write_text(yaml.safe_dump({"targets": [{"namespace": "shop"}], "safety": {"budget": {"actions": 2}}}))
    bad.write_text(yaml.safe_dump({"targets": [{"namespace": "shop"}], "safety": {"budget": {"actions": -1}}}))
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        assert main(["check-config", "--offline", str(good)]) == 0
        assert main(["check-config", "--offline", str(bad)]) == 2
