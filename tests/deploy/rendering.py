"""Renders the packaging under deploy/ for the tests in this folder: the Helm chart with a real Helm (the Go
library of Helm 4, through the `helm-python-sdk` package, offline) and the kustomize overlays with
`kubectl kustomize`.

Each scenario is one set of values (or one overlay); tests iterate over all of them, so a rule such as "no
wildcard in RBAC" holds for both packagings and both modes. Rendering is cached per test session.
"""

from __future__ import annotations

import copy
import functools
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "predictor"
KUSTOMIZE = DEPLOY / "kustomize"
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
RELEASE = "predictor"
SIDECAR_PATCH_BEGIN = "# --- predictor sidecar patch: begin ---"
SIDECAR_PATCH_END = "# --- predictor sidecar patch: end ---"

Obj = dict[str, Any]


@dataclass(frozen=True)
class HelmScenario:
    namespace: str
    values: Mapping[str, Any]


HELM_SCENARIOS: dict[str, HelmScenario] = {
    # What docs/DEPLOY.md installs first.
    "helm-service": HelmScenario("predictor", {"targets": [{"namespace": "shop"}]}),
    # Everything on: several targets (one namespace twice, one with names), retraining, monitoring, tokens
    # and CAs for Prometheus and Alertmanager, custom metrics, live undo.
    "helm-service-full": HelmScenario(
        "predictor",
        {
            "targets": [
                {"namespace": "shop", "selector": "tier=web"},
                {"namespace": "shop", "names": ["cart"]},
                {"namespace": "pay", "names": ["api", "ledger"]},
            ],
            "retraining": {"enabled": True},
            "server": {"port": 8080, "externalUrl": "https://predictor.example.com"},
            "monitoring": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
            "prometheus": {
                "url": "https://prometheus.monitoring.svc:9091",
                "bearerToken": {"existingSecret": "prometheus-token", "key": "token"},
                "ca": {"configMap": "prometheus-ca", "key": "ca.crt"},
            },
            "alertmanager": {
                "url": "https://alertmanager.monitoring.svc:9093",
                "generatorURL": "https://grafana.example.com/d/predictor-overview",
                "bearerToken": {"existingSecret": "alertmanager-token", "key": "bearer"},
                "ca": {"configMap": "alertmanager-ca", "key": "bundle.pem"},
            },
            "metrics": [
                {
                    "name": "error_ratio",
                    "query": 'sum by (namespace, pod) (rate(http_requests_total{namespace="{namespace}", '
                    'pod=~"{pods}", code=~"5.."}[1m]))',
                    "denominator": "sum by (namespace, pod) "
                    '(rate(http_requests_total{namespace="{namespace}", '
                    'pod=~"{pods}"}[1m]))',
                    "threshold": 0.02,
                }
            ],
            "policy": {"action": "undo", "dryRun": False},
            "imagePullSecrets": [{"name": "registry"}],
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [
                {"key": "dedicated", "operator": "Equal", "value": "platform", "effect": "NoSchedule"}
            ],
            "priorityClassName": "system-cluster-critical",
        },
    ),
    # One replica, no leader election: no Lease rights, no PodDisruptionBudget.
    "helm-service-single": HelmScenario(
        "predictor",
        {
            "targets": [{"namespace": "shop"}],
            "replicaCount": 1,
            "leaderElection": {"enabled": False},
        },
    ),
    "helm-sidecar": HelmScenario(
        "shop",
        {
            "mode": "sidecar",
            "sidecar": {"deploymentName": "checkout", "exampleApp": {"enabled": True}},
        },
    ),
    # The application's own ServiceAccount, the name from the pod label, no leader election, all extras on.
    "helm-sidecar-full": HelmScenario(
        "shop",
        {
            "mode": "sidecar",
            "sidecar": {
                "deploymentName": "checkout",
                "deploymentNameFrom": "label",
                "serviceAccount": {"create": False, "name": "checkout"},
                "exampleApp": {"enabled": True},
            },
            "leaderElection": {"enabled": False},
            "retraining": {"enabled": True},
            "monitoring": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
            "prometheus": {"bearerToken": {"existingSecret": "prometheus-token"}},
            "alertmanager": {"url": "http://alertmanager.monitoring.svc:9093"},
        },
    ),
}

