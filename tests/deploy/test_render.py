"""The chart and the kustomize overlays render valid Kubernetes objects, the same in both packagings, wired
together (volumes, ConfigMaps, environment) so that the daemon can start with the config it is given."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from predictor.cli import _attach_relative_times, _parser
from predictor.config import parse_config
from predictor.leader import LeaderElectionConfig
from tests.deploy.rendering import (
    ALL_SCENARIOS,
    CHART,
    EQUIVALENT,
    KUSTOMIZE,
    SIDECAR_PATCH_BEGIN,
    SIDECAR_PATCH_END,
    Obj,
    config_map_for,
    container_env,
    daemon_config,
    daemon_container,
    helm_with,
    pod_spec,
    predictor_containers,
    render,
    render_helm_templates,
    requires_helm,
    requires_kubectl,
)

KUBERNETES_VERSION = "1.30"
"""Kubernetes version whose schemas the objects must satisfy (the chart's kubeVersion allows 1.25+; nothing
newer than 1.25 is used)."""
CRD_GROUPS = ("monitoring.coreos.com/",)
"""Custom resources: no schema in kubernetes-validate; test_observability.py checks them structurally."""


def _validate(obj: Obj) -> None:
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path)
        raise AssertionError(f"{obj['kind']}/{obj['metadata']['name']}: {where}: {exc.message}") from None


@pytest.mark.parametrize("scenario", ALL_SCENARIOS)
def test_every_object_is_valid_against_the_kubernetes_schemas(scenario: str) -> None:
    rendered = render(scenario)
    assert rendered.objects
    for obj in rendered.objects:
        if obj["apiVersion"].startswith(CRD_GROUPS):
            continue
        _validate(obj)


def test_the_schema_validation_is_strict_enough_to_catch_a_misspelled_field() -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {
                    "containers": [
                        {"name": "c", "image": "i", "securityContext": {"readOnlyRootFileSystem": True}}
                    ]
                },
            },
        },
    }
    with pytest.raises(AssertionError, match="readOnlyRootFileSystem"):
        _validate(deployment)


@pytest.mark.parametrize("scenario", ALL_SCENARIOS)
def test_names_and_namespaces_are_set_and_unique(scenario: str) -> None:
    rendered = render(scenario)
    keys = [
        (o["apiVersion"].split("/")[0], o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"])
        for o in rendered.objects
    ]
    assert len(keys) == len(set(keys)), f"duplicate objects in {scenario}"
    for obj in rendered.objects:
        assert obj["metadata"].get("namespace"), f"{obj['kind']}/{obj['metadata']['name']} has no namespace"


# -- Helm specifics ------------------------------------------------------------------------------------------


@requires_helm
@pytest.mark.parametrize(
    "values",
    [
        {"targets": [{"namespace": "shop"}]},
        {"mode": "sidecar", "sidecar": {"deploymentName": "checkout", "exampleApp": {"enabled": True}}},
    ],
)
def test_helm_lint_is_clean(values: dict[str, Any]) -> None:
    import helm_python

    report = helm_python.lint(str(CHART), values, strict=True, kube_version="v1.30.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert not problems, problems


@requires_helm
@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"mode": "daemonset"}, "/mode"),
        ({"targets": [{"namespace": "shop"}], "policy": {"action": "restart"}}, "/policy/action"),
        ({"targets": [{"namespace": "shop"}], "runAsUser": 0}, "/runAsUser"),
        ({"targets": [{"namespace": "Shop!"}]}, "/targets/0/namespace"),
        ({"targets": [{"namespace": "shop"}], "policy": {"horizon": "ten minutes"}}, "/policy/horizon"),
    ],
)
def test_values_schema_rejects_bad_values(values: dict[str, Any], message: str) -> None:
    import helm_python

    with pytest.raises(helm_python.HelmValuesError, match=re.escape(message)):
        render_helm_templates(values, "predictor")


@requires_helm
@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "targets: expected at least one"),
        (
            {"targets": [{"namespace": "shop"}], "leaderElection": {"enabled": False}},
            "replicaCount: 2 replicas need leaderElection.enabled=true",
        ),
        ({"mode": "sidecar"}, "sidecar.deploymentName: required in sidecar mode"),
        (
            {"mode": "sidecar", "sidecar": {"deploymentName": "x", "serviceAccount": {"create": False}}},
            "sidecar.serviceAccount.name",
        ),
    ],
)
def test_render_fails_naming_the_value(values: dict[str, Any], message: str) -> None:
    import helm_python

    with pytest.raises(helm_python.HelmRenderError, match=re.escape(message)):
        render_helm_templates(values, "predictor")


@requires_helm
def test_the_role_may_patch_only_the_named_deployments_when_every_target_of_a_namespace_names_them() -> None:
    rendered = render("helm-service-full")
    patch_rule = [r for r in rendered.find("Role", "predictor", "pay")["rules"] if "patch" in r["verbs"]]
    assert patch_rule == [
        {
            "apiGroups": ["apps"],
            "resources": ["deployments"],
            "verbs": ["patch"],
            "resourceNames": ["api", "ledger"],
        }
    ]
    shop_patch = [r for r in rendered.find("Role", "predictor", "shop")["rules"] if "patch" in r["verbs"]]
    assert "resourceNames" not in shop_patch[0], "a target without names watches the whole namespace"


# -- Helm and kustomize render the same objects --------------------------------------------------------------

KUSTOMIZE_HASH = re.compile(r"^(?P<base>.+)-[bcdfghjklmnpqrstvwxz2456789]{10}$")
HELM_ONLY_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by")
HELM_ONLY_ANNOTATIONS = (
    # Helm rolls the pods on a config change this way; kustomize by the ConfigMap's name hash.
    "checksum/config",
    "helm.sh/resource-policy",  # keeps the models claim on `helm uninstall`; kustomize has no uninstall
)


def _normalized(objects: list[Obj]) -> dict[tuple[str, str, str, str], Obj]:
    """Objects keyed by (apiVersion, kind, namespace, name), without what only one packaging can express."""
    text = json.dumps(objects)
    for obj in objects:
        match = KUSTOMIZE_HASH.match(obj["metadata"]["name"]) if obj["kind"] == "ConfigMap" else None
        if match:
            text = text.replace(f'"{obj["metadata"]["name"]}"', f'"{match.group("base")}"')
    out = {}
    for obj in json.loads(text):
        for meta in _metadatas(obj):
            for key in HELM_ONLY_LABELS:
                (meta.get("labels") or {}).pop(key, None)
            for key in HELM_ONLY_ANNOTATIONS:
                (meta.get("annotations") or {}).pop(key, None)
            if meta.get("annotations") == {}:
                del meta["annotations"]
        spec = obj.get("spec") or {}
        if "template" in spec:
            # Container order means nothing to Kubernetes (kubectl picks its default container by annotation);
            # kustomize's strategic merge puts the patch's containers first, `kubectl patch` last.
            spec["template"]["spec"]["containers"].sort(key=lambda c: c["name"])
        if obj["kind"] == "ConfigMap" and "config.yaml" in obj.get("data", {}):
            obj["data"]["config.yaml"] = yaml.safe_load(obj["data"]["config.yaml"])
        meta = obj["metadata"]
        out[(obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])] = obj
    return out


def _metadatas(obj: Obj) -> list[Obj]:
    found = [obj["metadata"]]
    spec = obj.get("spec") or {}
    if "template" in spec:
        found.append(spec["template"].setdefault("metadata", {}))
    if "jobTemplate" in spec:
        found.append(spec["jobTemplate"]["spec"]["template"].setdefault("metadata", {}))
    return found


@requires_helm
@requires_kubectl
@pytest.mark.parametrize("scenario", list(EQUIVALENT))
def test_kustomize_overlay_renders_the_same_objects_as_the_chart(scenario: str) -> None:
    namespace, values = EQUIVALENT[scenario]
    helm = _normalized(helm_with(values, namespace).objects)
    kustomized = _normalized(render(scenario).objects)
    assert sorted(kustomized) == sorted(helm)
    for key, obj in helm.items():
        assert kustomized[key] == obj, f"{key} differs between Helm and kustomize"


def _sidecar_patch_from_notes(notes: str) -> Obj:
    match = re.search(re.escape(SIDECAR_PATCH_BEGIN) + r"\n(.*)" + re.escape(SIDECAR_PATCH_END), notes, re.S)
    assert match, "NOTES.txt prints the sidecar patch between the markers"
    return yaml.safe_load(match.group(1))


@requires_helm
def test_the_patch_helm_prints_is_the_kustomize_sidecar_patch_and_builds_the_example_app() -> None:
    rendered = render("helm-sidecar")
    printed = _sidecar_patch_from_notes(rendered.notes)
    kustomize_patch = yaml.safe_load(
        (KUSTOMIZE / "overlays" / "sidecar-example" / "sidecar-patch.yaml").read_text()
    )
    assert printed == {"spec": kustomize_patch["spec"]}
    example = rendered.find("Deployment", "checkout", "shop")
    spec = pod_spec(example)
    patch_spec = printed["spec"]["template"]["spec"]
    assert spec["containers"][1:] == patch_spec["containers"]
    assert spec["volumes"] == patch_spec["volumes"]
    assert spec["serviceAccountName"] == patch_spec["serviceAccountName"]
    assert spec["automountServiceAccountToken"] is False


# -- Wiring: what the daemon is given exists and is what it expects ------------------------------------------


def _mount_dirs(container: Obj) -> dict[str, Obj]:
    return {m["mountPath"]: m for m in container.get("volumeMounts", [])}


def _mounted(container: Obj, path: str) -> Obj | None:
    for mount_path, mount in _mount_dirs(container).items():
        if path == mount_path or path.startswith(mount_path.rstrip("/") + "/"):
            return mount
    return None


@pytest.mark.parametrize("scenario", ALL_SCENARIOS)
def test_every_mount_has_a_volume_and_every_referenced_object_is_rendered_or_external(scenario: str) -> None:
    rendered = render(scenario)
    external_config_maps = {"kube-root-ca.crt", "prometheus-ca", "alertmanager-ca"}
    external_secrets = {"prometheus-token", "alertmanager-token"}
    external_service_accounts = {"checkout"}  # helm-sidecar-full binds the application's own account
    for workload, container in predictor_containers(rendered):
        spec = pod_spec(workload)
        namespace = workload["metadata"]["namespace"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for mount in container.get("volumeMounts", []):
            assert mount["name"] in volumes, f"{container['name']}: mount {mount['name']} has no volume"
        for volume in volumes.values():
            if "configMap" in volume and volume["configMap"]["name"] not in external_config_maps:
                rendered.find("ConfigMap", volume["configMap"]["name"], namespace)
            if "secret" in volume:
                assert volume["secret"]["secretName"] in external_secrets
            if "persistentVolumeClaim" in volume:
                rendered.find(
                    "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"], namespace
                )
        account = spec.get("serviceAccountName")
        if container["name"] == "predictor" and account not in external_service_accounts:
            rendered.find("ServiceAccount", account, namespace)


@pytest.mark.parametrize("scenario", ALL_SCENARIOS)
def test_the_config_is_valid_for_the_daemon_in_the_container_it_is_given_to(
    scenario: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parse each rendered config with the daemon's own parser, in the environment of its container (the
    downward API resolved), after checking that every file it names is mounted where it says."""
    rendered = render(scenario)
    for workload, container in predictor_containers(rendered):
        raw = yaml.safe_load(config_map_for(rendered, workload)["data"]["config.yaml"])
        labels = workload["spec"].get("template", {}).get("metadata", {}).get("labels", {})
        env = container_env(container, namespace=workload["metadata"]["namespace"], labels=labels)
        for section in ("prometheus", "alertmanager"):
            for key in ("bearer_token_file", "ca_file"):
                path = (raw.get(section) or {}).get(key)
                if path is None:
                    continue
                assert _mounted(container, path), (
                    f"{container['name']}: {section}.{key} {path} is not mounted"
                )
                local = tmp_path / path.lstrip("/")  # the file the kubelet would project
                local.parent.mkdir(parents=True, exist_ok=True)
                local.write_text("x")
                raw[section][key] = str(local)
        models_dir = (raw.get("models") or {}).get("dir")
        if models_dir:
            mount = _mounted(container, models_dir)
            assert mount, f"{container['name']}: models.dir {models_dir} is not mounted"
            assert mount.get("readOnly", False) is (container["name"] == "predictor"), (
                "the daemon mounts the models read-only, the retraining job read-write"
            )
        with monkeypatch.context() as patched:
            for name in ("POD_NAMESPACE", "DEPLOYMENT_NAME"):
                patched.delenv(name, raising=False)
            for name, value in env.items():
                patched.setenv(name, value)
            config = parse_config(raw, f"{scenario} {container['name']}")
        if container["name"] == "predictor":
            assert config.server.port == next(
                p["containerPort"] for p in container["ports"] if p["name"] == "predictor-http"
            )
            assert config.logging.format == "json"
        if rendered.mode == "sidecar":
            assert [(t.namespace, t.names) for t in config.targets] == [("shop", ("checkout",))]


