"""The command line: relative times as the CronJob passes them, and exit codes."""

from pathlib import Path

import pytest

from predictor.cli import _attach_relative_times, main


def test_relative_times_are_values_not_options() -> None:
    assert _attach_relative_times(["train", "--from", "-7d", "--to", "now", "--out", "m"]) == [
        "train", "--from=-7d", "--to", "now", "--out", "m"]
    assert _attach_relative_times(["backtest", "--start", "-6h", "--end", "-1h"]) == [
        "backtest", "--start=-6h", "--end=-1h"]


def test_train_with_relative_times_reaches_prometheus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("prometheus:\n  url: http://127.0.0.1:9\n  timeout: 1s\ntargets:\n  - namespace: shop\n")
    code = main(["train", "--config", str(config), "--from", "-7d", "--to", "now", "--out", str(tmp_path / "m")])
    assert code == 1, "Prometheus unreachable is a failure the CronJob retries, not a usage error"
    assert "cannot connect" in capsys.readouterr().err


def test_backtest_rejects_an_empty_window(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("targets:\n  - namespace: shop\n")
    code = main(["backtest", "--config", str(config), "--start", "-1h", "--end", "-2h", "--output",
                 str(tmp_path / "out.jsonl")])
    assert code == 2 and "expected start < end" in capsys.readouterr().err


def test_run_without_kubernetes_credentials_stops_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    config = tmp_path / "c.yaml"
    config.write_text("targets:\n  - namespace: shop\n")
    assert main(["run", "--config", str(config)]) == 2
    assert "kubernetes.kubeconfig: cannot load the default kubeconfig" in capsys.readouterr().err
