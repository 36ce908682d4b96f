"""The Docker Swarm RolloutSource: services under update, read from a swarm manager's Engine API each tick.

The daemon builds one `SwarmRolloutSource` when the config's targets are Swarm services and calls
`list_rollouts()` every tick; `service_rollout_state` (pure) turns a service and its running tasks into the same
`RolloutState` the engine sees for a Deployment, so the engine, the scorer and the policy are unchanged:

1. a rollout is a service whose `UpdateStatus.State` is `updating` (or `rollback_started`), watched for `bake`
   after it becomes `completed` (`rollback_completed`); `paused` states come only from Swarm's FailureAction;
2. a task is new when its spec (`ContainerSpec`, image with digest as the spec holds it, and `ForceUpdate`) is
   the service's `Spec.TaskTemplate`; every other running task is old (it runs `PreviousSpec.TaskTemplate`, or
   an older spec an update replaced mid-way); `previous_revision` is `PreviousSpec.TaskTemplate`'s, what an
   undo (`rollback=previous`) goes back to;
3. the revision is a number read from the template (its first 8 hex digits of SHA-256): Swarm numbers no spec
   revisions (`Version.Index` moves with every change of the service, status included), and a revision must
   stay the same across restarts for the acted-revision record to mean anything;
4. the rollout's pods are its tasks, named `<service>.<slot>.<task id>` as Swarm names their containers (a
   global service's `<service>.<node id>.<task id>`), their `template_hash` the digest of their spec.

`predictor.io/*` service labels are what the Swarm actuator recorded; they are the rollout's annotations.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import docker
from docker.errors import DockerException

from predictor.config import DockerConfig, SwarmTarget
from predictor.domain import ANNOTATION_ACTION, ANNOTATION_PREFIX, Action, DeploymentRef, PodState, RolloutState
from predictor.rollouts.state import parse_time

log = logging.getLogger(__name__)

Obj = Mapping[str, Any]

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
DOCKER_API_VERSION = "1.41"
"""Docker Engine 20.10's API, which later engines still serve; a fixed version, because `auto` asks the engine at
construction, and an engine down at start must not stop the daemon."""
STACK_NAMESPACE_LABEL = "com.docker.stack.namespace"
"""Set by `docker stack deploy` on a stack's services: their namespace."""
LABEL_UNDONE_TO = ANNOTATION_PREFIX + "undone-to"
"""The revision an undo of ours rolled the service back to: that revision is a rollback, never undone again."""
ROLLING = frozenset({"updating", "rollback_started"})
PAUSED = frozenset({"paused", "rollback_paused"})
COMPLETED = frozenset({"completed", "rollback_completed"})
SERVICE_KIND = "service"


def template_key(task_spec: Obj | None) -> str:
    """What makes a task of one template: its ContainerSpec and ForceUpdate (Swarm fills the same defaults into
    the service's TaskTemplate and its tasks' Spec, so they compare as they are)."""
    spec = task_spec or {}
    return json.dumps(
        {"ContainerSpec": spec.get("ContainerSpec") or {}, "ForceUpdate": int(spec.get("ForceUpdate") or 0)},
        sort_keys=True, separators=(",", ":"),
    )


def template_hash(task_spec: Obj | None) -> str:
    """8 hex digits identifying a task template (rule 3 of the module docstring)."""
    return hashlib.sha256(template_key(task_spec).encode()).hexdigest()[:8]


def revision_of_hash(digest: str) -> int:
    return int(digest, 16)


def task_name(service_name: str, task: Obj) -> str:
    """`<service>.<slot>.<task id>` (a global service's tasks have no slot: `<service>.<node id>.<task id>`)."""
    slot = task.get("Slot")
    return f"{service_name}.{slot if slot else task.get('NodeID', '')}.{task.get('ID', '')}"


def _desired(service: Obj, running: int) -> int:
    mode = (service.get("Spec") or {}).get("Mode") or {}
    replicated = mode.get("Replicated")
    if isinstance(replicated, Mapping):
        return int(replicated.get("Replicas") or 0)
    return running  # a global service runs one task per eligible node: as many as run


