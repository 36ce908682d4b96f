from pathlib import Path

import pytest

from predictor.cli import main
from predictor.config import ConfigError, load_config, parse_config, parse_duration, parse_time
from predictor.domain import Action, Direction

MINIMAL = {"targets": [{"namespace": "shop"}]}


def errors_of(raw: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    return info.value.errors


def test_example_config_is_valid() -> None:
    config = load_config(Path(__file__).parents[2] / "config" / "predictor.yaml")
    assert [t.namespace for t in config.targets] == ["shop", "payments"]
    assert config.policy.dry_run is True
    assert config.targets[1].names == ("ledger", "gateway")


def test_defaults_give_the_default_metric_pack() -> None:
    config = parse_config(MINIMAL)
    assert [m.name for m in config.metrics] == [
        "error_ratio", "latency_p99", "memory_limit_ratio", "cpu_limit_ratio", "restarts_5m"]
    assert config.metric("error_ratio").threshold == 0.05
    assert config.metric("latency_p99").quantile == 0.99
    assert config.metric("restarts_5m").threshold == 3
    assert config.policy.action is Action.PAUSE
    assert config.prometheus.tls.verify_tls is True


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"policy": {"horizon": "-5m"}}, "policy.horizon: expected a positive duration, got '-5m'"),
        ({"policy": {"interval": "0s"}}, "policy.interval: expected a positive duration"),
        ({"policy": {"action": "rollback"}}, "policy.action: expected one of pause, undo, alert, got 'rollback'"),
        ({"policy": {"blind_action": "undo"}}, "policy.blind_action: expected one of alert, pause"),
        ({"policy": {"risk_threshold": 1.5}}, "policy.risk_threshold: expected a number above 0 and at most 1"),
        ({"policy": {"consecutive": 0}}, "policy.consecutive: expected a whole number of at least 1, got 0"),
        ({"policy": {"risk_threshold": 0.4, "alert_threshold": 0.5}}, "policy.risk_threshold: expected alert_thr"),
        ({"policy": {"hoizon": "5m"}}, "policy.hoizon: unknown field"),
        ({"prometheus": {"url": "prometheus:9090"}}, "prometheus.url: expected an http:// or https:// URL"),
        ({"prometheus": {"verify_tls": "yes"}}, "prometheus.verify_tls: expected true or false, got 'yes'"),
        ({"prometheus": {"ca_file": "/nonexistent/ca.crt"}}, "prometheus.ca_file: expected an existing file"),
        ({"targets": [{"namespace": "Shop!"}]}, "targets[0].namespace: expected a namespace name"),
        ({"targets": [{"namespace": "a", "selector": "app in (x"}]}, "targets[0].selector: expected a label selector"),
        ({"metrics": [{"name": "x", "query": "up{pod=~\"{pods}\"}"}]}, "metrics[0].threshold: required"),
        ({"metrics": [{"name": "x", "query": "up{pod=~\"{pod}\"}", "threshold": 1}]},
         "metrics[0].query: expected exactly {namespace}, {deployment} or {pods}"),
        ({"metrics": [{"name": "x", "query": "up", "threshold": 1}]},
         "metrics[0].query: expected a query that selects pods"),
        ({"metrics": [{"name": "x", "query": "up{pod=~\"{pods}\"}", "threshold": 1, "direction": "up"}]},
         "metrics[0].direction: expected one of above, below, got 'up'"),
    ],
)
def test_each_error_names_the_field_and_the_value(raw: dict, expected: str) -> None:
    merged = {**MINIMAL, **raw}
    errors = errors_of(merged)
    assert any(e.startswith(expected) for e in errors), errors


def test_all_errors_are_reported_together() -> None:
    errors = errors_of({"targets": [], "policy": {"horizon": "soon", "action": "nuke"}})
    assert len(errors) == 3
    assert {e.split(":")[0] for e in errors} == {"targets", "policy.horizon", "policy.action"}


def test_missing_targets_is_an_error() -> None:
    assert errors_of({})[0].startswith("targets: required")


def test_environment_variables_fill_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "shop")
    monkeypatch.setenv("DEPLOYMENT_NAME", "checkout")
    config = parse_config({"targets": [{"namespace": "${POD_NAMESPACE}", "names": ["${DEPLOYMENT_NAME}"]}]})
    assert config.targets[0].namespace == "shop"
    assert config.targets[0].names == ("checkout",)
    monkeypatch.delenv("DEPLOYMENT_NAME")
    errors = errors_of({"targets": [{"namespace": "shop", "names": ["${DEPLOYMENT_NAME}"]}]})
    assert errors[0].startswith("targets[0].names[0]: environment variable DEPLOYMENT_NAME is not set")


def test_custom_metric_below() -> None:
    config = parse_config({**MINIMAL, "metrics": [
        {"name": "availability", "query": 'avg by (namespace, pod) (up{pod=~"{pods}"})', "threshold": 0.99,
         "direction": "below", "aggregate": "mean"}]})
    spec = config.metric("availability")
    assert spec.direction is Direction.BELOW
    assert spec.breached(0.98) and not spec.breached(0.995)


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("targets:\n  - namespace: shop\n policy: [\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "line 3" in str(info.value) and str(path) in str(info.value)


def test_check_config_command_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("targets:\n  - namespace: shop\n")
    assert main(["check-config", str(good)]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("targets:\n  - namespace: shop\npolicy:\n  horizon: -5m\n")
    assert main(["check-config", str(bad)]) == 2
    assert "policy.horizon" in capsys.readouterr().err
    assert main(["run", "--config", str(bad)]) == 2


@pytest.mark.parametrize(("text", "seconds"), [("15s", 15), ("10m", 600), ("1h30m", 5400), ("500ms", 0.5), (42, 42)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "m", "5m3", "1.5.2s", "-5m", "5 m x"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_parse_time() -> None:
    now = 1_800_000_000.0
    assert parse_time("now", now) == now
    assert parse_time("-7d", now) == now - 7 * 86400
    assert parse_time("now-2h", now) == now - 7200
    assert parse_time("2026-01-01T00:00:00Z", now) == 1767225600.0
    assert parse_time("1767225600", now) == 1767225600.0
    with pytest.raises(ValueError, match="yesterday"):
        parse_time("yesterday", now)


def test_alertmanager_group_wait_is_a_duration_defaulting_to_alertmanagers_30s() -> None:
    assert parse_config(MINIMAL).alertmanager.group_wait_seconds == 30.0
    am = {"url": "http://am:9093", "group_wait": "5s"}
    assert parse_config({**MINIMAL, "alertmanager": am}).alertmanager.group_wait_seconds == 5.0
    [error] = errors_of({**MINIMAL, "alertmanager": {**am, "group_wait": "soon"}})
    assert error.startswith("alertmanager.group_wait: ") and "got 'soon'" in error
