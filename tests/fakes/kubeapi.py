"""An in-process fake Kubernetes API server, faithful enough for `kubernetes.client` and `kubectl`.

Why a fake: no real API server can run in the test environment, yet the daemon under test must run the very
same code against a real cluster. So this speaks real HTTP on 127.0.0.1 (a free port, a background thread),
with the real paths, verbs, patch content types, status codes and `Status` bodies, and simulates the part of
kube-controller-manager's deployment controller that rollouts depend on (ReplicaSets, revisions, pods).

Replica movement is driven explicitly by tests (`controller.step()` / `controller.settle()`): no timers, so
tests are deterministic. The controller reacts synchronously to every write to a Deployment, so e.g. after
`kubectl rollout undo` returns, the Deployment already carries its new revision.

See `FakeKubeAPI` for the test-facing API; the module docstring of `tests/fixtures/kube.py` lists what differs
from a real API server.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import copy
import dataclasses
import datetime as dt
import http.server
import json
import os
import random
import re
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonpatch
import yaml

JSON = dict[str, Any]

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
SERVER_VERSION: JSON = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-fake",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2024-12-11T00:00:00Z",
    "goVersion": "go1.23.4",
    "compiler": "gc",
    "platform": "linux/amd64",
}

REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
REVISION_HISTORY_ANNOTATION = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS_ANNOTATION = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS_ANNOTATION = "deployment.kubernetes.io/max-replicas"
POD_TEMPLATE_HASH_LABEL = "pod-template-hash"
LAST_APPLIED_ANNOTATION = "kubectl.kubernetes.io/last-applied-configuration"
# Annotations the deployment controller never copies from a Deployment onto its ReplicaSets.
_ANNOTATIONS_TO_SKIP = frozenset(
    {
        LAST_APPLIED_ANNOTATION,
        REVISION_ANNOTATION,
        REVISION_HISTORY_ANNOTATION,
        DESIRED_REPLICAS_ANNOTATION,
        MAX_REPLICAS_ANNOTATION,
        "deprecated.deployment.rollback.to",
    }
)
# Alphabet of k8s.io/apimachinery/pkg/util/rand (no vowels, so no accidental words).
_SAFE_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"
# Who writes: only USER writes (HTTP requests and FakeKubeAPI helpers) trigger the controller's reactions
# (the others are the controller itself and the garbage collector); only HTTP writes get injected conflicts.
USER = "user"
CONTROLLER = "controller"
GC = "garbage-collector"


# ----------------------------------------------------------------------------------------------------------
# Errors: every failure is a metav1.Status body, as the real server sends.


class ApiError(Exception):
    """A failure the real API server reports with this HTTP code and `Status` body."""

    def __init__(self, code: int, reason: str, message: str, details: JSON | None = None) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> JSON:
        """The `Status` object to send."""
        body: JSON = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(res: Resource, name: str) -> JSON:
    details: JSON = {"name": name, "kind": res.plural}
    if res.group:
        details["group"] = res.group
    return details


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def not_found(res: Resource, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{res.group_resource} "{name}" not found', _details(res, name))


def already_exists(res: Resource, name: str) -> ApiError:
    return ApiError(
        409, "AlreadyExists", f'{res.group_resource} "{name}" already exists', _details(res, name)
    )


def conflict(res: Resource, name: str, why: str | None = None) -> ApiError:
    why = why or "the object has been modified; please apply your changes to the latest version and try again"
    message = f'Operation cannot be fulfilled on {res.group_resource} "{name}": {why}'
    return ApiError(409, "Conflict", message, _details(res, name))


def invalid(res: Resource, name: str, causes: list[tuple[str, str]]) -> ApiError:
    """422 Invalid with field causes `(field, message)`, formatted like apimachinery's NewInvalid."""
    texts = [f"{field}: {message}" for field, message in causes]
    summary = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    kind = f"{res.kind}.{res.group}" if res.group else res.kind
    details = {
        "name": name,
        "kind": res.kind,
        "causes": [{"reason": "FieldValueInvalid", "message": m, "field": f} for f, m in causes],
    }
    if res.group:
        details["group"] = res.group
    return ApiError(422, "Invalid", f'{kind} "{name}" is invalid: {summary}', details)


# ----------------------------------------------------------------------------------------------------------
# The resources served.


@dataclasses.dataclass(frozen=True)
class Resource:
    """One REST resource of one group version."""

    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    status_subresource: bool = False
    scale_subresource: bool = False
    tracks_generation: bool = False
    create_on_update: bool = False
    delete_returns_object: bool = False
    storage: str = ""
    categories: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def key(self) -> str:
        """Storage key: two group versions sharing storage (the two Event APIs) share it."""
        return self.storage or self.group_resource


VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
NAMESPACES = Resource(
    "", "v1", "namespaces", "namespace", "Namespace", False, ("ns",), status_subresource=True
)
PODS = Resource(
    "",
    "v1",
    "pods",
    "pod",
    "Pod",
    True,
    ("po",),
    status_subresource=True,
    delete_returns_object=True,
    categories=("all",),
)
CORE_EVENTS = Resource(
    "", "v1", "events", "event", "Event", True, ("ev",), create_on_update=True, storage="events"
)
DEPLOYMENTS = Resource(
    "apps",
    "v1",
    "deployments",
    "deployment",
    "Deployment",
    True,
    ("deploy",),
    status_subresource=True,
    scale_subresource=True,
    tracks_generation=True,
    categories=("all",),
)
REPLICASETS = Resource(
    "apps",
    "v1",
    "replicasets",
    "replicaset",
    "ReplicaSet",
    True,
    ("rs",),
    status_subresource=True,
    scale_subresource=True,
    tracks_generation=True,
    categories=("all",),
)
LEASES = Resource("coordination.k8s.io", "v1", "leases", "lease", "Lease", True)
ROLLOUTS = Resource(
    # Argo Rollouts' CRD (manifests/crds/rollout-crd.yaml): status and scale subresources; as for every custom
    # resource, no strategic merge patch (415) and no defaulting beyond the schema's.
    "argoproj.io",
    "v1alpha1",
    "rollouts",
    "rollout",
    "Rollout",
    True,
    ("ro",),
    status_subresource=True,
    scale_subresource=True,
    tracks_generation=True,
    categories=("all",),
)
EVENTS_V1 = Resource("events.k8s.io", "v1", "events", "event", "Event", True, ("ev",), storage="events")
CONFIGMAPS = Resource("", "v1", "configmaps", "configmap", "ConfigMap", True, ("cm",))
RESOURCES: tuple[Resource, ...] = (
    NAMESPACES, PODS, CORE_EVENTS, DEPLOYMENTS, REPLICASETS, LEASES, EVENTS_V1, CONFIGMAPS, ROLLOUTS,
)
# Preferred group order, as a real server lists them in /apis.
GROUP_VERSIONS: tuple[tuple[str, str], ...] = (
    ("apps", "v1"),
    ("events.k8s.io", "v1"),
    ("coordination.k8s.io", "v1"),
    ("argoproj.io", "v1alpha1"),
)


def find_resource(api_version: str, kind_or_plural: str) -> Resource:
    """The resource of `api_version` named by its Kind (`Deployment`) or plural (`deployments`)."""
    wanted = kind_or_plural.lower()
    for res in RESOURCES:
        if res.api_version == api_version and wanted in (res.kind.lower(), res.plural, res.singular):
            return res
    raise KeyError(f"the fake API server does not serve {kind_or_plural} in {api_version}")


def _resource_by_kind(kind_or_plural: str) -> Resource:
    wanted = kind_or_plural.lower()
    for res in RESOURCES:
        if wanted in (res.kind.lower(), res.plural, res.singular, res.group_resource):
            return res
    raise KeyError(f"the fake API server does not serve {kind_or_plural}")


# ----------------------------------------------------------------------------------------------------------
# Small helpers.


def _rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _human_duration(seconds: float) -> str:
    """apimachinery's duration.HumanDuration, as used for the AGE column."""
    s = int(max(seconds, 0))
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    return f"{hours // 24 // 365}y"