def service_rollout_state(service: Obj, tasks: Sequence[Obj]) -> RolloutState:
    """The RolloutState of one service from it and its tasks whose desired state is running (others ignored)."""
    spec = service.get("Spec") or {}
    labels = {str(k): str(v) for k, v in (spec.get("Labels") or {}).items()}
    name = str(spec.get("Name", ""))
    ref = DeploymentRef(labels.get(STACK_NAMESPACE_LABEL, ""), name, SERVICE_KIND)
    current = spec.get("TaskTemplate") or {}
    previous_spec = service.get("PreviousSpec") or {}
    new_hash = template_hash(current)
    new_key = template_key(current)
    status = service.get("UpdateStatus") or {}
    state = str(status.get("State") or "")

    pods: list[PodState] = []
    new_running = new_ready = old_running = 0
    old_hashes: list[str] = []
    for task in tasks:
        if task.get("DesiredState", "running") != "running":
            continue
        task_spec = task.get("Spec") or {}
        digest = template_hash(task_spec)
        task_status = task.get("Status") or {}
        ready = task_status.get("State") == "running"
        pods.append(PodState(name=task_name(name, task), template_hash=digest, ready=ready,
                             waiting_reason=None if ready else str(task_status.get("State") or "") or None,
                             created_at=parse_time(task.get("CreatedAt"))))
        if template_key(task_spec) == new_key:
            new_running += 1
            new_ready += int(ready)
        else:
            old_running += 1
            if digest not in old_hashes:
                old_hashes.append(digest)
    previous = previous_spec.get("TaskTemplate")
    previous_hash = template_hash(previous) if previous is not None else None

    started_at = parse_time(status.get("StartedAt")) or parse_time(service.get("CreatedAt")) or 0.0
    completed_at = None
    if state in COMPLETED:
        completed_at = parse_time(status.get("CompletedAt")) or started_at
    elif not status and old_running == 0 and new_ready >= _desired(service, new_running):
        # Never updated (or a spec change Swarm had nothing to roll out for): complete once every task runs it.
        completed_at = parse_time(service.get("UpdatedAt")) or started_at
    revision = revision_of_hash(new_hash)
    undone_to = labels.get(LABEL_UNDONE_TO)
    is_rollback = state.startswith("rollback") or (
        labels.get(ANNOTATION_ACTION) == Action.UNDO.value and undone_to == str(revision))
    return RolloutState(
        ref=ref,
        revision=revision,
        new_hash=new_hash,
        old_hashes=tuple(old_hashes),
        desired_replicas=_desired(service, new_running),
        updated_replicas=new_running,
        ready_new_replicas=new_ready,
        old_replicas=old_running,
        started_at=started_at,
        completed_at=completed_at,
        paused=state in PAUSED,
        is_rollback=is_rollback,
        previous_revision=revision_of_hash(previous_hash) if previous_hash and previous_hash != new_hash else None,
        annotations={k: v for k, v in labels.items() if k.startswith(ANNOTATION_PREFIX)},
        pods=tuple(sorted(pods, key=lambda p: p.name)),
    )


def build_docker_client(config: DockerConfig) -> docker.APIClient:
    """The low-level Engine API client for `docker.host` (else `DOCKER_HOST`, else the local socket), with TLS
    when the config gives it. Creating it does not connect (the API version is fixed)."""
    host = config.host or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST
    tls: Any = False
    if config.tls is not None:
        cert = (str(config.tls.cert_file), str(config.tls.key_file)) if config.tls.cert_file else None
        tls = docker.tls.TLSConfig(client_cert=cert, ca_cert=str(config.tls.ca_file) if config.tls.ca_file else None,
                                   verify=config.tls.verify_tls)
    return docker.APIClient(base_url=host, tls=tls, timeout=max(1, round(config.timeout_seconds)),
                            version=DOCKER_API_VERSION)


class SwarmRolloutSource:
    """RolloutSource over a swarm manager: per tick one service list per target and one task list per service.

    No watch: the Engine API has no watch of services (its event stream says that something changed, not what),
    and a tick reads a handful of small objects. `task_label(ref)` tells the metric source which series label
    names the tasks of a service.
    """

    def __init__(self, api: docker.APIClient, targets: Sequence[SwarmTarget]) -> None:
        self.api = api
        self._targets = tuple(targets)
        self._task_labels: dict[DeploymentRef, str] = {}
        self._limits: dict[DeploymentRef, Obj] = {}
        self._online = False

    def sync(self) -> None:
        """One call now, so that a wrong host or a node that is no swarm manager fails at start. Raises."""
        self.api.inspect_swarm()

    def _services(self, target: SwarmTarget) -> list[Obj]:
        if target.service is not None:
            found = self.api.services(filters={"name": target.service})
            return [s for s in found if (s.get("Spec") or {}).get("Name") == target.service]  # name is a prefix
        return list(self.api.services(filters={"label": target.label}))

    def list_rollouts(self, at: float) -> list[RolloutState]:
        """State of every targeted service now (`at` is ignored). Raises on a failed API call."""
        states: list[RolloutState] = []
        seen: set[str] = set()
        try:
            for target in self._targets:
                for service in self._services(target):
                    if service["ID"] in seen:
                        continue
                    seen.add(service["ID"])
                    tasks = self.api.tasks(filters={"service": service["ID"], "desired-state": "running"})
                    state = service_rollout_state(service, tasks)
                    self._task_labels[state.ref] = target.task_label
                    template = (service.get("Spec") or {}).get("TaskTemplate") or {}
                    self._limits[state.ref] = (template.get("Resources") or {}).get("Limits") or {}
                    states.append(state)
        except (DockerException, OSError) as exc:
            self._online = False
            raise RuntimeError(f"Docker Engine API: {exc}") from exc
        self._online = True
        states.sort(key=lambda s: s.ref)
        return states

    def task_label(self, ref: DeploymentRef) -> str | None:
        """The series label that names the tasks of `ref` (its target's task_label); None before it was listed."""
        return self._task_labels.get(ref)

    def limits(self, ref: DeploymentRef) -> Obj:
        """The service spec's `TaskTemplate.Resources.Limits` as last listed (`MemoryBytes`, `NanoCPUs`)."""
        return self._limits.get(ref, {})

    def is_online(self) -> bool:
        """True when the last listing succeeded; otherwise one call to the Engine API decides."""
        if self._online:
            return True
        try:
            self.api.ping()
        except (DockerException, OSError):
            return False
        return True

    def close(self) -> None:
        self.api.close()
