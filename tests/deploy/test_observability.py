"""The ServiceMonitor/PodMonitor and PrometheusRule (custom resources, checked structurally since
kubernetes-validate has no CRD schemas; the rules also with `promtool check rules`), the Alertmanager route
example (with `amtool check-config`), and the Grafana dashboard, whose every query may use only the metric
names the daemon exports (read from its own registry, predictor/telemetry.py)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from predictor.policy import ALERT_BLIND, ALERT_BREACH
from predictor.telemetry import DaemonMetrics
from tests.deploy.rendering import ALL_SCENARIOS, DEPLOY, Obj, Rendered, daemon_container, render

DASHBOARD = DEPLOY / "grafana" / "predictor-dashboard.json"
ROUTE_EXAMPLE = DEPLOY / "alertmanager-route.example.yaml"
MONITORING_SCENARIOS = ["helm-service-full", "helm-sidecar-full", "kustomize-service-monitoring"]

# -- what the daemon exports ---------------------------------------------------------------------------------

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gauge": ("",),
    "summary": ("", "_count", "_sum", "_created"),
}


def exported_metric_names() -> set[str]:
    """Every series name the daemon's /metrics can serve, from the daemon's own registry."""
    names = set()
    for family in DaemonMetrics().registry.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    return names


def test_exported_names_include_the_documented_ones() -> None:
    documented = {
        "predictor_ticks_total",
        "predictor_tick_errors_total",
        "predictor_tick_duration_seconds_bucket",
        "predictor_queries_total",
        "predictor_decisions_total",
        "predictor_actions_total",
        "predictor_blind_rollouts",
        "predictor_rollout_risk",
        "predictor_action_lead_seconds_bucket",
        "predictor_is_leader",
        "predictor_model_loaded",
    }
    assert documented <= exported_metric_names()


# -- PromQL: which metric names does an expression use? ------------------------------------------------------

_KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
    "atan2",
}


def metric_names(expr: str) -> set[str]:
    """Metric names referred to in a PromQL expression (Grafana variables allowed): every identifier that is
    not a function or aggregation call, a keyword, a label name in a matcher or grouping, or a duration."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges, subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)  # label lists
    text = re.sub(r"\$\{?\w+\}?", "", text)  # other Grafana variables
    names = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)\s*(\()?", text):
        identifier, call = match.group(1), match.group(2)
        if not call and identifier.lower() not in _KEYWORDS:
            names.add(identifier)
    return names


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'sum by (pod) (rate(predictor_ticks_total{job=~"$job"}[$__rate_interval]))',
            {"predictor_ticks_total"},
        ),
        (
            "histogram_quantile(0.99, sum by (le) (rate(a_bucket[5m]))) > on (x) group_left b",
            {"a_bucket", "b"},
        ),
        ('absent(up{job="x"}) or max(foo) without (instance) < bool 1', {"up", "foo"}),
        ('label_replace(m, "dst", "$1", "src", "(.*)")', {"m"}),
    ],
)
def test_metric_names_are_extracted_from_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


# -- ServiceMonitor, PodMonitor, PrometheusRule --------------------------------------------------------------


def _missing(obj: Any, path: str) -> bool:
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj or obj[part] in (None, "", [], {}):
            return True
        obj = obj[part]
    return False


def _crds(rendered: Rendered, kind: str) -> list[Obj]:
    return [o for o in rendered.of_kind(kind) if o["apiVersion"] == "monitoring.coreos.com/v1"]


@pytest.mark.parametrize("scenario", ALL_SCENARIOS)
def test_monitoring_resources_are_rendered_only_when_enabled(scenario: str) -> None:
    rendered = render(scenario)
    kinds = {o["kind"] for o in rendered.objects if o["apiVersion"].startswith("monitoring.coreos.com/")}
    if scenario in MONITORING_SCENARIOS:
        monitor = "PodMonitor" if rendered.mode == "sidecar" else "ServiceMonitor"
        assert kinds == {monitor, "PrometheusRule"}
    else:
        assert kinds == set()