def strip_none(value: Any) -> Any:
    """Drop `null` map values, as decoding into Go structs does."""
    if isinstance(value, dict):
        return {k: strip_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [strip_none(v) for v in value]
    return value


def prune(value: Any) -> Any:
    """Normal form for semantic equality: `null`, `{}` and `[]` equal absence (apimachinery's Semantic)."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            pv = prune(v)
            if pv is None or pv == {} or pv == []:
                continue
            out[k] = pv
        return out
    if isinstance(value, list):
        return [prune(v) for v in value]
    return value


MAX_GENERATED_NAME_PREFIX = 63 - 5
"""apiserver `names.SimpleNameGenerator`: a generateName longer than this is cut before the 5 random characters."""


def generate_name(base: str, rng: random.Random) -> str:
    """A name from generateName, as the API server makes it: the base cut to 58 characters, 5 random ones."""
    return base[:MAX_GENERATED_NAME_PREFIX] + "".join(rng.choice(_SAFE_ALPHANUMS) for _ in range(5))


def fnv32a(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h ^= b
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def safe_encode(text: str) -> str:
    """apimachinery's rand.SafeEncodeString."""
    return "".join(_SAFE_ALPHANUMS[ord(c) % len(_SAFE_ALPHANUMS)] for c in text)


def template_without_hash(template: JSON) -> JSON:
    """The pod template in normal form, without the `pod-template-hash` label (equalIgnoreHash)."""
    tpl = copy.deepcopy(template)
    labels = tpl.get("metadata", {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(POD_TEMPLATE_HASH_LABEL, None)
    return prune(tpl)


def pod_template_hash(template: JSON, collision_count: int = 0) -> str:
    """A stable short hash of a pod template: FNV-32a then SafeEncodeString, shaped like the real one."""
    data = json.dumps(template_without_hash(template), sort_keys=True, separators=(",", ":"))
    if collision_count:
        data += str(collision_count)
    return safe_encode(str(fnv32a(data.encode())))


def _meta(obj: JSON) -> JSON:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = {}
        obj["metadata"] = meta
    return meta


def _dig(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def _revision(obj: JSON) -> int:
    try:
        return int(obj.get("metadata", {}).get("annotations", {}).get(REVISION_ANNOTATION, "0"))
    except ValueError:
        return 0


def _int_or_percent(value: Any, total: int, round_up: bool) -> int:
    if isinstance(value, int):
        return value
    text = str(value)
    if text.endswith("%"):
        pct = int(text[:-1])
        exact = pct * total
        return -(-exact // 100) if round_up else exact // 100
    return int(text)


# ----------------------------------------------------------------------------------------------------------
# Label and field selectors.


@dataclasses.dataclass(frozen=True)
class Requirement:
    """One term of a label selector."""

    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!", ">", "<"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if not present:
            return False
        try:
            number = int(value or "")
        except ValueError:
            return False
        return number > int(self.values[0]) if self.op == ">" else number < int(self.values[0])


_KEY = r"[A-Za-z0-9](?:[A-Za-z0-9._/-]*[A-Za-z0-9])?"
_VALUE = r"(?:[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)?"
_SET_TERM = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s*\(([^()]*)\)\s*$")
_OP_TERM = re.compile(rf"^\s*({_KEY})\s*(==|=|!=|>|<)\s*({_VALUE})\s*$")
_NOT_TERM = re.compile(rf"^\s*!\s*({_KEY})\s*$")
_EXISTS_TERM = re.compile(rf"^\s*({_KEY})\s*$")


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def parse_label_selector(text: str | None) -> list[Requirement]:
    """Parse the `labelSelector` query syntax (=, ==, !=, in, notin, exists, !key, gt/lt)."""
    if not text or not text.strip():
        return []
    reqs = []
    for term in _split_top_level(text):
        if m := _SET_TERM.match(term):
            values = tuple(v.strip() for v in m.group(3).split(",") if v.strip())
            if not values:
                raise bad_request(f"unable to parse requirement: values for {m.group(1)} must be non-empty")
            reqs.append(Requirement(m.group(1), m.group(2), values))
        elif m := _OP_TERM.match(term):
            op = "=" if m.group(2) == "==" else m.group(2)
            if op in (">", "<") and not re.fullmatch(r"-?\d+", m.group(3)):
                raise bad_request(f"unable to parse requirement: {m.group(3)!r} is not an integer")
            reqs.append(Requirement(m.group(1), op, (m.group(3),)))
        elif m := _NOT_TERM.match(term):
            reqs.append(Requirement(m.group(1), "!"))
        elif m := _EXISTS_TERM.match(term):
            reqs.append(Requirement(m.group(1), "exists"))
        else:
            raise bad_request(f"unable to parse requirement: invalid label selector term {term.strip()!r}")
    return reqs


def label_selector_requirements(selector: JSON | None) -> list[Requirement]:
    """A metav1.LabelSelector (matchLabels/matchExpressions) as requirements."""
    selector = selector or {}
    reqs = [Requirement(k, "=", (str(v),)) for k, v in sorted((selector.get("matchLabels") or {}).items())]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expr in selector.get("matchExpressions") or []:
        reqs.append(Requirement(expr["key"], ops[expr["operator"]], tuple(expr.get("values") or ())))
    return reqs


def format_requirements(reqs: Iterable[Requirement]) -> str:
    """Requirements back to selector syntax (as LabelSelectorAsSelector(...).String())."""
    out = []
    for r in reqs:
        if r.op == "exists":
            out.append(r.key)
        elif r.op == "!":
            out.append(f"!{r.key}")
        elif r.op in ("in", "notin"):
            out.append(f"{r.key} {r.op} ({','.join(sorted(r.values))})")
        else:
            out.append(f"{r.key}{r.op}{r.values[0]}")
    return ",".join(out)


def labels_match(reqs: Iterable[Requirement], labels: Mapping[str, str] | None) -> bool:
    labels = labels or {}
    return all(r.matches(labels) for r in reqs)


def parse_field_selector(text: str | None) -> list[tuple[str, bool, str]]:
    """Parse `fieldSelector` into `(path, equal, value)` terms (=, ==, !=)."""
    if not text or not text.strip():
        return []
    terms = []
    for term in text.split(","):
        m = re.fullmatch(r"\s*([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*?)\s*", term)
        if not m:
            raise bad_request(f"invalid field selector: {term!r}")
        terms.append((m.group(1), m.group(2) != "!=", m.group(3)))
    return terms


def fields_match(terms: Iterable[tuple[str, bool, str]], obj: JSON) -> bool:
    for path, equal, value in terms:
        actual = _dig(obj, path)
        if isinstance(actual, bool):
            actual = "true" if actual else "false"
        text = "" if actual is None else str(actual)
        if (text == value) != equal:
            return False
    return True


# ----------------------------------------------------------------------------------------------------------
# Patches.


def json_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = json_merge_patch(result.get(key), value)
    return result


# patchMergeKey of the list fields of the types served here (k8s.io/api struct tags).
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "ports": "containerPort",
    "conditions": "type",
    "ownerReferences": "uid",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
    "containerStatuses": "name",
}
_PRIMITIVE_MERGE_LISTS = frozenset({"finalizers"})
_DELETE = object()


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _strip_directives(v)
            for k, v in value.items()
            if not (k.startswith("$") or k.startswith("$setElementOrder/")) and v is not None
        }
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


def strategic_merge_patch(original: Any, patch: Any) -> Any:
    """A strategic merge patch subset: maps merge, `null` deletes, keyed lists (containers by name...) merge,
    `$patch: replace|delete` and `$deleteFromPrimitiveList/` directives; other lists replace."""
    result = _smp_map(original, patch)
    return {} if result is _DELETE else result


def _smp_map(original: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return _strip_directives(patch)
    if directive == "delete":
        return _DELETE
    result = copy.deepcopy(original) if isinstance(original, dict) else {}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list):
                result[field] = [x for x in result[field] if x not in (value or [])]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            merged = _smp_map(result.get(key), value)
            if merged is _DELETE:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _smp_list(result.get(key), value, key)
        else:
            result[key] = value
    return result


def _smp_list(original: Any, patch: list[Any], field: str) -> list[Any]:
    if any(isinstance(x, dict) and x.get("$patch") == "replace" for x in patch):
        return [_strip_directives(x) for x in patch if not (isinstance(x, dict) and x.get("$patch"))]
    merge_key = _MERGE_KEYS.get(field)
    if merge_key is None:
        if field in _PRIMITIVE_MERGE_LISTS and isinstance(original, list):
            return original + [x for x in patch if x not in original]
        return _strip_directives(patch)
    result = copy.deepcopy(original) if isinstance(original, list) else []
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            result.append(_strip_directives(item))
            continue
        index = next(
            (i for i, x in enumerate(result) if isinstance(x, dict) and x.get(merge_key) == item[merge_key]),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
        elif index is None:
            result.append(_strip_directives(item))
        else:
            result[index] = _smp_map(result[index], item)
    return result


def apply_json_patch(document: JSON, operations: Any) -> Any:
    """RFC 6902 via the `jsonpatch` package; decode errors are 400, failed application (test op...) 422."""
    if not isinstance(operations, list):
        raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    try:
        patch = jsonpatch.JsonPatch(operations)
        return patch.apply(copy.deepcopy(document))
    except jsonpatch.InvalidJsonPatch as exc:
        raise bad_request(str(exc)) from exc
    except (
        jsonpatch.JsonPatchException,
        jsonpatch.JsonPointerException,
        KeyError,
        IndexError,
        TypeError,
    ) as exc:
        raise ApiError(
            422,
            "Invalid",
            "the server rejected our request due to an error in our request",
            {"causes": [{"message": f"jsonpatch failed: {exc}"}]},
        ) from exc


# ----------------------------------------------------------------------------------------------------------
# Defaulting and validation, as the real registry strategies do on every write.


def _default_pod_spec(spec: JSON) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for field in ("containers", "initContainers"):
        for container in spec.get(field) or []:
            if not isinstance(container, dict):
                continue
            container.setdefault("resources", {})
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("terminationMessagePolicy", "File")
            image = str(container.get("image", ""))
            tag = image.rsplit("/", 1)[-1]
            latest = "@" not in image and (":" not in tag or tag.endswith(":latest"))
            container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
            for port in container.get("ports") or []:
                if isinstance(port, dict):
                    port.setdefault("protocol", "TCP")


def _default_template(template: JSON) -> None:
    meta = template.setdefault("metadata", {})
    if isinstance(meta, dict):
        meta.setdefault("creationTimestamp", None)
    spec = template.setdefault("spec", {})
    if isinstance(spec, dict):
        _default_pod_spec(spec)


def apply_defaults(res: Resource, obj: JSON) -> None:
    """The defaults the real API server fills in (the subset these kinds need)."""
    if res in (DEPLOYMENTS, REPLICASETS):
        spec = obj.setdefault("spec", {})
        spec.setdefault("replicas", 1)
        if res is DEPLOYMENTS:
            strategy = spec.setdefault("strategy", {})
            strategy.setdefault("type", "RollingUpdate")
            if strategy["type"] == "RollingUpdate":
                rolling = strategy.setdefault("rollingUpdate", {})
                rolling.setdefault("maxUnavailable", "25%")
                rolling.setdefault("maxSurge", "25%")
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault("progressDeadlineSeconds", 600)
        if isinstance(spec.get("template"), dict):
            _default_template(spec["template"])
    elif res is PODS:
        spec = obj.setdefault("spec", {})
        _default_pod_spec(spec)
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("serviceAccountName", "default")
        spec.setdefault("serviceAccount", spec["serviceAccountName"])
        spec.setdefault("priority", 0)
        spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    elif res is NAMESPACES:
        name = obj.get("metadata", {}).get("name")
        if name:
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        obj.setdefault("status", {}).setdefault("phase", "Active")


_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _validate_pod_spec(spec: Any, path: str, causes: list[tuple[str, str]]) -> None:
    if not isinstance(spec, dict):
        causes.append((path, "Required value"))
        return
    containers = spec.get("containers")
    if not containers or not isinstance(containers, list):
        causes.append((f"{path}.containers", "Required value"))
        return
    for i, container in enumerate(containers):
        if not isinstance(container, dict) or not container.get("name"):
            causes.append((f"{path}.containers[{i}].name", "Required value"))
        elif not _DNS_LABEL.match(str(container["name"])):
            causes.append(
                (
                    f"{path}.containers[{i}].name",
                    f'Invalid value: "{container["name"]}": a lowercase '
                    "RFC 1123 label must consist of lower case alphanumeric characters or '-'",
                )
            )
        if isinstance(container, dict) and not container.get("image"):
            causes.append((f"{path}.containers[{i}].image", "Required value"))


def validate(res: Resource, obj: JSON, old: JSON | None) -> None:
    """Raise 422 Invalid for what the real validation would reject (the obvious cases)."""
    meta = obj.get("metadata", {})
    name = str(meta.get("name", ""))
    causes: list[tuple[str, str]] = []
    pattern = _DNS_LABEL if res is NAMESPACES else _DNS_SUBDOMAIN
    if not name:
        causes.append(("metadata.name", "Required value: name or generateName is required"))
    elif len(name) > (63 if res is NAMESPACES else 253) or not pattern.match(name):
        causes.append(
            (
                "metadata.name",
                f'Invalid value: "{name}": a lowercase RFC 1123 '
                f"{'label' if res is NAMESPACES else 'subdomain'} must consist of lower case alphanumeric "
                "characters, '-' or '.', and must start and end with an alphanumeric character",
            )
        )
    for field in ("labels", "annotations"):
        if field in meta and not isinstance(meta[field], dict):
            causes.append((f"metadata.{field}", "Invalid value: must be a map of strings"))
        for k, v in (meta.get(field) or {}).items() if isinstance(meta.get(field), dict) else ():
            if not isinstance(v, str):
                causes.append((f"metadata.{field}.{k}", f"Invalid value: {v!r}: must be a string"))
    if res is CONFIGMAPS:
        data = obj.get("data")
        if data is not None and not isinstance(data, dict):
            causes.append(("data", "Invalid value: must be a map of strings"))
        for k, v in data.items() if isinstance(data, dict) else ():
            if not isinstance(v, str):
                causes.append((f"data[{k}]", f"Invalid value: {v!r}: must be a string"))
    if res in (DEPLOYMENTS, REPLICASETS):
        spec = obj.get("spec")
        spec = spec if isinstance(spec, dict) else {}
        replicas = spec.get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            causes.append(
                ("spec.replicas", f"Invalid value: {replicas!r}: must be greater than or equal to 0")
            )
        selector = spec.get("selector")
        template = spec.get("template") if isinstance(spec.get("template"), dict) else {}
        if not isinstance(selector, dict):
            causes.append(("spec.selector", "Required value"))
        elif not selector.get("matchLabels") and not selector.get("matchExpressions"):
            causes.append(("spec.selector", "Invalid value: empty selector is invalid for deployment"))
        else:
            try:
                reqs = label_selector_requirements(selector)
            except (KeyError, TypeError):
                causes.append(("spec.selector", "Invalid value: malformed selector"))
                reqs = []
            tpl_labels = (template.get("metadata") or {}).get("labels") or {}
            if reqs and not labels_match(reqs, tpl_labels):
                causes.append(
                    (
                        "spec.template.metadata.labels",
                        f"Invalid value: {json.dumps(tpl_labels)}: "
                        "`selector` does not match template `labels`",
                    )
                )
        _validate_pod_spec(template.get("spec"), "spec.template.spec", causes)
        strategy = spec.get("strategy") or {}
        rolling = strategy.get("rollingUpdate") or {}
        if res is DEPLOYMENTS and strategy.get("type") == "RollingUpdate":
            try:
                surge = _int_or_percent(rolling.get("maxSurge", 0), 100, True)
                unavailable = _int_or_percent(rolling.get("maxUnavailable", 0), 100, False)
            except ValueError:
                causes.append(
                    ("spec.strategy.rollingUpdate", "Invalid value: must be an integer or percentage")
                )
            else:
                if surge == 0 and unavailable == 0:
                    causes.append(
                        (
                            "spec.strategy.rollingUpdate.maxUnavailable",
                            "Invalid value: 0: may not be 0 when `maxSurge` is 0",
                        )
                    )
        if old is not None and prune(old.get("spec", {}).get("selector")) != prune(selector):
            causes.append(("spec.selector", f"Invalid value: {json.dumps(selector)}: field is immutable"))
    elif res is PODS:
        _validate_pod_spec(obj.get("spec"), "spec", causes)
    elif res is CORE_EVENTS:
        involved = obj.get("involvedObject")
        if (
            isinstance(involved, dict)
            and involved.get("namespace")
            and involved["namespace"] != meta.get("namespace")
        ):
            causes.append(("involvedObject.namespace", "Invalid value: does not match event.namespace"))
        if obj.get("type") and obj["type"] not in ("Normal", "Warning"):
            causes.append(
                ("type", f'Unsupported value: "{obj["type"]}": supported values: "Normal", "Warning"')
            )
    if causes:
        raise invalid(res, name, causes)


def validate_events_v1(obj: JSON) -> None:
    """events.k8s.io/v1 create validation (stricter than core/v1)."""
    causes: list[tuple[str, str]] = []
    if not obj.get("eventTime"):
        causes.append(("eventTime", "Required value"))
    for field in ("reportingController", "reportingInstance", "action", "reason"):
        if not obj.get(field):
            causes.append((field, "Required value"))
    if obj.get("type") not in ("Normal", "Warning"):
        causes.append(
            ("type", f'Unsupported value: "{obj.get("type", "")}": supported values: "Normal", "Warning"')
        )
    if len(str(obj.get("note", ""))) > 1024:
        causes.append(("note", "Too long: must have at most 1024 bytes"))
    if causes:
        raise invalid(EVENTS_V1, str(obj.get("metadata", {}).get("name", "")), causes)


# events.k8s.io/v1 field <-> core/v1 field; both APIs share one storage, in core form here.
_EVENT_FIELDS = {
    "regarding": "involvedObject",
    "note": "message",
    "reportingController": "reportingComponent",
    "reportingInstance": "reportingInstance",
    "deprecatedSource": "source",
    "deprecatedFirstTimestamp": "firstTimestamp",
    "deprecatedLastTimestamp": "lastTimestamp",
    "deprecatedCount": "count",
    "eventTime": "eventTime",
    "series": "series",
    "action": "action",
    "reason": "reason",
    "related": "related",
    "type": "type",
}


def to_storage(res: Resource, obj: JSON) -> JSON:
    """Convert an object of `res`'s group version to the stored form."""
    if res is not EVENTS_V1:
        out = dict(obj)
        out["apiVersion"], out["kind"] = res.api_version, res.kind
        return out
    out = {"apiVersion": "v1", "kind": "Event", "metadata": obj.get("metadata", {})}
    for new, old in _EVENT_FIELDS.items():
        if new in obj:
            out[old] = obj[new]
    return out


def from_storage(res: Resource, obj: JSON) -> JSON:
    """Render a stored object in `res`'s group version (a new copy)."""
    obj = copy.deepcopy(obj)
    if res is CORE_EVENTS:
        obj.setdefault("eventTime", None)
        obj.setdefault("firstTimestamp", None)
        obj.setdefault("lastTimestamp", None)
        obj.setdefault("reportingComponent", "")
        obj.setdefault("reportingInstance", "")
        obj.setdefault("involvedObject", {})
        obj.setdefault("source", {})
    if res is not EVENTS_V1:
        return obj
    out: JSON = {"apiVersion": EVENTS_V1.api_version, "kind": "Event", "metadata": obj.get("metadata", {})}
    for new, old in _EVENT_FIELDS.items():
        if old in obj and obj[old] not in (None, "", {}):
            out[new] = obj[old]
    out.setdefault("eventTime", None)
    return out


# ----------------------------------------------------------------------------------------------------------
# The object store, with the real write pipeline.


@dataclasses.dataclass
class WatchEvent:
    """One committed change, kept in a bounded history for watches."""

    rv: int
    type: str
    key: str
    obj: JSON
    old: JSON | None


@dataclasses.dataclass
class RecordedRequest:
    """One HTTP request the fake served (for assertions such as "exactly one PATCH")."""

    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str | None
    body: Any
    status: int = 0
    user_agent: str = ""


class KubeState:
    """All objects, the global resourceVersion, watch history and the write pipeline (thread-safe)."""

    def __init__(self, *, history_size: int, clock: Callable[[], dt.datetime], rng: random.Random) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.clock = clock
        self.rng = rng
        self.rv = 1000
        self.objects: dict[str, dict[tuple[str, str], JSON]] = collections.defaultdict(dict)
        self.history: collections.deque[WatchEvent] = collections.deque(maxlen=history_size)
        self.compacted_rv = 0
        self.conflicts: dict[tuple[str, str, str], int] = {}
        self.on_write: Callable[[Resource, str, JSON, JSON | None], None] | None = None
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.create(NAMESPACES, "", {"metadata": {"name": ns}}, actor=CONTROLLER)

    # --- reading

    def raw(self, res: Resource, namespace: str, name: str) -> JSON | None:
        """The stored object itself (callers must hold the lock and not mutate it)."""
        return self.objects[res.key].get((namespace if res.namespaced else "", name))

    def get(self, res: Resource, namespace: str, name: str) -> JSON:
        with self.lock:
            obj = self.raw(res, namespace, name)
            if obj is None:
                raise not_found(res, name)
            return from_storage(res, obj)

    def list(
        self,
        res: Resource,
        namespace: str | None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[JSON], int]:
        """Matching objects sorted by namespace/name, and the list's resourceVersion."""
        reqs = parse_label_selector(label_selector)
        fields = parse_field_selector(field_selector)
        with self.lock:
            items = []
            for (ns, _name), obj in sorted(self.objects[res.key].items()):
                if namespace and ns != namespace:
                    continue
                view = from_storage(res, obj)
                if labels_match(reqs, view["metadata"].get("labels")) and fields_match(fields, view):
                    items.append(view)
            return items, self.rv

    def owned_by(
        self, res: Resource, namespace: str, owner_uid: str, controller_only: bool = True
    ) -> list[JSON]:
        """Stored objects of `res` with an ownerReference to `owner_uid` (raw; hold the lock)."""
        out = []
        for (ns, _name), obj in sorted(self.objects[res.key].items()):
            if res.namespaced and ns != namespace:
                continue
            for ref in obj["metadata"].get("ownerReferences") or []:
                if ref.get("uid") == owner_uid and (ref.get("controller") or not controller_only):
                    out.append(obj)
                    break
        return out

    # --- committing

    def _commit(self, res: Resource, etype: str, obj: JSON, old: JSON | None) -> JSON:
        self.rv += 1
        meta = obj["metadata"]
        meta["resourceVersion"] = str(self.rv)
        ns = meta.get("namespace", "") if res.namespaced else ""
        if etype == "DELETED":
            self.objects[res.key].pop((ns, meta["name"]), None)
        else:
            self.objects[res.key][(ns, meta["name"])] = obj
        if self.history.maxlen is not None and len(self.history) == self.history.maxlen:
            self.compacted_rv = self.history[0].rv
        self.history.append(WatchEvent(self.rv, etype, res.key, copy.deepcopy(obj), copy.deepcopy(old)))
        self.changed.notify_all()
        return obj

    def _check_injected_conflict(self, res: Resource, namespace: str, name: str, actor: str) -> None:
        if actor != USER:
            return
        key = (res.key, namespace if res.namespaced else "", name)
        left = self.conflicts.get(key, 0)
        if left > 0:
            self.conflicts[key] = left - 1
            raise conflict(res, name)

    def _after_write(self, res: Resource, etype: str, obj: JSON, old: JSON | None, actor: str) -> None:
        if actor == USER and self.on_write is not None:
            self.on_write(res, etype, obj, old)

    def _require_namespace(self, res: Resource, namespace: str) -> None:
        if res.namespaced and self.raw(NAMESPACES, "", namespace) is None:
            raise not_found(NAMESPACES, namespace)

    # --- create

    def create(
        self,
        res: Resource,
        namespace: str,
        body: JSON,
        *,
        dry_run: bool = False,
        keep_status: bool = False,
        actor: str = USER,
    ) -> JSON:
        """POST: 201 semantics; 409 AlreadyExists; 404 if the namespace is missing; 422 if invalid."""
        if not isinstance(body, dict):
            raise bad_request("the body of the request must be a JSON object")
        with self.lock:
            body_ns = (body.get("metadata") or {}).get("namespace")
            if res.namespaced and body_ns and body_ns != namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            self._check_kind(res, body)
            if res is EVENTS_V1:
                validate_events_v1(body)
            obj = to_storage(res, strip_none(copy.deepcopy(body)))
            stored_res = CORE_EVENTS if res is EVENTS_V1 else res
            meta = _meta(obj)
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = generate_name(meta["generateName"], self.rng)
            name = str(meta.get("name", ""))
            if res.namespaced:
                meta["namespace"] = namespace
                self._require_namespace(res, namespace)
            else:
                meta.pop("namespace", None)
            if name and self.raw(res, namespace, name) is not None:
                raise already_exists(res, name)
            for field in (
                "resourceVersion",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "managedFields",
            ):
                meta.pop(field, None)
            meta["uid"] = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
            meta["creationTimestamp"] = _rfc3339(self.clock())
            if res.tracks_generation:
                meta["generation"] = 1
            else:
                meta.pop("generation", None)
            if res.status_subresource and not keep_status:
                obj["status"] = {"phase": "Pending"} if res is PODS else {}
            apply_defaults(stored_res, obj)
            validate(stored_res, obj, None)
            if dry_run:
                return from_storage(res, obj)
            self._commit(res, "ADDED", obj, None)
            result = from_storage(res, obj)
            self._after_write(stored_res, "ADDED", obj, None, actor)
            return result

    @staticmethod
    def _check_kind(res: Resource, body: JSON) -> None:
        kind, api_version = body.get("kind"), body.get("apiVersion")
        if kind and kind != res.kind:
            raise bad_request(f"the kind in the data ({kind}) does not match the expected kind ({res.kind})")
        if api_version and api_version != res.api_version:
            raise bad_request(
                f"the API version in the data ({api_version}) does not match the expected API "
                f"version ({res.api_version})"
            )

    # --- update (PUT) and patch

    def replace(
        self,
        res: Resource,
        namespace: str,
        name: str,
        body: JSON,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
        actor: str = USER,
    ) -> JSON:
        """PUT: optimistic concurrency on `metadata.resourceVersion`; status subresource semantics."""
        if not isinstance(body, dict):
            raise bad_request("the body of the request must be a JSON object")
        with self.lock:
            self._check_kind(res, body)
            body_meta = body.get("metadata") or {}
            if body_meta.get("name") and body_meta["name"] != name:
                raise bad_request(
                    f"the name of the object ({body_meta['name']}) does not match the name on the URL "
                    f"({name})"
                )
            if res.namespaced and body_meta.get("namespace") and body_meta["namespace"] != namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            current = self.raw(res, namespace, name)
            if current is None:
                if res.create_on_update and subresource is None:
                    body = copy.deepcopy(body)
                    _meta(body)["name"] = name
                    return self.create(res, namespace, body, dry_run=dry_run, actor=actor)
                raise not_found(res, name)
            self._check_injected_conflict(res, namespace, name, actor)
            return self._update_locked(res, current, body, subresource, dry_run, actor)

    def _update_locked(
        self, res: Resource, current: JSON, body: JSON, subresource: str | None, dry_run: bool, actor: str
    ) -> JSON:
        name = current["metadata"]["name"]
        body_meta = body.get("metadata") or {}
        body_rv = body_meta.get("resourceVersion")
        if body_rv and str(body_rv) != current["metadata"]["resourceVersion"]:
            raise conflict(res, name)
        if body_meta.get("uid") and body_meta["uid"] != current["metadata"]["uid"]:
            raise conflict(
                res,
                name,
                f"Precondition failed: UID in precondition: {body_meta['uid']}, "
                f"UID in object meta: {current['metadata']['uid']}",
            )
        stored_res = CORE_EVENTS if res is EVENTS_V1 else res
        if subresource == "status":
            new = copy.deepcopy(current)
            new["status"] = strip_none(copy.deepcopy(body.get("status") or {}))
        else:
            new = to_storage(res, strip_none(copy.deepcopy(body)))
            if res.status_subresource:
                if "status" in current:
                    new["status"] = copy.deepcopy(current["status"])
                else:
                    new.pop("status", None)
        meta = _meta(new)
        old_meta = current["metadata"]
        for field in ("uid", "creationTimestamp", "name", "namespace", "generation", "deletionTimestamp"):
            if field in old_meta:
                meta[field] = old_meta[field]
            else:
                meta.pop(field, None)
        meta.pop("managedFields", None)
        apply_defaults(stored_res, new)
        if subresource != "status":
            validate(stored_res, new, current)
        if res.tracks_generation and prune(new.get("spec")) != prune(current.get("spec")):
            meta["generation"] = int(old_meta.get("generation", 0)) + 1
        meta["resourceVersion"] = old_meta["resourceVersion"]
        if new == current:
            # No-op writes are not persisted: same resourceVersion, no watch event (like the real server).
            return from_storage(res, current)
        if dry_run:
            return from_storage(res, new)
        self._commit(stored_res, "MODIFIED", new, current)
        result = from_storage(res, new)
        self._after_write(stored_res, "MODIFIED", new, current, actor)
        return result

    def patch(
        self,
        res: Resource,
        namespace: str,
        name: str,
        patch_type: str,
        patch: Any,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
        field_manager: str | None = None,
        actor: str = USER,
    ) -> JSON:
        """PATCH with json-patch, merge-patch, strategic-merge-patch or apply-patch (simplified SSA)."""
        with self.lock:
            current = self.raw(res, namespace, name)
            if patch_type == "apply":
                if not field_manager:
                    raise ApiError(
                        422,
                        "Invalid",
                        'PatchOptions.meta.k8s.io "" is invalid: fieldManager: '
                        "Required value: is required for apply patch",
                    )
                if current is None:
                    if not isinstance(patch, dict):
                        raise bad_request("apply patch must be an object")
                    return self.create(res, namespace, patch, dry_run=dry_run, actor=actor)
            if current is None:
                raise not_found(res, name)
            self._check_injected_conflict(res, namespace, name, actor)
            view = self.scale_view(res, current) if subresource == "scale" else from_storage(res, current)
            if patch_type == "json":
                patched = apply_json_patch(view, patch)
            elif patch_type == "merge":
                patched = json_merge_patch(view, patch)
            elif patch_type in ("strategic", "apply"):
                if res in (EVENTS_V1, ROLLOUTS) and patch_type == "strategic":
                    raise ApiError(415, "UnsupportedMediaType", "strategic merge patch is not supported")
                patched = strategic_merge_patch(view, patch)
            else:
                raise ApiError(415, "UnsupportedMediaType", f"unsupported patch type {patch_type}")
            if not isinstance(patched, dict):
                raise ApiError(422, "Invalid", "the server rejected our request: patch produced a non-object")
            patched_rv = (patched.get("metadata") or {}).get("resourceVersion")
            if patched_rv and str(patched_rv) != current["metadata"]["resourceVersion"]:
                raise conflict(res, name)
            if subresource == "scale":
                return self._apply_scale(res, current, patched, dry_run, actor)
            patched.setdefault("metadata", {})["resourceVersion"] = current["metadata"]["resourceVersion"]
            if patched["metadata"].get("name") != name:
                patched["metadata"]["name"] = name
            return self._update_locked(res, current, patched, subresource, dry_run, actor)

    # --- scale subresource

    def scale_view(self, res: Resource, obj: JSON) -> JSON:
        meta = obj["metadata"]
        selector = format_requirements(label_selector_requirements(obj.get("spec", {}).get("selector")))
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in meta
            },
            "spec": {"replicas": obj.get("spec", {}).get("replicas", 0)},
            "status": {"replicas": obj.get("status", {}).get("replicas", 0), "selector": selector},
        }

    def _apply_scale(self, res: Resource, current: JSON, scale: JSON, dry_run: bool, actor: str) -> JSON:
        replicas = (scale.get("spec") or {}).get("replicas", 0)
        if not isinstance(replicas, int) or replicas < 0:
            raise invalid(
                res,
                current["metadata"]["name"],
                [("spec.replicas", f"Invalid value: {replicas!r}: must be greater than or equal to 0")],
            )
        body = copy.deepcopy(current)
        body["spec"]["replicas"] = replicas
        updated = self._update_locked(res, current, body, None, dry_run, actor)
        return self.scale_view(res, updated)

    def replace_scale(self, res: Resource, namespace: str, name: str, body: JSON, actor: str = USER) -> JSON:
        with self.lock:
            current = self.raw(res, namespace, name)
            if current is None:
                raise not_found(res, name)
            self._check_injected_conflict(res, namespace, name, actor)
            body_rv = (body.get("metadata") or {}).get("resourceVersion")
            if body_rv and str(body_rv) != current["metadata"]["resourceVersion"]:
                raise conflict(res, name)
            return self._apply_scale(res, current, body, False, actor)

    # --- delete

    def delete(
        self,
        res: Resource,
        namespace: str,
        name: str,
        *,
        options: JSON | None = None,
        propagation: str | None = None,
        dry_run: bool = False,
        actor: str = USER,
    ) -> JSON:
        """DELETE: immediate (no graceful termination), then garbage collection of dependents."""
        options = options or {}
        with self.lock:
            current = self.raw(res, namespace, name)
            if current is None:
                raise not_found(res, name)
            self._check_injected_conflict(res, namespace, name, actor)
            pre = options.get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != current["metadata"]["uid"]:
                raise conflict(
                    res,
                    name,
                    f"Precondition failed: UID in precondition: {pre['uid']}, UID in object "
                    f"meta: {current['metadata']['uid']}",
                )
            if (
                pre.get("resourceVersion")
                and pre["resourceVersion"] != current["metadata"]["resourceVersion"]
            ):
                raise conflict(
                    res,
                    name,
                    "Precondition failed: ResourceVersion in precondition: "
                    f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                    f"{current['metadata']['resourceVersion']}",
                )
            if dry_run:
                return from_storage(res, current)
            stored_res = CORE_EVENTS if res is EVENTS_V1 else res
            gone = copy.deepcopy(current)
            self._commit(stored_res, "DELETED", gone, current)
            result = from_storage(res, gone)
            policy = propagation or options.get("propagationPolicy") or "Background"
            self._collect_dependents(current, policy)
            if res is NAMESPACES:
                for other in RESOURCES:
                    if other.namespaced and other is not EVENTS_V1:
                        for ns, obj_name in [k for k in self.objects[other.key] if k[0] == name]:
                            if (ns, obj_name) in self.objects[other.key]:
                                self.delete(other, ns, obj_name, actor=GC)
            self._after_write(stored_res, "DELETED", gone, current, actor)
            return result

    def _collect_dependents(self, owner: JSON, policy: str) -> None:
        """The garbage collector, synchronously: delete (or orphan) objects owned by `owner`."""
        uid = owner["metadata"]["uid"]
        namespace = owner["metadata"].get("namespace", "")
        for res in (REPLICASETS, PODS, DEPLOYMENTS, CORE_EVENTS, LEASES):
            for dep in self.owned_by(res, namespace, uid, controller_only=False):
                if policy == "Orphan":
                    body = copy.deepcopy(dep)
                    refs = [r for r in body["metadata"]["ownerReferences"] if r.get("uid") != uid]
                    body["metadata"]["ownerReferences"] = refs
                    self._update_locked(res, dep, body, None, False, GC)
                else:
                    if self.raw(res, namespace, dep["metadata"]["name"]) is not None:
                        self.delete(res, namespace, dep["metadata"]["name"], actor=GC)

    # --- watch support

    def events_since(self, rv: int) -> list[WatchEvent] | None:
        """History after `rv`, or None when `rv` is older than the retained history (410 Expired)."""
        if rv < self.compacted_rv:
            return None
        out = []
        for event in reversed(self.history):
            if event.rv <= rv:
                break
            out.append(event)
        out.reverse()
        return out


# ----------------------------------------------------------------------------------------------------------
# The deployment controller simulation.


def _set_condition(status: JSON, ctype: str, cstatus: str, reason: str, message: str, now: str) -> None:
    """deploymentutil.SetDeploymentCondition: same status and reason is a no-op; keeps transition time."""
    conditions = status.setdefault("conditions", [])
    current = next((c for c in conditions if c.get("type") == ctype), None)
    if current is not None and current.get("status") == cstatus and current.get("reason") == reason:
        return
    transition = (
        current["lastTransitionTime"] if current is not None and current.get("status") == cstatus else now
    )
    conditions[:] = [c for c in conditions if c.get("type") != ctype]
    conditions.append(
        {
            "type": ctype,
            "status": cstatus,
            "lastUpdateTime": now,
            "lastTransitionTime": transition,
            "reason": reason,
            "message": message,
        }
    )


def _condition(status: JSON, ctype: str) -> JSON | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == ctype), None)


