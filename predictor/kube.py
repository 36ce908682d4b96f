"""Connection to the Kubernetes API: an ApiClient built from the `kubernetes:` section of the config, and the
one way the adapters read responses (plain dicts, as the API serves them).

Called by the daemon's wiring; the rollout source and the actuator receive the ApiClient. Together with
`predictor/rollouts/kubernetes.py` and `predictor/actuators/kubernetes.py`, the only module that imports the
`kubernetes` package.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config

from predictor.config import KubernetesConfig

IN_CLUSTER_ENV = "KUBERNETES_SERVICE_HOST"


class KubeConfigError(RuntimeError):
    """No usable Kubernetes credentials. The message is one config error line: the field, which source was tried
    (the kubeconfig's path with `~` expanded, or the pod's service account) and why it failed."""


DEFAULT_KUBECONFIG = "~/.kube/config"


def build_api_client(
    settings: KubernetesConfig, environ: Mapping[str, str] | None = None
) -> client.ApiClient:
    """ApiClient from, in order: `kubernetes.kubeconfig` when set; the pod's service account when running in a
    pod (KUBERNETES_SERVICE_HOST set); else the default kubeconfig ($KUBECONFIG, a `:`-separated list, or
    ~/.kube/config).

    `kubernetes.context` selects a kubeconfig context (ignored in-cluster). Raises KubeConfigError.
    """
    env = os.environ if environ is None else environ
    configuration = client.Configuration()
    if settings.kubeconfig is None and env.get(IN_CLUSTER_ENV):
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException as exc:
            raise KubeConfigError(
                f"kubernetes.kubeconfig: not set, and the in-cluster config ({IN_CLUSTER_ENV} is set) failed: "
                f"{_reason(exc)}, got nothing"
            ) from exc
        return client.ApiClient(configuration)
    if settings.kubeconfig is not None:
        files = [Path(settings.kubeconfig).expanduser()]
        source, got = str(files[0]), repr(str(settings.kubeconfig))
    else:
        listed = env.get("KUBECONFIG") or DEFAULT_KUBECONFIG
        files = [Path(f).expanduser() for f in listed.split(os.pathsep) if f]
        source = f"the default kubeconfig {os.pathsep.join(map(str, files))}"
        source += " ($KUBECONFIG)" if env.get("KUBECONFIG") else ""
        source += f" (not in a pod: {IN_CLUSTER_ENV} unset)"
        got = "nothing"
    context = f" (context {settings.context!r})" if settings.context else ""
    if not any(f.is_file() for f in files):
        raise KubeConfigError(f"kubernetes.kubeconfig: cannot load {source}: no such file, got {got}")
    try:
        config.load_kube_config(
            config_file=os.pathsep.join(map(str, files)),
            context=settings.context,
            client_configuration=configuration,
            persist_config=False,
        )
    except (config.ConfigException, OSError, TypeError, ValueError, AttributeError, yaml.YAMLError) as exc:
        reason = _reason(exc)
        raise KubeConfigError(f"kubernetes.kubeconfig: cannot load {source}{context}: {reason}, got {got}") from exc
    return client.ApiClient(configuration)


def _reason(exc: BaseException) -> str:
    """The kubernetes client's reasons in words: a YAML error, or a file that is not a kubeconfig mapping."""
    if isinstance(exc, yaml.YAMLError):
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        return f"not valid YAML{where}: {getattr(exc, 'problem', None) or exc}"
    if isinstance(exc, TypeError | AttributeError):
        return "not a kubeconfig (expected a mapping with clusters, contexts and users)"
    return " ".join(str(exc).split())


def call_json(method: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Call a generated API method and return the response body as a dict, unvalidated by the models.

    Raw JSON keeps the objects exactly as served (one form for lists, watches and patches alike) and spares
    the client-side model checks that reject partial objects. Errors raise `kubernetes.client.ApiException`.
    """
    response = method(*args, _preload_content=False, **kwargs)
    try:
        data = response.data
    finally:
        response.release_conn()
    return json.loads(data) if data else {}
