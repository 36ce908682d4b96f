"""The start-up checks that need the world outside the config file (`predictor/preflight.py`), against a real
Prometheus and real sockets: a query Prometheus refuses, a URL that is no Prometheus API, a kubeconfig that is
missing or malformed, a `server.host` that does not resolve and a `server.port` in use stop `run` (and
`check-config`, `backtest` where they apply) with exit 2 and one line per problem; Prometheus unreachable at
start does not (one WARNING, and the daemon runs)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from predictor.cli import main
from tests.fakes.kubeapi import FakeKubeAPI
from tests.fixtures.prometheus import PrometheusServer, free_port
from tests.integration.live import ROOT, stop_daemon

pytestmark = [pytest.mark.prometheus, pytest.mark.usefixtures("restore_logging")]  # the CLI runs in process

SELECTOR = 'namespace=~"{namespace}", pod=~"{pods}"'
GOOD = f"sum by (namespace, pod) (rate(http_requests_total{{{SELECTOR}}}[1m]))"
KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
"""


@pytest.fixture(scope="module")
def prom(start_prometheus: Callable[..., PrometheusServer]) -> Iterator[PrometheusServer]:
    server = start_prometheus()
    yield server
    server.stop()



def write_config(tmp_path: Path, url: str, *, metrics: str = "", host: str = "127.0.0.1", port: int | None = None,
                 kubeconfig: str | None = None) -> Path:
    if kubeconfig is None:
        (tmp_path / "kubeconfig").write_text(KUBECONFIG, encoding="utf-8")
        kubeconfig = str(tmp_path / "kubeconfig")
    path = tmp_path / "predictor.yaml"
    path.write_text(
        f"prometheus:\n  url: {url}\n  timeout: 2s\n"
        f"kubernetes:\n  kubeconfig: {kubeconfig}\n"
        "targets:\n  - namespace: shop\n"
        f"{metrics}"
        f"server:\n  host: {host}\n  port: {free_port() if port is None else port}\n"
        "logging:\n  level: WARNING\n",
        encoding="utf-8",
    )
    return path


def metrics_section(*specs: tuple[str, str, str | None]) -> str:
    text = "metrics:\n"
    for name, query, denominator in specs:
        text += f"  - name: {name}\n    query: '{query}'\n    threshold: 0.05\n"
        if denominator:
            text += f"    denominator: '{denominator}'\n"
    return text


def problems(capsys: pytest.CaptureFixture[str], path: Path) -> list[str]:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    header, *lines = captured.err.splitlines()
    assert header == f"predictor: invalid configuration: {path}: {len(lines)} problem(s):"
    return [line.removeprefix("  ") for line in lines]