class DeploymentController:
    """kube-controller-manager's deployment (and ReplicaSet) controller, as far as rollouts need.

    `sync()` runs synchronously after every user write to a Deployment or its ReplicaSets/pods: it creates or
    finds the new ReplicaSet, maintains revision annotations, and recomputes status/conditions. Replicas only
    move in `step()`: one ReplicaSet of each Deployment changes by one replica per call, in rolling-update
    order (new +1 within maxSurge, then oldest old -1 within maxUnavailable: 4 replicas at 25%/25% go
    new 1 / old 4, then 1/3, 2/3, 2/2...); each +1 creates a pod, each -1 deletes one; pods are Running and
    Ready at once.
    """

    def __init__(self, state: KubeState, *, emit_events: bool = True) -> None:
        self._state = state
        self._pod_ip = 0
        self.emit_events = emit_events

    def _event(self, obj: JSON, reason: str, message: str, component: str) -> None:
        """Record a core/v1 Event as the controllers' legacy event recorders do."""
        if not self.emit_events:
            return
        meta = obj["metadata"]
        now = self._now()
        name = f"{meta['name']}.{time.time_ns():x}"
        while self._state.raw(CORE_EVENTS, meta["namespace"], name) is not None:
            name = f"{meta['name']}.{time.time_ns() + self._state.rng.getrandbits(16):x}"
        event = {
            "metadata": {"name": name, "namespace": meta["namespace"]},
            "involvedObject": {
                "kind": obj["kind"],
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
                "apiVersion": obj["apiVersion"],
                "resourceVersion": meta["resourceVersion"],
            },
            "reason": reason,
            "message": message,
            "source": {"component": component},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "type": "Normal",
            "reportingComponent": component,
            "reportingInstance": "",
        }
        self._state.create(CORE_EVENTS, meta["namespace"], event, actor=CONTROLLER)

    # --- helpers

    def _now(self) -> str:
        return _rfc3339(self._state.clock())

    def _deployments(self, namespace: str | None, name: str | None) -> list[JSON]:
        with self._state.lock:
            out = []
            for (ns, dname), obj in sorted(self._state.objects[DEPLOYMENTS.key].items()):
                if (namespace is None or ns == namespace) and (name is None or dname == name):
                    out.append(obj)
            return out

    def _replica_sets(self, deployment: JSON) -> list[JSON]:
        meta = deployment["metadata"]
        rss = self._state.owned_by(REPLICASETS, meta["namespace"], meta["uid"])
        return sorted(
            rss, key=lambda rs: (_revision(rs), rs["metadata"]["creationTimestamp"], rs["metadata"]["name"])
        )

    def _find_new(self, deployment: JSON, rss: list[JSON]) -> JSON | None:
        wanted = template_without_hash(deployment["spec"]["template"])
        matching = [rs for rs in rss if template_without_hash(rs["spec"]["template"]) == wanted]
        if not matching:
            return None
        return min(matching, key=lambda rs: (rs["metadata"]["creationTimestamp"], rs["metadata"]["name"]))

    @staticmethod
    def _max_surge_unavailable(deployment: JSON) -> tuple[int, int]:
        spec = deployment["spec"]
        replicas = int(spec.get("replicas", 1))
        strategy = spec.get("strategy") or {}
        if strategy.get("type") != "RollingUpdate":
            return 0, 0
        rolling = strategy.get("rollingUpdate") or {}
        surge = _int_or_percent(rolling.get("maxSurge", "25%"), replicas, True)
        unavailable = _int_or_percent(rolling.get("maxUnavailable", "25%"), replicas, False)
        if surge == 0 and unavailable == 0:
            unavailable = 1
        return surge, min(unavailable, replicas)

    def _write_status(self, res: Resource, obj: JSON, status: JSON) -> JSON:
        meta = obj["metadata"]
        return self._state.replace(
            res,
            meta.get("namespace", ""),
            meta["name"],
            {"status": status},
            subresource="status",
            actor=CONTROLLER,
        )

    def _write(self, res: Resource, obj: JSON) -> JSON:
        meta = obj["metadata"]
        return self._state.replace(res, meta.get("namespace", ""), meta["name"], obj, actor=CONTROLLER)

    # --- reacting to writes

    def on_write(self, res: Resource, etype: str, obj: JSON, old: JSON | None) -> None:
        """Hook called by the store after each user write."""
        if res is DEPLOYMENTS and etype != "DELETED":
            self.sync(obj["metadata"]["namespace"], obj["metadata"]["name"])
        elif res is REPLICASETS:
            owner = self._controller_owner(obj, "Deployment")
            if owner is not None:
                self.sync(obj["metadata"]["namespace"], owner)
        elif res is PODS and etype == "DELETED":
            self._replace_deleted_pod(obj)

    @staticmethod
    def _controller_owner(obj: JSON, kind: str) -> str | None:
        for ref in obj["metadata"].get("ownerReferences") or []:
            if ref.get("controller") and ref.get("kind") == kind:
                return str(ref.get("name"))
        return None

    def _replace_deleted_pod(self, pod: JSON) -> None:
        """The ReplicaSet controller recreates a deleted pod of a ReplicaSet that still wants it."""
        rs_name = self._controller_owner(pod, "ReplicaSet")
        if rs_name is None:
            return
        with self._state.lock:
            rs = self._state.raw(REPLICASETS, pod["metadata"]["namespace"], rs_name)
            if rs is None or self._controller_owner(rs, "Deployment") is None:
                return
            if len(self._pods_of(rs)) < int(rs["spec"].get("replicas", 0)):
                self._create_pod(rs)

    # --- sync: new ReplicaSet, revisions, status

    def sync(self, namespace: str, name: str) -> None:
        """Reconcile one Deployment without moving replicas."""
        with self._state.lock:
            deployment = self._state.raw(DEPLOYMENTS, namespace, name)
            if deployment is None:
                return
            deployment = copy.deepcopy(deployment)
            rss = self._replica_sets(deployment)
            new_rs = self._find_new(deployment, rss)
            status = copy.deepcopy(deployment.get("status") or {})
            progress_deadline = deployment["spec"].get("progressDeadlineSeconds") is not None
            paused = bool(deployment["spec"].get("paused"))
            if new_rs is not None or not paused:
                old_rss = [rs for rs in rss if rs is not new_rs]
                new_revision = max((_revision(rs) for rs in old_rss), default=0) + 1
                if new_rs is None:
                    new_rs = self._create_replica_set(deployment, new_revision, status)
                    if progress_deadline:
                        _set_condition(
                            status,
                            "Progressing",
                            "True",
                            "NewReplicaSetCreated",
                            f'Created new replica set "{new_rs["metadata"]["name"]}"',
                            self._now(),
                        )
                else:
                    new_rs = self._sync_replica_set_annotations(deployment, new_rs, new_revision)
                    if progress_deadline and _condition(status, "Progressing") is None:
                        _set_condition(
                            status,
                            "Progressing",
                            "True",
                            "FoundNewReplicaSet",
                            f'Found new replica set "{new_rs["metadata"]["name"]}"',
                            self._now(),
                        )
                revision = new_rs["metadata"]["annotations"][REVISION_ANNOTATION]
                annotations = deployment["metadata"].setdefault("annotations", {})
                if annotations.get(REVISION_ANNOTATION) != revision:
                    annotations[REVISION_ANNOTATION] = revision
                    deployment = self._write(DEPLOYMENTS, deployment)
                rss = self._replica_sets(deployment)
                new_rs = next(rs for rs in rss if rs["metadata"]["uid"] == new_rs["metadata"]["uid"])
            new_status = self._calculate_status(deployment, rss, new_rs, status)
            if paused:
                self._paused_conditions(new_status)
            elif progress_deadline:
                self._rollout_conditions(deployment, new_status, new_rs)
            if new_status != deployment.get("status"):
                deployment = self._write_status(DEPLOYMENTS, deployment, new_status)
            if not paused and self._complete(deployment, deployment.get("status") or {}):
                self._cleanup(deployment, rss, new_rs)

    def _create_replica_set(self, deployment: JSON, revision: int, status: JSON) -> JSON:
        meta = deployment["metadata"]
        template = copy.deepcopy(deployment["spec"]["template"])
        collisions = int(status.get("collisionCount", 0))
        while True:
            pod_hash = pod_template_hash(template, collisions)
            name = f"{meta['name']}-{pod_hash}"
            existing = self._state.raw(REPLICASETS, meta["namespace"], name)
            if existing is None:
                break
            owned = any(
                r.get("uid") == meta["uid"] for r in existing["metadata"].get("ownerReferences") or []
            )
            if owned and template_without_hash(existing["spec"]["template"]) == template_without_hash(
                template
            ):
                return existing
            collisions += 1
            status["collisionCount"] = collisions
        template.setdefault("metadata", {}).setdefault("labels", {})[POD_TEMPLATE_HASH_LABEL] = pod_hash
        selector = copy.deepcopy(deployment["spec"]["selector"])
        selector.setdefault("matchLabels", {})[POD_TEMPLATE_HASH_LABEL] = pod_hash
        annotations = {
            k: v for k, v in (meta.get("annotations") or {}).items() if k not in _ANNOTATIONS_TO_SKIP
        }
        annotations.update(self._replica_annotations(deployment))
        annotations[REVISION_ANNOTATION] = str(revision)
        spec: JSON = {"replicas": 0, "selector": selector, "template": template}
        if deployment["spec"].get("minReadySeconds"):
            spec["minReadySeconds"] = deployment["spec"]["minReadySeconds"]
        rs = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": name,
                "namespace": meta["namespace"],
                "labels": dict(template["metadata"]["labels"]),
                "annotations": annotations,
                "ownerReferences": [self._owner_ref(deployment)],
            },
            "spec": spec,
        }
        created = self._state.create(REPLICASETS, meta["namespace"], rs, actor=CONTROLLER)
        self._write_status(REPLICASETS, created, {"replicas": 0, "observedGeneration": 1})
        return created

    def _replica_annotations(self, deployment: JSON) -> dict[str, str]:
        replicas = int(deployment["spec"].get("replicas", 1))
        surge, _ = self._max_surge_unavailable(deployment)
        return {DESIRED_REPLICAS_ANNOTATION: str(replicas), MAX_REPLICAS_ANNOTATION: str(replicas + surge)}

    @staticmethod
    def _owner_ref(owner: JSON) -> JSON:
        return {
            "apiVersion": owner["apiVersion"],
            "kind": owner["kind"],
            "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def _sync_replica_set_annotations(self, deployment: JSON, rs: JSON, new_revision: int) -> JSON:
        """SetNewReplicaSetAnnotations: copy annotations, bump the revision on rollback (keeping history)."""
        body = copy.deepcopy(rs)
        annotations = body["metadata"].setdefault("annotations", {})
        for key, value in (deployment["metadata"].get("annotations") or {}).items():
            if key not in _ANNOTATIONS_TO_SKIP:
                annotations[key] = value
        old = annotations.get(REVISION_ANNOTATION)
        old_revision = _revision(body)
        if old_revision < new_revision:
            annotations[REVISION_ANNOTATION] = str(new_revision)
            if old:
                history = annotations.get(REVISION_HISTORY_ANNOTATION)
                annotations[REVISION_HISTORY_ANNOTATION] = f"{history},{old}" if history else old
        annotations.update(self._replica_annotations(deployment))
        if body == rs:
            return rs
        return self._write(REPLICASETS, body)

    def _calculate_status(self, deployment: JSON, rss: list[JSON], new_rs: JSON | None, base: JSON) -> JSON:
        """deployment controller's calculateStatus (zero counters omitted, as omitempty does)."""

        def total(rs_list: Iterable[JSON], field: str) -> int:
            return sum(int((rs.get("status") or {}).get(field, 0)) for rs in rs_list)

        available = total(rss, "availableReplicas")
        spec_total = sum(int(rs["spec"].get("replicas", 0)) for rs in rss)
        status: JSON = {"observedGeneration": deployment["metadata"]["generation"]}
        counters = {
            "replicas": total(rss, "replicas"),
            "updatedReplicas": total([new_rs] if new_rs else [], "replicas"),
            "readyReplicas": total(rss, "readyReplicas"),
            "availableReplicas": available,
            "unavailableReplicas": max(spec_total - available, 0),
        }
        status.update({k: v for k, v in counters.items() if v})
        status["conditions"] = copy.deepcopy(base.get("conditions") or [])
        if base.get("collisionCount"):
            status["collisionCount"] = base["collisionCount"]
        replicas = int(deployment["spec"].get("replicas", 1))
        _, max_unavailable = self._max_surge_unavailable(deployment)
        if available >= replicas - max_unavailable:
            _set_condition(
                status,
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
                self._now(),
            )
        else:
            _set_condition(
                status,
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
                self._now(),
            )
        return status

    def _paused_conditions(self, status: JSON) -> None:
        cond = _condition(status, "Progressing")
        if cond is not None and cond.get("reason") == "ProgressDeadlineExceeded":
            return
        if cond is None or cond.get("reason") != "DeploymentPaused":
            _set_condition(
                status, "Progressing", "Unknown", "DeploymentPaused", "Deployment is paused", self._now()
            )

    @staticmethod
    def _complete(deployment: JSON, status: JSON) -> bool:
        replicas = int(deployment["spec"].get("replicas", 1))
        return (
            int(status.get("updatedReplicas", 0)) == replicas
            and int(status.get("replicas", 0)) == replicas
            and int(status.get("availableReplicas", 0)) == replicas
            and int(status.get("observedGeneration", 0)) >= int(deployment["metadata"]["generation"])
        )

    def _rollout_conditions(self, deployment: JSON, status: JSON, new_rs: JSON | None) -> None:
        """syncRolloutStatus: ReplicaSetUpdated on progress, NewReplicaSetAvailable when complete."""
        cond = _condition(status, "Progressing")
        if cond is not None and cond.get("reason") == "DeploymentPaused":
            _set_condition(
                status, "Progressing", "Unknown", "DeploymentResumed", "Deployment is resumed", self._now()
            )
            cond = _condition(status, "Progressing")
        complete_already = (
            int(status.get("replicas", 0)) == int(status.get("updatedReplicas", 0))
            and cond is not None
            and cond.get("reason") == "NewReplicaSetAvailable"
        )
        if complete_already:
            return
        rs_name = new_rs["metadata"]["name"] if new_rs else ""
        old = deployment.get("status") or {}
        if self._complete(deployment, status):
            _set_condition(
                status,
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                f'ReplicaSet "{rs_name}" has successfully progressed.',
                self._now(),
            )
            return
        old_olds = int(old.get("replicas", 0)) - int(old.get("updatedReplicas", 0))
        new_olds = int(status.get("replicas", 0)) - int(status.get("updatedReplicas", 0))
        progressing = (
            int(status.get("updatedReplicas", 0)) > int(old.get("updatedReplicas", 0))
            or new_olds < old_olds
            or int(status.get("readyReplicas", 0)) > int(old.get("readyReplicas", 0))
            or int(status.get("availableReplicas", 0)) > int(old.get("availableReplicas", 0))
        )
        if progressing:
            message = (
                f'ReplicaSet "{rs_name}" is progressing.'
                if new_rs
                else (f'Deployment "{deployment["metadata"]["name"]}" is progressing.')
            )
            now = self._now()
            transition = (
                cond["lastTransitionTime"] if cond is not None and cond.get("status") == "True" else now
            )
            status["conditions"] = [c for c in status.get("conditions", []) if c.get("type") != "Progressing"]
            status["conditions"].append(
                {
                    "type": "Progressing",
                    "status": "True",
                    "lastUpdateTime": now,
                    "lastTransitionTime": transition,
                    "reason": "ReplicaSetUpdated",
                    "message": message,
                }
            )

    def _cleanup(self, deployment: JSON, rss: list[JSON], new_rs: JSON | None) -> None:
        """cleanupDeployment: keep at most revisionHistoryLimit scaled-down old ReplicaSets."""
        limit = deployment["spec"].get("revisionHistoryLimit")
        if limit is None:
            return
        cleanable = [
            rs
            for rs in rss
            if (new_rs is None or rs["metadata"]["uid"] != new_rs["metadata"]["uid"])
            and int(rs["spec"].get("replicas", 0)) == 0
            and int((rs.get("status") or {}).get("replicas", 0)) == 0
        ]
        for rs in sorted(cleanable, key=_revision)[: max(len(cleanable) - int(limit), 0)]:
            self._state.delete(
                REPLICASETS, rs["metadata"]["namespace"], rs["metadata"]["name"], actor=CONTROLLER
            )

    # --- moving replicas

    def step(self, namespace: str | None = None, name: str | None = None) -> bool:
        """Scale one ReplicaSet by one replica in each matching unpaused Deployment; True if any moved."""
        moved = False
        with self._state.lock:
            for deployment in self._deployments(namespace, name):
                moved = (
                    self._step_one(deployment["metadata"]["namespace"], deployment["metadata"]["name"])
                    or moved
                )
        return moved

    def settle(self, namespace: str | None = None, name: str | None = None, max_steps: int = 10_000) -> int:
        """Step until no Deployment moves; returns the number of steps that moved something."""
        for count in range(max_steps):
            if not self.step(namespace, name):
                return count
        raise RuntimeError(f"deployments did not settle within {max_steps} steps")

    def _step_one(self, namespace: str, name: str) -> bool:
        """Change one ReplicaSet by one replica, in the real rolling-update order: scale the new ReplicaSet
        up while the total stays within replicas + maxSurge, else scale the oldest old one down while
        availability stays within maxUnavailable. Recreate drains the old ReplicaSets before scaling up."""
        self.sync(namespace, name)
        deployment = self._state.raw(DEPLOYMENTS, namespace, name)
        if deployment is None or deployment["spec"].get("paused"):
            return False
        rss = self._replica_sets(deployment)
        new_rs = self._find_new(deployment, rss)
        if new_rs is None:
            return False
        old_rss = [rs for rs in rss if rs is not new_rs and int(rs["spec"].get("replicas", 0)) > 0]
        desired = int(deployment["spec"].get("replicas", 1))
        new_count = int(new_rs["spec"].get("replicas", 0))
        total = sum(int(rs["spec"].get("replicas", 0)) for rs in rss)
        available = sum(int((rs.get("status") or {}).get("availableReplicas", 0)) for rs in rss)
        surge, max_unavailable = self._max_surge_unavailable(deployment)
        target: JSON | None = None
        delta = 0
        if (deployment["spec"].get("strategy") or {}).get("type") == "Recreate":
            if old_rss:
                target, delta = old_rss[0], -1
            elif new_count != desired:
                target, delta = new_rs, (1 if new_count < desired else -1)
        elif new_count < desired and total < desired + surge:
            target, delta = new_rs, 1
        elif old_rss and (total > desired or available - 1 >= desired - max_unavailable):
            target, delta = old_rss[0], -1
        elif new_count > desired:
            target, delta = new_rs, -1
        if target is None:
            return False
        self._scale(target, delta)
        self.sync(namespace, name)
        return True

    def _scale(self, rs: JSON, delta: int) -> None:
        body = copy.deepcopy(rs)
        before = int(body["spec"].get("replicas", 0))
        body["spec"]["replicas"] = before + delta
        updated = self._write(REPLICASETS, body)
        owner = self._controller_owner(rs, "Deployment")
        deployment = self._state.raw(DEPLOYMENTS, rs["metadata"]["namespace"], owner) if owner else None
        if deployment is not None:
            direction = "up" if delta > 0 else "down"
            message = (
                f"Scaled {direction} replica set {rs['metadata']['name']} from {before} to {before + delta}"
            )
            self._event(deployment, "ScalingReplicaSet", message, "deployment-controller")
        if delta > 0:
            self._create_pod(updated)
        else:
            pods = self._pods_of(updated)
            if pods:
                victim = pods[-1]["metadata"]
                self._state.delete(PODS, victim["namespace"], victim["name"], actor=CONTROLLER)
                self._event(
                    updated, "SuccessfulDelete", f"Deleted pod: {victim['name']}", "replicaset-controller"
                )
        self._sync_rs_status(updated)

    def _sync_rs_status(self, rs: JSON) -> None:
        count = len(self._pods_of(rs))
        status: JSON = {"replicas": count, "observedGeneration": rs["metadata"]["generation"]}
        if count:
            status.update(fullyLabeledReplicas=count, readyReplicas=count, availableReplicas=count)
        self._write_status(REPLICASETS, rs, status)

    def _pods_of(self, rs: JSON) -> list[JSON]:
        pods = self._state.owned_by(PODS, rs["metadata"]["namespace"], rs["metadata"]["uid"])
        return sorted(pods, key=lambda p: int(p["metadata"]["resourceVersion"]))

    def _create_pod(self, rs: JSON) -> JSON:
        meta = rs["metadata"]
        template = copy.deepcopy(rs["spec"]["template"])
        while True:
            name = generate_name(f"{meta['name']}-", self._state.rng)
            if self._state.raw(PODS, meta["namespace"], name) is None:
                break
        self._pod_ip += 1
        now = self._now()
        tpl_meta = template.get("metadata") or {}
        spec = template.get("spec") or {}
        spec["nodeName"] = "fake-node-1"
        containers = spec.get("containers") or []
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "generateName": f"{meta['name']}-",
                "namespace": meta["namespace"],
                "labels": dict(tpl_meta.get("labels") or {}),
                "annotations": dict(tpl_meta.get("annotations") or {}),
                "ownerReferences": [self._owner_ref(rs)],
            },
            "spec": spec,
            "status": {
                "phase": "Running",
                "conditions": [
                    {"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": now}
                    for t in (
                        "PodReadyToStartContainers",
                        "Initialized",
                        "Ready",
                        "ContainersReady",
                        "PodScheduled",
                    )
                ],
                "hostIP": "10.0.0.1",
                "podIP": f"10.244.{self._pod_ip // 250}.{self._pod_ip % 250 + 1}",
                "startTime": now,
                "qosClass": "BestEffort",
                "containerStatuses": [
                    {
                        "name": c.get("name"),
                        "image": c.get("image"),
                        "imageID": f"docker.io/library/{c.get('image')}@sha256:{'0' * 64}",
                        "containerID": f"containerd://{uuid.UUID(int=self._state.rng.getrandbits(128)).hex}",
                        "ready": True,
                        "started": True,
                        "restartCount": 0,
                        "state": {"running": {"startedAt": now}},
                    }
                    for c in containers
                ],
            },
        }
        if not pod["metadata"]["annotations"]:
            del pod["metadata"]["annotations"]
        created = self._state.create(PODS, meta["namespace"], pod, keep_status=True, actor=CONTROLLER)
        self._event(rs, "SuccessfulCreate", f"Created pod: {name}", "replicaset-controller")
        return created

    # --- test helpers

    def set_progress_deadline_exceeded(self, namespace: str, name: str) -> None:
        """Mark the rollout as stuck, as the controller does once progressDeadlineSeconds elapse."""
        with self._state.lock:
            deployment = self._state.raw(DEPLOYMENTS, namespace, name)
            if deployment is None:
                raise not_found(DEPLOYMENTS, name)
            new_rs = self._find_new(deployment, self._replica_sets(deployment))
            rs_name = new_rs["metadata"]["name"] if new_rs else name
            status = copy.deepcopy(deployment.get("status") or {})
            _set_condition(
                status,
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{rs_name}" has timed out progressing.',
                self._now(),
            )
            self._write_status(DEPLOYMENTS, deployment, status)

    def is_complete(self, namespace: str, name: str) -> bool:
        """Whether the rollout is complete (as `kubectl rollout status` would say)."""
        with self._state.lock:
            deployment = self._state.raw(DEPLOYMENTS, namespace, name)
            if deployment is None:
                raise not_found(DEPLOYMENTS, name)
            return self._complete(deployment, deployment.get("status") or {})


