"""`predictor backtest` always says how many rollouts it replayed and on how many ticks it had data, and exits
non-zero when it saw nothing: against a port nobody listens on, an empty Prometheus, and one holding only
kube-state-metrics series about the rollouts (but none of the metrics to score them by: no app series, no
restart counts). On a real Prometheus holding a simulated
cluster's history, the figures are those of the data."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from predictor.cli import main
from predictor.config import format_time
from predictor.domain import DeploymentRef
from predictor.scenarios import scenario_series
from predictor.simulate import SimulatedRollout
from tests.fixtures.prometheus import PrometheusServer, free_port, history_start

pytestmark = [pytest.mark.prometheus, pytest.mark.usefixtures("restore_logging")]  # the CLI runs in process

B = history_start()
R = B + 900
"""The Deployments exist (revision 1, complete) from B; revision 1 leaves its 10-minute bake at B + 600."""
START, END = B + 615, B + 1320
TICKS = (END - START) // 15 + 1
ROLLOUTS = [SimulatedRollout(DeploymentRef("shop", "checkout"), "error_regression", float(R), seed=21),
            SimulatedRollout(DeploymentRef("shop", "catalog"), "healthy", float(R + 60), seed=22)]
SUMMARY = re.compile(r"backtest: (\d+) rollout\(s\) replayed, (\d+) of (\d+) ticks with data, (\d+) action\(s\) "
                     r"written to (.+)")


@pytest.fixture(scope="module")
def history() -> dict[str, list[tuple[float, float]]]:
    return {k: list(v) for k, v in scenario_series(ROLLOUTS, float(B), float(END)).items()}


@pytest.fixture(scope="module")
def full(start_prometheus: Callable[..., PrometheusServer], history: dict) -> Iterator[PrometheusServer]:
    server = start_prometheus(history)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ksm_only(start_prometheus: Callable[..., PrometheusServer], history: dict) -> Iterator[PrometheusServer]:
    server = start_prometheus({k: v for k, v in history.items()
                               if k.startswith("kube_") and not k.startswith("kube_pod_container_status_restarts")})
    yield server
    server.stop()



def backtest(tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str, start: float = START,
             end: float = END) -> tuple[int, tuple[int, int, int, int], str, Path]:
    """Run the command; return its exit status, the summary's (rollouts, ticks with data, ticks, actions), the
    stderr and the output file."""
    config = tmp_path / "predictor.yaml"
    config.write_text(f"prometheus:\n  url: {url}\n  timeout: 2s\ntargets:\n  - namespace: shop\n"
                      "logging:\n  level: ERROR\n"
                      "models:\n  scorer: trend\n", encoding="utf-8")  # the fast scorer: counts, not decisions
    output = tmp_path / "actions.jsonl"
    code = main(["backtest", "--config", str(config), "--start", format_time(start) or "", "--end",
                 format_time(end) or "", "--output", str(output)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    [line] = captured.out.splitlines()
    match = SUMMARY.fullmatch(line)
    assert match, line
    assert match[5] == str(output)
    assert output.exists() and len(output.read_text().splitlines()) == int(match[4])
    counts = (int(match[1]), int(match[2]), int(match[3]), int(match[4]))
    return code, counts, captured.err, output


def test_a_backtest_with_data_says_what_it_replayed(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    full: PrometheusServer) -> None:
    code, (rollouts, with_data, ticks, actions), err, _ = backtest(tmp_path, capsys, full.url)
    assert code == 0, err
    assert (rollouts, ticks) == (2, TICKS), "revision 2 of checkout and of catalog; revision 1 is out of its bake"
    assert with_data == ticks, "kube-state-metrics and the metrics cover the whole window"
    assert actions >= 1, "the error regression is acted on"


def test_a_window_before_the_first_rollout_replays_none(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        full: PrometheusServer) -> None:
    code, counts, err, _ = backtest(tmp_path, capsys, full.url, end=R - 15)
    assert err == ""
    assert code == 0, "the Deployments were there and steady: nothing to act on is a result"
    assert counts == (0, (R - 15 - START) // 15 + 1, (R - 15 - START) // 15 + 1, 0)


def test_an_empty_prometheus_exits_non_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            start_prometheus: Callable[..., PrometheusServer]) -> None:
    empty = start_prometheus()
    try:
        code, counts, err, _ = backtest(tmp_path, capsys, empty.url)
    finally:
        empty.stop()
    assert code == 1
    assert counts == (0, 0, TICKS, 0)
    assert err == (f"predictor backtest: nothing to replay: at {format_time(START)}: kube-state-metrics lists no "
                   "Deployment of the targets (kube_deployment_spec_replicas)\n")


def test_rollouts_without_metrics_exit_non_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                ksm_only: PrometheusServer) -> None:
    code, (rollouts, with_data, ticks, actions), err, _ = backtest(tmp_path, capsys, ksm_only.url)
    assert code == 1
    assert (rollouts, ticks, actions) == (2, TICKS, 0)
    # only the ticks with no rollout in scope yet: nothing to measure
    assert (R - START) // 15 <= with_data < ticks
    assert err.startswith(f"predictor backtest: nothing to replay: at {format_time(R)}: no metric had a value (")


def test_an_unreachable_prometheus_exits_non_zero_at_once(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, counts, err, output = backtest(tmp_path, capsys, url)
    assert code == 1
    assert counts == (0, 0, TICKS, 0)
    assert err == f"predictor backtest: Prometheus: cannot connect to {url}: connection refused\n"
    assert output.read_text() == ""