@pytest.mark.parametrize("scenario", ALL_SCENARIOS)
def test_leader_election_settings_parse_and_match_the_lease_rights(scenario: str) -> None:
    rendered = render(scenario)
    workload, container = daemon_container(rendered)
    namespace = workload["metadata"]["namespace"]
    labels = workload["spec"]["template"]["metadata"]["labels"]
    settings = LeaderElectionConfig.from_env(container_env(container, "pod-0", namespace, labels))
    lease_roles = [
        r for r in rendered.of_kind("Role") if any("leases" in rule["resources"] for rule in r["rules"])
    ]
    if settings is None:
        assert not lease_roles, "no Lease rights without leader election"
        return
    assert settings.identity == "pod-0"
    assert settings.namespace == namespace
    (role,) = lease_roles
    assert role["metadata"]["namespace"] == namespace
    named = [rule for rule in role["rules"] if "resourceNames" in rule]
    assert named and all(rule["resourceNames"] == [settings.lease_name] for rule in named)
    if rendered.mode == "sidecar":
        assert settings.lease_name == "predictor-checkout", "one Lease per watched Deployment"
    replicas = workload["spec"].get("replicas", 1)
    assert replicas == 1 or settings is not None


def test_daemon_config_helper_reads_the_service_config() -> None:
    rendered = render("helm-service")
    assert daemon_config(rendered)["targets"] == [{"namespace": "shop"}]