# ----------------------------------------------------------------------------------------------------------
# Server-side printing (kubectl get asks for meta.k8s.io Tables).


_WIDE_WORKLOAD = [("Containers", "string"), ("Images", "string"), ("Selector", "string")]
_WIDE_COLUMNS = frozenset({"Containers", "Images", "Selector", "IP", "Node"})


def _table_columns(res: Resource) -> list[tuple[str, str]]:
    if res is DEPLOYMENTS:
        return [
            ("Name", "string"),
            ("Ready", "string"),
            ("Up-to-date", "integer"),
            ("Available", "integer"),
            ("Age", "string"),
            *_WIDE_WORKLOAD,
        ]
    if res is REPLICASETS:
        return [
            ("Name", "string"),
            ("Desired", "integer"),
            ("Current", "integer"),
            ("Ready", "integer"),
            ("Age", "string"),
            *_WIDE_WORKLOAD,
        ]
    if res is PODS:
        return [
            ("Name", "string"),
            ("Ready", "string"),
            ("Status", "string"),
            ("Restarts", "string"),
            ("Age", "string"),
            ("IP", "string"),
            ("Node", "string"),
        ]
    if res is NAMESPACES:
        return [("Name", "string"), ("Status", "string"), ("Age", "string")]
    if res is LEASES:
        return [("Name", "string"), ("Holder", "string"), ("Age", "string")]
    if res in (CORE_EVENTS, EVENTS_V1):
        return [
            ("Last Seen", "string"),
            ("Type", "string"),
            ("Reason", "string"),
            ("Object", "string"),
            ("Message", "string"),
        ]
    return [("Name", "string"), ("Created At", "date")]