@pytest.mark.parametrize("scenario", MONITORING_SCENARIOS)
def test_the_monitor_scrapes_the_daemon_port(scenario: str) -> None:
    rendered = render(scenario)
    workload, container = daemon_container(rendered)
    port_names = {p["name"] for p in container["ports"]}
    pod_labels = workload["spec"]["template"]["metadata"]["labels"]
    for monitor in _crds(rendered, "ServiceMonitor"):
        for field in ("spec.selector.matchLabels", "spec.endpoints"):
            assert not _missing(monitor, field), f"ServiceMonitor: {field} is required"
        service = next(
            s
            for s in rendered.of_kind("Service")
            if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
        )
        assert service["spec"]["selector"].items() <= pod_labels.items()
        service_ports = {p["name"]: p for p in service["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert (
                endpoint["port"] in service_ports
                and service_ports[endpoint["port"]]["targetPort"] in port_names
            )
            assert endpoint["path"] == "/metrics" and endpoint["honorLabels"] is True
    for monitor in _crds(rendered, "PodMonitor"):
        for field in ("spec.selector.matchLabels", "spec.podMetricsEndpoints"):
            assert not _missing(monitor, field), f"PodMonitor: {field} is required"
        assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            assert endpoint["port"] in port_names and endpoint["path"] == "/metrics"


def _rules(rendered: Rendered) -> Iterator[Obj]:
    for rule_set in _crds(rendered, "PrometheusRule"):
        for group in rule_set["spec"]["groups"]:
            yield from group["rules"]


@pytest.mark.parametrize("scenario", MONITORING_SCENARIOS)
def test_prometheus_rule_is_structurally_valid_and_uses_only_exported_metrics(scenario: str) -> None:
    rendered = render(scenario)
    (rule_set,) = _crds(rendered, "PrometheusRule")
    assert not _missing(rule_set, "spec.groups")
    for group in rule_set["spec"]["groups"]:
        assert group.get("name") and group.get("rules"), "a group needs a name and rules"
    exported = exported_metric_names()
    alerts = {}
    for rule in _rules(rendered):
        assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
        assert rule.get("alert") and rule.get("expr"), rule
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert rule["labels"]["component"] == "predictor", "routed by deploy/alertmanager-route.example.yaml"
        assert rule["annotations"].get("summary")
        assert metric_names(rule["expr"]) <= exported, (
            f"{rule['alert']}: {metric_names(rule['expr']) - exported}"
        )
        alerts[rule["alert"]] = rule
    assert "predictor_blind_rollouts" in alerts["PredictorRolloutsBlind"]["expr"]
    assert "rate(predictor_tick_errors_total" in alerts["PredictorTickErrors"]["expr"]
    assert "predictor_ticks_total" in alerts["PredictorNotTicking"]["expr"]
    assert re.search(r"increase\(predictor_actions_total\{[^}]*\}\[10m\]\)", alerts["PredictorActed"]["expr"])
    assert alerts["PredictorActed"]["labels"]["severity"] == "info"
    assert not {ALERT_BREACH, ALERT_BLIND} & set(alerts), "the daemon's own alert names are not reused"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed (Debian: prometheus)")
@pytest.mark.parametrize("scenario", MONITORING_SCENARIOS)
def test_prometheus_rule_passes_promtool(scenario: str, tmp_path: Path) -> None:
    (rule_set,) = _crds(render(scenario), "PrometheusRule")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule_set["spec"]["groups"]}))
    result = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- Alertmanager route example ------------------------------------------------------------------------------


def _route_config() -> dict[str, Any]:
    """The example embedded in a minimal full Alertmanager config."""
    example = yaml.safe_load(ROUTE_EXAMPLE.read_text())
    assert set(example) == {"routes", "receivers", "inhibit_rules"}
    return {
        "route": {"receiver": "default", "group_by": ["alertname"], "routes": example["routes"]},
        "receivers": [{"name": "default"}, *example["receivers"]],
        "inhibit_rules": example["inhibit_rules"],
    }


def _routes(route: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for child in route.get("routes", []):
        yield child
        yield from _routes(child)


def test_route_example_routes_every_predictor_alert_to_a_defined_receiver() -> None:
    config = _route_config()
    receivers = {r["name"] for r in config["receivers"]}
    routes = list(_routes(config["route"]))
    assert all(route["receiver"] in receivers for route in routes)
    matchers = " ".join(m for route in routes for m in route.get("matchers", []))
    assert ALERT_BREACH in matchers and ALERT_BLIND in matchers
    assert 'component="predictor"' in matchers
    for route in config["route"]["routes"]:
        if any(ALERT_BREACH in m for m in route.get("matchers", [])):
            assert {"namespace", "deployment", "revision"} <= set(route["group_by"])


@pytest.mark.skipif(
    shutil.which("amtool") is None, reason="amtool is not installed (Debian: prometheus-alertmanager)"
)
def test_route_example_passes_amtool_check_config(tmp_path: Path) -> None:
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(_route_config()))
    result = subprocess.run(
        ["amtool", "check-config", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


# -- Grafana dashboard ---------------------------------------------------------------------------------------


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _panel_exprs(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
        for child in panel.get("panels", []):  # collapsed rows
            for target in child.get("targets", []):
                yield child["title"], target["expr"]
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if "expr" in annotation:
            yield f"annotation {annotation['name']}", annotation["expr"]


def test_dashboard_queries_use_only_metrics_the_daemon_exports() -> None:
    dashboard = _dashboard()
    exported = exported_metric_names()
    used = set()
    for title, expr in _panel_exprs(dashboard):
        names = metric_names(expr)
        assert names, f"{title}: no metric in {expr!r}"
        assert names <= exported, f"{title}: {sorted(names - exported)} is not exported by the daemon"
        used |= names
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((\w+),\s*\w+\)", variable["query"]["query"])
            assert match and match.group(1) in exported, variable
    required = {
        "predictor_ticks_total",
        "predictor_tick_duration_seconds_bucket",
        "predictor_decisions_total",
        "predictor_rollout_risk",
        "predictor_action_lead_seconds_bucket",
        "predictor_tick_errors_total",
        "predictor_is_leader",
    }
    assert required <= used, f"panels missing for {sorted(required - used)}"


def test_dashboard_is_a_well_formed_grafana_dashboard() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "job"} <= variables
    for panel in dashboard["panels"]:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]) and panel["gridPos"]["x"] + panel["gridPos"][
            "w"
        ] <= 24
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs))
        for target in panel["targets"]:
            assert 'job=~"$job"' in target["expr"], f"{panel['title']}: filter by the job variable"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed (Debian: prometheus)")
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query as a recording rule, Grafana's variables replaced by what Grafana sends."""
    substitutions = {"$__rate_interval": "1m", "$__range": "1h", "$job": ".*"}
    rules = []
    for i, (_, expr) in enumerate(_panel_exprs(_dashboard())):
        for variable, value in substitutions.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