def test_a_query_prometheus_refuses_is_a_config_error_naming_the_metric(
    prom: PrometheusServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # predictor's parser knows PromQL 3's functions, the Prometheus (2.42) here does not: only it can refuse them
    bad_function = (f"max by (namespace, pod) (double_exponential_smoothing(http_requests_total{{{SELECTOR}}}[5m], "
                    "0.5, 0.5))")
    bad_regex = ('sum by (namespace, pod) (rate(http_requests_total{namespace=~"{namespace}", pod=~"{pods}", '
                 'code=~"5(?<x>..)"}[1m]))')
    path = write_config(tmp_path, prom.url, metrics=metrics_section(
        ("error_ratio", GOOD, bad_function), ("saturation", bad_regex, None), ("fine", GOOD, GOOD)))
    for argv in (["check-config", str(path)], ["run", "--config", str(path)],
                 ["backtest", "--config", str(path), "--start", "-1h", "--end", "now", "--output",
                  str(tmp_path / "out.jsonl")]):
        assert main(argv) == 2, argv
        lines = problems(capsys, path)
        assert [line.split(":")[0] for line in lines] == ["metrics[0].denominator", "metrics[1].query"], lines
        assert lines[0].startswith("metrics[0].denominator: Prometheus refuses the denominator of metric "
                                   "error_ratio (HTTP 400: bad_data: ")
        assert "double_exponential_smoothing" in lines[0]
        assert lines[0].endswith(f", got {bad_function!r}")
        assert lines[1].startswith("metrics[1].query: Prometheus refuses the query of metric saturation (HTTP 400: "
                                   "bad_data: ")
        assert lines[1].endswith(f", got {bad_regex!r}")


def test_a_query_that_does_not_parse_is_refused_before_prometheus_is_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_type = f"rate(sum by (namespace, pod) (http_requests_total{{{SELECTOR}}}))"
    path = write_config(tmp_path, f"http://127.0.0.1:{free_port()}", metrics=metrics_section(
        ("saturation", bad_type, None)))
    assert main(["check-config", "--offline", str(path)]) == 2
    assert problems(capsys, path) == [
        "metrics[0].query: expected PromQL that parses (expected type matrix in call to function 'rate', got "
        f"vector), got {bad_type!r}"]


def test_the_default_pack_and_good_queries_pass(prom: PrometheusServer, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, prom.url)
    assert main(["check-config", str(path)]) == 0
    assert capsys.readouterr().out == (f"{path}: ok: 1 target(s), 5 metric(s), action pause; Prometheus at "
                                       f"{prom.url} accepts all 6 queries\n")


def test_a_url_that_is_not_a_prometheus_api_is_a_config_error(
    prom: PrometheusServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, f"{prom.url}/prometheus")
    assert main(["check-config", str(path)]) == 2
    assert problems(capsys, path) == [
        f"prometheus.url: expected a Prometheus API under this URL, but {prom.url}/prometheus/api/v1/query answers "
        f"HTTP 404, got '{prom.url}/prometheus'"]


def test_prometheus_unreachable_is_not_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    path = write_config(tmp_path, nobody)
    assert main(["check-config", str(path)]) == 0
    assert capsys.readouterr().out == (f"{path}: ok: 1 target(s), 5 metric(s), action pause; queries not checked: "
                                       f"Prometheus: cannot connect to {nobody}: connection refused\n")


def test_run_starts_with_one_warning_when_prometheus_is_unreachable(
    fake_kube: FakeKubeAPI, tmp_path: Path
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    path = write_config(tmp_path, nobody, kubeconfig=str(fake_kube.write_kubeconfig(tmp_path / "kube")))
    path.write_text(path.read_text().replace("level: WARNING", "level: INFO"))
    daemon = subprocess.Popen([sys.executable, "-m", "predictor.cli", "run", "--config", str(path)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={"PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1", "HOME": str(tmp_path)})
    try:
        deadline = time.monotonic() + 120  # start-up (imports, checks) is slow on a loaded machine
        assert daemon.stdout is not None
        seen = []
        while time.monotonic() < deadline and daemon.poll() is None:
            line = daemon.stdout.readline()
            seen.append(line)
            if "predictor running" in line:  # the signal handlers are in place
                break
        assert daemon.poll() is None, "".join(seen)
    finally:
        log = "".join(seen) + stop_daemon(daemon)
    assert daemon.returncode == 0, log
    warnings = [line for line in log.splitlines() if "queries not checked at start" in line]
    assert len(warnings) == 1 and " WARNING " in warnings[0], log
    assert f"cannot connect to {nobody}: connection refused" in warnings[0]
    assert "Traceback" not in log


def test_a_port_in_use_stops_run_and_not_check_config(
    prom: PrometheusServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        path = write_config(tmp_path, prom.url, port=port)
        assert main(["run", "--config", str(path)]) == 2
        assert problems(capsys, path) == [
            f"server.port: expected a free port, but {port} is already in use on 127.0.0.1, got {port}"]
        assert main(["check-config", str(path)]) == 0, "the daemon check-config validates for may hold the port"


@pytest.mark.parametrize(("host", "expected"), [
    ("no-such-host.invalid", "server.host: expected a host name that resolves to an IPv4 address (Name or service "
                             "not known), got 'no-such-host.invalid'"),
    ("192.0.2.1", "server.host: expected an address of this machine, got '192.0.2.1'"),
])
def test_a_host_that_does_not_resolve_here_stops_run_and_check_config(
    prom: PrometheusServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], host: str, expected: str
) -> None:
    path = write_config(tmp_path, prom.url, host=host)
    for argv in (["run", "--config", str(path)], ["check-config", str(path)]):
        assert main(argv) == 2
        assert problems(capsys, path) == [expected]


def test_a_missing_or_malformed_kubeconfig_is_named_with_its_path(
    prom: PrometheusServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    path = write_config(tmp_path, prom.url, kubeconfig="~/.kube/config")
    for argv in (["run", "--config", str(path)], ["check-config", str(path)]):
        assert main(argv) == 2
        assert problems(capsys, path) == [
            f"kubernetes.kubeconfig: cannot load {tmp_path}/.kube/config: no such file, got '~/.kube/config'"]
    (tmp_path / ".kube").mkdir()
    (tmp_path / ".kube" / "config").write_text("clusters: [\n", encoding="utf-8")
    assert main(["check-config", str(path)]) == 2
    [line] = problems(capsys, path)
    assert line.startswith(f"kubernetes.kubeconfig: cannot load {tmp_path}/.kube/config: not valid YAML at line 2")
    assert line.endswith(", got '~/.kube/config'")
    (tmp_path / ".kube" / "config").write_text("just text\n", encoding="utf-8")
    assert main(["check-config", str(path)]) == 2
    assert problems(capsys, path) == [
        f"kubernetes.kubeconfig: cannot load {tmp_path}/.kube/config: not a kubeconfig (expected a mapping with "
        "clusters, contexts and users), got '~/.kube/config'"]
    (tmp_path / ".kube" / "config").write_text(KUBECONFIG, encoding="utf-8")
    assert main(["check-config", str(path)]) == 0, capsys.readouterr().err
    capsys.readouterr()
    path.write_text(path.read_text().replace("kubeconfig: ~/.kube/config", "kubeconfig: ~/.kube/config\n"
                                             "  context: prod"))
    assert main(["check-config", str(path)]) == 2
    [line] = problems(capsys, path)
    assert line.startswith(f"kubernetes.kubeconfig: cannot load {tmp_path}/.kube/config (context 'prod'): ")
    assert "prod" in line.split("):", 1)[1]


def test_run_reports_every_start_problem_at_once(
    prom: PrometheusServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        path = write_config(tmp_path, prom.url, kubeconfig=str(tmp_path / "missing"), port=port,
                            metrics=metrics_section(
                                ("x", f"double_exponential_smoothing(up{{{SELECTOR}}}[5m], 0.5, 0.5)", None)))
        assert main(["run", "--config", str(path)]) == 2
    assert [line.split(":")[0] for line in problems(capsys, path)] == [
        "kubernetes.kubeconfig", "server.port", "metrics[0].query"]


def test_check_config_offline_does_not_look_outside(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, "http://prometheus.invalid:9090", kubeconfig=str(tmp_path / "missing"),
                        host="no-such-host.invalid")
    assert main(["check-config", "--offline", str(path)]) == 0
    assert capsys.readouterr().out.endswith("; Prometheus, the kubeconfig and server.host not checked (--offline)\n")