def _table_cells(res: Resource, obj: JSON, now: dt.datetime) -> list[Any]:
    meta = obj["metadata"]
    created = _parse_time(meta.get("creationTimestamp"))
    age = _human_duration((now - created).total_seconds()) if created else "<unknown>"
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    wide = [
        ",".join(str(c.get("name", "")) for c in containers),
        ",".join(str(c.get("image", "")) for c in containers),
        format_requirements(label_selector_requirements(spec.get("selector"))),
    ]
    if res is DEPLOYMENTS:
        return [
            meta["name"],
            f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
            status.get("updatedReplicas", 0),
            status.get("availableReplicas", 0),
            age,
            *wide,
        ]
    if res is REPLICASETS:
        return [
            meta["name"],
            spec.get("replicas", 0),
            status.get("replicas", 0),
            status.get("readyReplicas", 0),
            age,
            *wide,
        ]
    if res is PODS:
        statuses = status.get("containerStatuses") or []
        ready = sum(1 for c in statuses if c.get("ready"))
        restarts = sum(int(c.get("restartCount", 0)) for c in statuses)
        return [
            meta["name"],
            f"{ready}/{len(spec.get('containers') or [])}",
            status.get("phase", "Unknown"),
            str(restarts),
            age,
            status.get("podIP", "<none>"),
            spec.get("nodeName", "<none>"),
        ]
    if res is NAMESPACES:
        return [meta["name"], status.get("phase", ""), age]
    if res is LEASES:
        return [meta["name"], spec.get("holderIdentity", ""), age]
    if res in (CORE_EVENTS, EVENTS_V1):
        core = to_storage(res, obj) if res is EVENTS_V1 else obj
        involved = core.get("involvedObject") or {}
        seen = _parse_time(core.get("lastTimestamp") or core.get("eventTime")) or created
        last_seen = _human_duration((now - seen).total_seconds()) if seen else "<unknown>"
        return [
            last_seen,
            core.get("type", ""),
            core.get("reason", ""),
            f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}",
            core.get("message", ""),
        ]
    return [meta["name"], meta.get("creationTimestamp")]


