"""The kill switch, a ConfigMap in the daemon's own namespace that the engine reads once per tick.

`kubectl -n predictor create configmap predictor-kill-switch --from-literal=stop=true` turns every pause and undo
into an alert from the next tick on; `kubectl -n predictor delete configmap predictor-kill-switch` (or
`stop: "false"`) lifts it. Reading it needs `get` on that one ConfigMap (deploy/ grants exactly that).
"""

from __future__ import annotations

import logging

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from predictor.kube import call_json

log = logging.getLogger(__name__)

HTTP_NOT_FOUND = 404
KEY = "stop"


class ConfigMapKillSwitch:
    """`KillSwitch` over one ConfigMap: engaged while its key `stop` is anything but "false" or empty (a value
    an operator mistyped in a hurry must not be ignored); not engaged while the ConfigMap does not exist. When
    it cannot be read, the last state read holds, with one WARNING until it can be read again."""

    def __init__(self, api_client: client.ApiClient, namespace: str, name: str) -> None:
        self._core = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.name = name
        self._engaged = False
        self._readable = True

    def engaged(self) -> bool:
        try:
            body = call_json(self._core.read_namespaced_config_map, self.name, self.namespace)
            value = (body.get("data") or {}).get(KEY)
            engaged = value is not None and str(value).strip().lower() not in ("false", "")
        except ApiException as exc:
            if exc.status == HTTP_NOT_FOUND:
                engaged = False
            else:
                return self._unreadable(f"HTTP {exc.status} {exc.reason}")
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            return self._unreadable(f"{type(exc).__name__}: {exc}")
        if not self._readable:
            log.info("kill switch ConfigMap %s/%s readable again", self.namespace, self.name)
            self._readable = True
        if engaged != self._engaged:
            if engaged:
                log.warning("kill switch engaged (ConfigMap %s/%s, %s: %r): pauses and undos become alerts",
                            self.namespace, self.name, KEY, value)
            else:
                log.warning("kill switch lifted (ConfigMap %s/%s): acting again", self.namespace, self.name)
        self._engaged = engaged
        return engaged

    def _unreadable(self, why: str) -> bool:
        level = logging.WARNING if self._readable else logging.DEBUG
        log.log(level, "kill switch ConfigMap %s/%s unreadable (%s): keeping its last state (%s)",
                self.namespace, self.name, why, "engaged" if self._engaged else "not engaged")
        self._readable = False
        return self._engaged