def test_retraining_job_mounts_the_models_claim_the_daemon_reads() -> None:
    rendered = render("helm-service-full")
    (job,) = rendered.of_kind("CronJob")
    container = pod_spec(job)["containers"][0]
    args = container["args"]
    assert args[:3] == ["train", "--config", "/etc/predictor/config.yaml"]
    assert args[args.index("--from") + 1] == "-7d" and args[args.index("--to") + 1] == "now"
    assert args[args.index("--out") + 1] == "/models"
    now = 1_800_000_000.0  # what the image's entry point will make of them
    parsed = _parser(now).parse_args(_attach_relative_times(args))
    assert (parsed.command, parsed.start, parsed.end, str(parsed.out)) == ("train", now - 7 * 86400, now, "/models")
    workload, daemon = daemon_container(rendered)
    claim = {v["name"]: v for v in pod_spec(workload)["volumes"]}["predictor-models"]["persistentVolumeClaim"]
    job_claim = {v["name"]: v for v in pod_spec(job)["volumes"]}["predictor-models"]["persistentVolumeClaim"]
    assert claim["claimName"] == job_claim["claimName"] and claim["readOnly"] is True
    assert {m["mountPath"]: m.get("readOnly", False) for m in daemon["volumeMounts"]}["/models"] is True


def test_the_external_url_reaches_the_daemons_config() -> None:
    """`server.externalUrl` becomes `server.external_url`: the page alerts and annotations link to."""
    assert daemon_config(render("helm-service-full"))["server"]["external_url"] == "https://predictor.example.com"
    assert "external_url" not in daemon_config(render("helm-service"))["server"]