def make_table(res: Resource, objs: list[JSON], rv: int, now: dt.datetime, include_object: str) -> JSON:
    """A meta.k8s.io/v1 Table, as the real server's table convertor produces."""
    rows = []
    for obj in objs:
        row: JSON = {"cells": _table_cells(res, obj, now)}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj["metadata"],
            }
        rows.append(row)
    columns = [
        {
            "name": name,
            "type": ctype,
            "format": "name" if name == "Name" else "",
            "description": "",
            "priority": 1 if name in _WIDE_COLUMNS else 0,
        }
        for name, ctype in _table_columns(res)
    ]
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": str(rv)},
        "columnDefinitions": columns,
        "rows": rows,
    }


# ----------------------------------------------------------------------------------------------------------
# HTTP.

_PATCH_TYPES = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
}


def _flag(query: Mapping[str, list[str]], name: str) -> bool:
    return (query.get(name) or [""])[-1].lower() in ("true", "1")


def _param(query: Mapping[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


class _Server(http.server.ThreadingHTTPServer):
    """ThreadingHTTPServer that tracks its connections, so `stop()` can close idle keep-alive ones."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], api: FakeKubeAPI) -> None:
        self.api = api
        self.connections: set[socket.socket] = set()
        self.handler_threads: set[threading.Thread] = set()
        self.conn_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._serve_connection,
            args=(request, client_address),
            daemon=True,
            name="fake-kubeapi-connection",
        )
        with self.conn_lock:
            self.connections.add(request)
            self.handler_threads.add(thread)
        thread.start()

    def _serve_connection(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self.conn_lock:
                self.connections.discard(request)
                self.handler_threads.discard(threading.current_thread())

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
            return
        self.api.server_errors.append(traceback.format_exc())


class _Handler(http.server.BaseHTTPRequestHandler):
    """One connection; dispatches each request to the state (keep-alive, chunked watch streams)."""

    protocol_version = "HTTP/1.1"
    # Headers and body are separate writes: without TCP_NODELAY, Nagle + delayed ACK add ~40 ms per request.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log."""

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    # --- plumbing

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, code: int, payload: bytes, content_type: str = "application/json") -> None:
        self._record.status = code
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.wfile.write(payload)

    def _send_json(self, code: int, body: Any) -> None:
        self._send(code, json.dumps(body).encode())

    def _handle(self) -> None:
        api = self.server.api
        split = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(split.query, keep_blank_values=True)
        content_type = self.headers.get("Content-Type")
        raw = self._read_body()
        self._record = RecordedRequest(
            self.command,
            split.path,
            query,
            content_type,
            _decode_for_log(raw),
            user_agent=self.headers.get("User-Agent", ""),
        )
        api._record(self._record)
        try:
            self._dispatch(api, split.path, query, raw)
        except ApiError as exc:
            self._send_json(exc.code, exc.status())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:
            api.server_errors.append(traceback.format_exc())
            self._send_json(
                500, ApiError(500, "InternalError", "fake API server bug; see server_errors").status()
            )

    def _body(self, raw: bytes) -> Any:
        ctype = (self.headers.get("Content-Type") or "application/json").split(";")[0].strip().lower()
        if "protobuf" in ctype or "cbor" in ctype:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - "
                f"accepted media types include: application/json, application/yaml (got {ctype})",
            )
        if not raw:
            return None
        try:
            if "yaml" in ctype:
                return yaml.safe_load(raw.decode())
            return json.loads(raw)
        except (ValueError, yaml.YAMLError) as exc:
            raise bad_request(f"couldn't get version/kind; json parse error: {exc}") from exc

    # --- routing

    def _dispatch(self, api: FakeKubeAPI, path: str, query: dict[str, list[str]], raw: bytes) -> None:
        segments = [urllib.parse.unquote(s) for s in path.strip("/").split("/") if s]
        method = self.command
        if method == "GET" and self._discovery(api, segments):
            return
        if len(segments) >= 2 and segments[0] == "api":
            group, version, rest = "", segments[1], segments[2:]
        elif len(segments) >= 3 and segments[0] == "apis":
            group, version, rest = segments[1], segments[2], segments[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        watch_path = bool(rest) and rest[0] == "watch"
        if watch_path:
            rest = rest[1:]
        in_gv = {r.plural: r for r in RESOURCES if r.group == group and r.version == version}
        namespace: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] in in_gv and in_gv[rest[2]].namespaced:
            namespace, rest = rest[1], rest[2:]
        if not rest or rest[0] not in in_gv or len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        res = in_gv[rest[0]]
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if res.namespaced and namespace is None and name is not None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        if (
            sub not in (None, "status", "scale")
            or (sub == "status" and not res.status_subresource)
            or (sub == "scale" and not res.scale_subresource)
        ):
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        ns = namespace or ""
        dry_run = _param(query, "dryRun") == "All"
        state = api.state
        if method == "GET":
            if name is None:
                if watch_path or _flag(query, "watch"):
                    self._watch(api, res, namespace, query)
                else:
                    self._list(api, res, namespace, query)
            elif sub == "scale":
                with state.lock:
                    obj = state.raw(res, ns, name)
                    if obj is None:
                        raise not_found(res, name)
                    self._send_json(200, state.scale_view(res, obj))
            else:
                self._send_object(api, res, state.get(res, ns, name))
        elif method == "POST" and name is None:
            if namespace is None and res.namespaced:
                raise ApiError(
                    405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
                )
            self._send_json(201, state.create(res, ns, self._body(raw) or {}, dry_run=dry_run))
        elif method == "PUT" and name is not None:
            body = self._body(raw) or {}
            with state.lock:
                existed = state.raw(res, ns, name) is not None
                if sub == "scale":
                    result = state.replace_scale(res, ns, name, body)
                else:
                    result = state.replace(res, ns, name, body, subresource=sub, dry_run=dry_run)
            self._send_json(200 if existed else 201, result)
        elif method == "PATCH" and name is not None:
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            patch_type = _PATCH_TYPES.get(ctype)
            if patch_type is None:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - "
                    "accepted media types include: application/json-patch+json, "
                    "application/merge-patch+json, application/apply-patch+yaml, "
                    "application/strategic-merge-patch+json",
                )
            body = self._body(raw)
            with state.lock:
                existed = state.raw(res, ns, name) is not None
                result = state.patch(
                    res,
                    ns,
                    name,
                    patch_type,
                    body,
                    subresource=sub,
                    dry_run=dry_run,
                    field_manager=_param(query, "fieldManager"),
                )
            self._send_json(200 if existed else 201, result)
        elif method == "DELETE" and name is not None and sub is None:
            options = self._body(raw) or {}
            gone = state.delete(
                res,
                ns,
                name,
                options=options,
                propagation=_param(query, "propagationPolicy"),
                dry_run=dry_run,
            )
            if res.delete_returns_object:
                self._send_json(200, gone)
            else:
                details = _details(res, name)
                details["uid"] = gone["metadata"]["uid"]
                self._send_json(
                    200,
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Success",
                        "details": details,
                    },
                )
        elif method == "DELETE" and name is None:
            items, _ = state.list(
                res, namespace, _param(query, "labelSelector"), _param(query, "fieldSelector")
            )
            for item in items:
                meta = item["metadata"]
                with state.lock:
                    if state.raw(res, meta.get("namespace", ""), meta["name"]) is not None:
                        state.delete(res, meta.get("namespace", ""), meta["name"], dry_run=dry_run)
            self._send_json(
                200,
                {
                    "kind": f"{res.kind}List",
                    "apiVersion": res.api_version,
                    "metadata": {"resourceVersion": str(api.state.rv)},
                    "items": items,
                },
            )
        else:
            raise ApiError(
                405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
            )

    def _discovery(self, api: FakeKubeAPI, segments: list[str]) -> bool:
        host = f"{api.host}:{api.port}"
        if segments == ["version"]:
            self._send_json(200, SERVER_VERSION)
        elif segments in (["healthz"], ["readyz"], ["livez"]):
            self._send(200, b"ok", "text/plain; charset=utf-8")
        elif segments == ["api"]:
            self._send_json(
                200,
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
                },
            )
        elif segments == ["apis"]:
            self._send_json(
                200,
                {
                    "kind": "APIGroupList",
                    "apiVersion": "v1",
                    "groups": [_api_group(g, v) for g, v in GROUP_VERSIONS],
                },
            )
        elif (
            len(segments) == 2 and segments[0] == "apis" and any(g == segments[1] for g, _ in GROUP_VERSIONS)
        ):
            version = next(v for g, v in GROUP_VERSIONS if g == segments[1])
            self._send_json(200, {"kind": "APIGroup", "apiVersion": "v1", **_api_group(segments[1], version)})
        elif segments == ["api", "v1"]:
            self._send_json(200, _api_resource_list("", "v1"))
        elif len(segments) == 3 and segments[0] == "apis" and (segments[1], segments[2]) in GROUP_VERSIONS:
            self._send_json(200, _api_resource_list(segments[1], segments[2]))
        elif segments and segments[0] == "openapi":
            # Like a server with OpenAPI disabled; kubectl's get/patch/rollout do not need it.
            self._send(404, b"404 page not found\n", "text/plain; charset=utf-8")
        else:
            return False
        return True

    # --- reads

    def _wants(self) -> tuple[str | None, str]:
        """('Table' | 'PartialObjectMetadata' | None, includeObject) from the Accept header."""
        accept = self.headers.get("Accept") or ""
        first = accept.split(",")[0]
        include = "Metadata"
        if "as=Table" in first:
            return "Table", include
        if "as=PartialObjectMetadata" in first:
            return "PartialObjectMetadata", include
        return None, include

    def _send_object(self, api: FakeKubeAPI, res: Resource, obj: JSON) -> None:
        wants, include = self._wants()
        if wants == "Table":
            include = (
                _param(urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query), "includeObject")
                or include
            )
            self._send_json(200, make_table(res, [obj], api.state.rv, api.state.clock(), include))
        elif wants == "PartialObjectMetadata":
            self._send_json(
                200,
                {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": obj["metadata"],
                },
            )
        else:
            self._send_json(200, obj)

    def _list(
        self, api: FakeKubeAPI, res: Resource, namespace: str | None, query: dict[str, list[str]]
    ) -> None:
        items, rv = api.state.list(
            res, namespace, _param(query, "labelSelector"), _param(query, "fieldSelector")
        )
        meta: JSON = {"resourceVersion": str(rv)}
        token = _param(query, "continue")
        if token:
            try:
                start = json.loads(base64.urlsafe_b64decode(token.encode()))["start"]
            except (ValueError, KeyError) as exc:
                raise bad_request(f"invalid continue token: {exc}") from exc
            items = [i for i in items if [i["metadata"].get("namespace", ""), i["metadata"]["name"]] > start]
        limit = int(_param(query, "limit") or 0)
        if 0 < limit < len(items):
            last = items[limit - 1]["metadata"]
            start_key = [last.get("namespace", ""), last["name"]]
            meta["continue"] = base64.urlsafe_b64encode(
                json.dumps({"rv": rv, "start": start_key}).encode()
            ).decode()
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        wants, include = self._wants()
        if wants == "Table":
            table = make_table(res, items, rv, api.state.clock(), _param(query, "includeObject") or include)
            table["metadata"].update(meta)
            self._send_json(200, table)
            return
        for item in items:
            if wants == "PartialObjectMetadata":
                item.clear()
            else:
                # Items of a real list carry no kind/apiVersion.
                item.pop("kind", None)
                item.pop("apiVersion", None)
        if wants == "PartialObjectMetadata":
            self._send_json(
                200,
                {
                    "kind": "PartialObjectMetadataList",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": meta,
                    "items": items,
                },
            )
            return
        self._send_json(
            200, {"kind": f"{res.kind}List", "apiVersion": res.api_version, "metadata": meta, "items": items}
        )

    # --- watch

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if readable:
                return self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True
        return False

    def _watch(
        self, api: FakeKubeAPI, res: Resource, namespace: str | None, query: dict[str, list[str]]
    ) -> None:
        """Stream newline-delimited watch events with chunked encoding, like the real watch cache."""
        state = api.state
        reqs = parse_label_selector(_param(query, "labelSelector"))
        fields = parse_field_selector(_param(query, "fieldSelector"))
        timeout = float(_param(query, "timeoutSeconds") or 1800)
        deadline = time.monotonic() + timeout
        bookmarks = _flag(query, "allowWatchBookmarks")
        wants, include = self._wants()
        rv_param = _param(query, "resourceVersion")

        def matches(view: JSON) -> bool:
            return labels_match(reqs, view["metadata"].get("labels")) and fields_match(fields, view)

        def encode(etype: str, view: JSON) -> bytes:
            if wants == "Table":
                view = make_table(res, [view], state.rv, state.clock(), include)
            return json.dumps({"type": etype, "object": view}).encode() + b"\n"

        def translate(event: WatchEvent) -> bytes | None:
            if event.key != res.key:
                return None
            if namespace and event.obj["metadata"].get("namespace") != namespace:
                return None
            view = from_storage(res, event.obj)
            now_matches = matches(view)
            if event.type == "MODIFIED" and event.old is not None:
                was_matching = matches(from_storage(res, event.old))
                if now_matches and was_matching:
                    return encode("MODIFIED", view)
                if now_matches:
                    return encode("ADDED", view)
                return encode("DELETED", view) if was_matching else None
            return encode(event.type, view) if now_matches else None

        initial: list[bytes] = []
        with state.lock:
            if rv_param in (None, "", "0"):
                cursor = state.rv
                for (ns, _), obj in sorted(state.objects[res.key].items()):
                    view = from_storage(res, obj)
                    if (not namespace or ns == namespace) and matches(view):
                        initial.append(encode("ADDED", view))
                expired = False
            else:
                try:
                    cursor = int(str(rv_param))
                except ValueError as exc:
                    raise bad_request(f"invalid resource version: {rv_param}") from exc
                expired = state.events_since(cursor) is None
        self._record.status = 200
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        for chunk in initial:
            self._write_chunk(chunk)
        while not expired:
            with state.changed:
                while True:
                    events = state.events_since(cursor)
                    remaining = deadline - time.monotonic()
                    if events is None or events or remaining <= 0 or api._stopping.is_set():
                        break
                    state.changed.wait(min(remaining, 0.1))
                    if self._client_gone():
                        self.close_connection = True
                        return
                if events is None:
                    expired = True
                    break
                chunks = [c for c in (translate(e) for e in events) if c is not None]
                if events:
                    cursor = events[-1].rv
            for chunk in chunks:
                self._write_chunk(chunk)
            if not events:
                break
        if expired:
            message = f"too old resource version: {cursor} ({state.compacted_rv + 1})"
            error = ApiError(410, "Expired", message).status()
            self._write_chunk(json.dumps({"type": "ERROR", "object": error}).encode() + b"\n")
        elif bookmarks and not api._stopping.is_set():
            mark = {
                "kind": res.kind,
                "apiVersion": res.api_version,
                "metadata": {"resourceVersion": str(cursor)},
            }
            self._write_chunk(json.dumps({"type": "BOOKMARK", "object": mark}).encode() + b"\n")
        self.wfile.write(b"0\r\n\r\n")
        if api._stopping.is_set():
            self.close_connection = True