KUSTOMIZE_SCENARIOS: dict[str, str] = {
    "kustomize-service": "overlays/service",
    "kustomize-sidecar-example": "overlays/sidecar-example",
    # overlays/service with components/monitoring added, as docs/DEPLOY.md says to.
    "kustomize-service-monitoring": "overlays/service+monitoring",
}

# Which Helm scenario renders the same objects as which overlay (test_render.py compares them).
EQUIVALENT = {
    "kustomize-service": ("predictor", {"targets": [{"namespace": "shop"}], "retraining": {"enabled": True}}),
    "kustomize-sidecar-example": ("shop", HELM_SCENARIOS["helm-sidecar"].values),
    "kustomize-service-monitoring": (
        "predictor",
        {
            "targets": [{"namespace": "shop"}],
            "retraining": {"enabled": True},
            "monitoring": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
        },
    ),
}


@dataclass
class Rendered:
    """The objects of one scenario, and what the tests need to know about it."""

    name: str
    packaging: str
    """helm or kustomize"""
    namespace: str
    """Where the predictor itself runs."""
    objects: list[Obj]
    notes: str = ""
    """Helm's rendered NOTES.txt."""
    templates: dict[str, str] = field(default_factory=dict)

    @property
    def mode(self) -> str:
        return "sidecar" if "sidecar" in self.name else "service"

    def of_kind(self, *kinds: str) -> list[Obj]:
        return [o for o in self.objects if o["kind"] in kinds]

    def find(self, kind: str, name: str, namespace: str | None = None) -> Obj:
        for o in self.of_kind(kind):
            meta = o["metadata"]
            if meta["name"] == name and (namespace is None or meta.get("namespace") == namespace):
                return o
        raise KeyError(f"{self.name}: no {kind} {namespace or '*'}/{name}")


def helm_available() -> bool:
    try:
        import helm_python  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


requires_helm = pytest.mark.skipif(
    not helm_available(),
    reason="helm-python-sdk is not installed (pip install helm-python-sdk: Helm 4's Go library, renders "
    "charts offline)",
)
requires_kubectl = pytest.mark.skipif(
    not Path(KUBECTL).exists(), reason=f"kubectl (with built-in kustomize) is not installed at {KUBECTL}"
)


def _documents(text: str) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def render_helm_templates(values: Mapping[str, Any], namespace: str, name: str = RELEASE) -> dict[str, str]:
    """Template path -> rendered text, after validating the values against values.schema.json (as
    `helm install` does). Raises helm_python.HelmValuesError / HelmRenderError."""
    import helm_python

    with helm_python.Chart.load(str(CHART)) as chart:
        chart.validate_schema(copy.deepcopy(dict(values)))
        return chart.render(copy.deepcopy(dict(values)), name=name, namespace=namespace)


@functools.cache
def _helm(scenario: str) -> Rendered:
    spec = HELM_SCENARIOS[scenario]
    templates = render_helm_templates(spec.values, spec.namespace)
    objects: list[Obj] = []
    notes = ""
    for path, text in sorted(templates.items()):
        if path.endswith("NOTES.txt"):
            notes = text
        elif path.endswith((".yaml", ".yml")):
            objects.extend(_documents(text))
    return Rendered(scenario, "helm", spec.namespace, objects, notes, templates)


def helm_with(values: Mapping[str, Any], namespace: str) -> Rendered:
    templates = render_helm_templates(values, namespace)
    objects = [
        doc for path, text in sorted(templates.items()) if path.endswith(".yaml") for doc in _documents(text)
    ]
    notes = next((text for path, text in templates.items() if path.endswith("NOTES.txt")), "")
    return Rendered("helm-custom", "helm", namespace, objects, notes, templates)


