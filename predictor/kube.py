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
from typing import Any

from kubernetes import client, config

from predictor.config import KubernetesConfig

IN_CLUSTER_ENV = "KUBERNETES_SERVICE_HOST"


class KubeConfigError(RuntimeError):
    """No usable Kubernetes credentials: the message says which source was tried and why it failed."""


def build_api_client(
    settings: KubernetesConfig, environ: Mapping[str, str] | None = None
) -> client.ApiClient:
    """ApiClient from, in order: `kubernetes.kubeconfig` when set; the pod's service account when running in a
    pod (KUBERNETES_SERVICE_HOST set); else the default kubeconfig ($KUBECONFIG or ~/.kube/config).

    `kubernetes.context` selects a kubeconfig context (ignored in-cluster). Raises KubeConfigError.
    """
    env = os.environ if environ is None else environ
    configuration = client.Configuration()
    if settings.kubeconfig is None and env.get(IN_CLUSTER_ENV):
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException as exc:
            raise KubeConfigError(
                f"kubernetes: in-cluster config ({IN_CLUSTER_ENV} is set) failed: {exc}"
            ) from exc
        return client.ApiClient(configuration)
    source = str(settings.kubeconfig) if settings.kubeconfig else "the default kubeconfig"
    try:
        config.load_kube_config(
            config_file=str(settings.kubeconfig) if settings.kubeconfig else None,
            context=settings.context,
            client_configuration=configuration,
            persist_config=False,
        )
    except (config.ConfigException, OSError, TypeError, ValueError) as exc:
        context = f" (context {settings.context!r})" if settings.context else ""
        raise KubeConfigError(f"kubernetes.kubeconfig: cannot load {source}{context}: {exc}") from exc
    return client.ApiClient(configuration)


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