def _decode_for_log(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        try:
            return yaml.safe_load(raw.decode())
        except (yaml.YAMLError, UnicodeDecodeError):
            return raw.decode(errors="replace")


def _api_group(group: str, version: str) -> JSON:
    gv = {"groupVersion": f"{group}/{version}", "version": version}
    return {"name": group, "versions": [gv], "preferredVersion": gv}


def _api_resource_list(group: str, version: str) -> JSON:
    resources = []
    for res in RESOURCES:
        if res.group != group or res.version != version:
            continue
        verbs = [v for v in VERBS if not (res is NAMESPACES and v == "deletecollection")]
        entry: JSON = {
            "name": res.plural,
            "singularName": res.singular,
            "namespaced": res.namespaced,
            "kind": res.kind,
            "verbs": verbs,
        }
        if res.short_names:
            entry["shortNames"] = list(res.short_names)
        if res.categories:
            entry["categories"] = list(res.categories)
        resources.append(entry)
        if res.status_subresource:
            resources.append(
                {
                    "name": f"{res.plural}/status",
                    "singularName": "",
                    "namespaced": res.namespaced,
                    "kind": res.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
        if res.scale_subresource:
            resources.append(
                {
                    "name": f"{res.plural}/scale",
                    "singularName": "",
                    "namespaced": res.namespaced,
                    "group": "autoscaling",
                    "version": "v1",
                    "kind": "Scale",
                    "verbs": ["get", "patch", "update"],
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }


# ----------------------------------------------------------------------------------------------------------
# The test-facing facade.


def make_deployment(
    name: str,
    namespace: str = "default",
    image: str = "app:v1",
    replicas: int = 4,
    labels: Mapping[str, str] | None = None,
    *,
    container_name: str = "app",
    annotations: Mapping[str, str] | None = None,
) -> JSON:
    """A valid apps/v1 Deployment manifest (selector = template labels = `labels`, or `{"app": name}`)."""
    labels = dict(labels or {"app": name})
    metadata: JSON = {"name": name, "namespace": namespace, "labels": dict(labels)}
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(labels)},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {"containers": [{"name": container_name, "image": image}]},
            },
        },
    }