def kustomize(directory: Path) -> list[Obj]:
    result = subprocess.run(
        [KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {directory} failed:\n{result.stderr}")
    return _documents(result.stdout)


@functools.cache
def _kustomize(scenario: str) -> Rendered:
    overlay = KUSTOMIZE_SCENARIOS[scenario]
    namespace = "shop" if "sidecar" in scenario else "predictor"
    if not overlay.endswith("+monitoring"):
        return Rendered(scenario, "kustomize", namespace, kustomize(KUSTOMIZE / overlay))
    # kustomize refuses absolute paths, so copy the tree and add the component the way the docs say.
    with tempfile.TemporaryDirectory(prefix="predictor-kustomize-") as tmp:
        tree = Path(tmp) / "kustomize"
        shutil.copytree(KUSTOMIZE, tree)
        kustomization = tree / "overlays" / "service" / "predictor" / "kustomization.yaml"
        with kustomization.open("a", encoding="utf-8") as handle:
            handle.write("components:\n  - ../../../components/monitoring\n")
        return Rendered(scenario, "kustomize", namespace, kustomize(tree / "overlays" / "service"))


def render(scenario: str) -> Rendered:
    """The rendered scenario; skips the test when its renderer is not installed."""
    if scenario in HELM_SCENARIOS:
        if not helm_available():
            pytest.skip("helm-python-sdk is not installed (pip install helm-python-sdk)")
        return _helm(scenario)
    if not Path(KUBECTL).exists():
        pytest.skip(f"kubectl (with built-in kustomize) is not installed at {KUBECTL}")
    return _kustomize(scenario)


ALL_SCENARIOS = [*HELM_SCENARIOS, *KUSTOMIZE_SCENARIOS]

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod")


def pod_spec(workload: Obj) -> Obj:
    kind, spec = workload["kind"], workload["spec"]
    if kind == "Pod":
        return spec
    if kind == "CronJob":
        return spec["jobTemplate"]["spec"]["template"]["spec"]
    return spec["template"]["spec"]


def predictor_containers(rendered: Rendered) -> list[tuple[Obj, Obj]]:
    """(workload, container) for every container that runs the predictor image, daemon or retraining job."""
    out = []
    for workload in rendered.of_kind(*WORKLOAD_KINDS):
        for container in pod_spec(workload).get("containers", []):
            if container["name"] in ("predictor", "train"):
                out.append((workload, container))
    return out


def daemon_container(rendered: Rendered) -> tuple[Obj, Obj]:
    daemons = [(w, c) for w, c in predictor_containers(rendered) if c["name"] == "predictor"]
    assert len(daemons) == 1, f"{rendered.name}: expected one predictor daemon container, got {len(daemons)}"
    return daemons[0]


def config_map_for(rendered: Rendered, workload: Obj, volume_name: str = "predictor-config") -> Obj:
    volume = next(v for v in pod_spec(workload).get("volumes", []) if v["name"] == volume_name)
    return rendered.find("ConfigMap", volume["configMap"]["name"], workload["metadata"].get("namespace"))


def daemon_config(rendered: Rendered) -> Obj:
    workload, _ = daemon_container(rendered)
    return yaml.safe_load(config_map_for(rendered, workload)["data"]["config.yaml"])


def container_env(
    container: Obj, pod_name: str = "pod-0", namespace: str = "shop", labels: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The container's environment as the kubelet would set it (downward API and $(VAR) references)."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                lambda m: env.get(m.group(1), m.group(0)),
                str(item["value"]),
            )
            continue
        path = item["valueFrom"]["fieldRef"]["fieldPath"]
        if path == "metadata.name":
            env[item["name"]] = pod_name
        elif path == "metadata.namespace":
            env[item["name"]] = namespace
        elif match := re.fullmatch(r"metadata\.labels\['([^']+)'\]", path):
            env[item["name"]] = (labels or {})[match.group(1)]
        else:
            raise AssertionError(f"unexpected fieldRef {path}")
    return env