class FakeKubeAPI:
    """A fake kube-apiserver on 127.0.0.1:<free port>, plus a deployment controller simulation.

    Use as a context manager or `start()`/`stop()`. Objects can be seeded and inspected directly
    (`create`, `get`, `list`, `patch`...), which goes through the same write pipeline as HTTP requests.
    """

    make_deployment = staticmethod(make_deployment)

    def __init__(
        self,
        *,
        history_size: int = 1000,
        seed: int = 0,
        clock: Callable[[], dt.datetime] | None = None,
        host: str = "127.0.0.1",
        controller_events: bool = True,
    ) -> None:
        """`history_size` bounds the watch history (older resourceVersions get 410 Expired); `seed` makes
        uids and pod names reproducible; `controller_events=False` stops the simulated controllers from
        recording core/v1 Events (ScalingReplicaSet, SuccessfulCreate, SuccessfulDelete)."""
        self.host = host
        self.port = 0
        self.state = KubeState(
            history_size=history_size,
            clock=clock or (lambda: dt.datetime.now(dt.UTC)),
            rng=random.Random(seed),
        )
        self.controller = DeploymentController(self.state, emit_events=controller_events)
        self.state.on_write = self.controller.on_write
        self.server_errors: list[str] = []
        self._requests: list[RecordedRequest] = []
        self._requests_lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._clients: list[Any] = []
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None

    # --- lifecycle

    def start(self) -> FakeKubeAPI:
        """Bind a free port and serve in a daemon thread."""
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server((self.host, 0), self)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name="fake-kubeapi",
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close clients, end watches, close connections, join threads, remove temp files."""
        for client in self._clients:
            client.close()
        self._clients.clear()
        server, self._server = self._server, None
        if server is not None:
            self._stopping.set()
            with self.state.changed:
                self.state.changed.notify_all()
            server.shutdown()
            with server.conn_lock:
                connections = list(server.connections)
                threads = list(server.handler_threads)
            for conn in connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            for thread in threads:
                thread.join(timeout=5)
            server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
                self._thread = None
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def __enter__(self) -> FakeKubeAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeKubeAPI is not started")
        return f"http://{self.host}:{self.port}"

    # --- clients

    def api_client(self) -> Any:
        """A `kubernetes.client.ApiClient` for this server (closed by `stop()`)."""
        import kubernetes.client

        configuration = kubernetes.client.Configuration(host=self.url)
        client = kubernetes.client.ApiClient(configuration)
        self._clients.append(client)
        return client

    def write_kubeconfig(self, path: str | os.PathLike[str], *, namespace: str = "default") -> Path:
        """Write a kubeconfig pointing at this server (context `fake`, no credentials)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {}}],
            "contexts": [
                {"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}
            ],
            "current-context": "fake",
        }
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.safe_dump(config))
        return target

    def kubectl(
        self, *args: str, check: bool = False, timeout: float = 30.0, input_text: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the kubectl binary against this server (own kubeconfig, cache dir and HOME)."""
        if self._tmpdir is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="fake-kubeapi-")
        base = Path(self._tmpdir.name)
        kubeconfig = base / "kubeconfig"
        if not kubeconfig.exists() or f"{self.port}" not in kubeconfig.read_text():
            self.write_kubeconfig(kubeconfig)
        env = {**os.environ, "HOME": str(base), "KUBECONFIG": str(kubeconfig)}
        command = [KUBECTL, f"--kubeconfig={kubeconfig}", f"--cache-dir={base / 'cache'}", *args]
        return subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=check, env=env, input=input_text
        )

    # --- objects (same pipeline as HTTP, no request log, no injected conflicts)

    def create(self, obj: Mapping[str, Any]) -> JSON:
        """Create `obj` (its namespace is created if missing); a given `status` is kept, as if a controller
        had written it."""
        res = find_resource(str(obj.get("apiVersion", "")), str(obj.get("kind", "")))
        namespace = str((obj.get("metadata") or {}).get("namespace") or ("default" if res.namespaced else ""))
        if res.namespaced:
            self.ensure_namespace(namespace)
        return self.state.create(res, namespace, copy.deepcopy(dict(obj)), keep_status=True, actor=USER)

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> JSON:
        """The object (raises `ApiError` 404 if missing)."""
        return self.state.get(find_resource(api_version, kind), namespace or "", name)

    def try_get(self, api_version: str, kind: str, namespace: str | None, name: str) -> JSON | None:
        """The object, or None if missing."""
        try:
            return self.get(api_version, kind, namespace, name)
        except ApiError as exc:
            if exc.code == 404:
                return None
            raise

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[JSON]:
        """Matching objects (with kind/apiVersion), sorted by namespace/name."""
        items, _ = self.state.list(
            find_resource(api_version, kind), namespace, label_selector, field_selector
        )
        return items

    def update(self, obj: Mapping[str, Any], *, subresource: str | None = None) -> JSON:
        """PUT semantics (409 on a stale `metadata.resourceVersion`)."""
        res = find_resource(str(obj.get("apiVersion", "")), str(obj.get("kind", "")))
        meta = obj.get("metadata") or {}
        return self.state.replace(
            res,
            str(meta.get("namespace") or ""),
            str(meta.get("name")),
            copy.deepcopy(dict(obj)),
            subresource=subresource,
        )

    def patch(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        patch_type: str = "strategic",
        subresource: str | None = None,
    ) -> JSON:
        """PATCH semantics; `patch_type` is "strategic", "merge", "json" or "apply"."""
        return self.state.patch(
            find_resource(api_version, kind),
            namespace or "",
            name,
            patch_type,
            patch,
            subresource=subresource,
            field_manager="test",
        )

    def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> None:
        """Delete (dependents are garbage-collected at once)."""
        self.state.delete(find_resource(api_version, kind), namespace or "", name)

    def ensure_namespace(self, name: str) -> None:
        with self.state.lock:
            if self.state.raw(NAMESPACES, "", name) is None:
                self.state.create(NAMESPACES, "", {"metadata": {"name": name}}, actor=CONTROLLER)

    @property
    def resource_version(self) -> int:
        """The current global resourceVersion."""
        return self.state.rv

    # --- fault injection and request log

    def inject_conflicts(self, kind: str, namespace: str | None, name: str, count: int = 1) -> None:
        """Make the next `count` HTTP writes (PUT/PATCH/DELETE, any subresource) to the object get 409."""
        res = _resource_by_kind(kind)
        with self.state.lock:
            self.state.conflicts[(res.key, namespace or "" if res.namespaced else "", name)] = count

    def _record(self, request: RecordedRequest) -> None:
        with self._requests_lock:
            self._requests.append(request)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every HTTP request served so far, in order."""
        with self._requests_lock:
            return list(self._requests)

    def requests_matching(
        self, method: str | None = None, path: str | None = None, content_type: str | None = None
    ) -> list[RecordedRequest]:
        """Requests filtered by method, path regex (fullmatch) and content type (prefix match)."""
        out = []
        for request in self.requests:
            if method and request.method != method.upper():
                continue
            if path and not re.fullmatch(path, request.path):
                continue
            if content_type and not (request.content_type or "").startswith(content_type):
                continue
            out.append(request)
        return out

    def clear_requests(self) -> None:
        with self._requests_lock:
            self._requests.clear()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Block until `predicate()` holds (re-checked after every write), or the timeout passes."""
        deadline = time.monotonic() + timeout
        with self.state.changed:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.state.changed.wait(min(remaining, 0.1))
        return True


def iter_watch_lines(stream: Iterable[bytes]) -> Iterator[JSON]:
    """Decode newline-delimited watch events from raw chunks (for tests reading streams by hand)."""
    buffer = b""
    for chunk in stream:
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield json.loads(line)


__all__ = [
    "CONFIGMAPS",
    "CORE_EVENTS",
    "DEPLOYMENTS",
    "EVENTS_V1",
    "LEASES",
    "NAMESPACES",
    "PODS",
    "REPLICASETS",
    "ApiError",
    "DeploymentController",
    "FakeKubeAPI",
    "RecordedRequest",
    "find_resource",
    "make_deployment",
    "pod_template_hash",
]
