"""The live RolloutSource: Deployments, ReplicaSets and Pods of the targeted namespaces, kept in memory by watches.

The daemon builds one at start, calls `sync()` once, then `list_rollouts()` every tick and `close()` on
shutdown. A tick reads the cache only; background threads keep it current the way client-go's reflector does:
list, then watch from the list's resourceVersion, resume from the last seen resourceVersion when a watch ends,
re-list when the server answers 410 Gone (the version fell out of its window), and on any other error wait
with exponential backoff, then re-list.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from predictor.config import Target
from predictor.domain import RolloutState
from predictor.kube import call_json
from predictor.rollouts.state import owned_replicasets, rollout_state_from_objects

log = logging.getLogger(__name__)

HTTP_GONE = 410


class _Informer:
    """List+watch of one kind in one namespace under one label selector; objects kept by name."""

    def __init__(
        self,
        kind: str,
        list_method: Callable[..., Any],
        namespace: str,
        selector: str,
        *,
        watch_timeout_seconds: float,
        backoff_seconds: float,
        max_backoff_seconds: float,
        stopping: threading.Event,
    ) -> None:
        self.kind = kind
        self.namespace = namespace
        self.selector = selector
        self._list = list_method
        self._watch_timeout_seconds = watch_timeout_seconds
        self._backoff_seconds = backoff_seconds
        self._max_backoff_seconds = max_backoff_seconds
        self._stopping = stopping
        self._lock = threading.Lock()
        self._objects: dict[str, dict[str, Any]] = {}
        self._watch: watch.Watch | None = None
        self._thread: threading.Thread | None = None
        self.resource_version: str | None = None
        self.synced = False
        self.healthy = False

    def __str__(self) -> str:
        where = f"namespace {self.namespace}" + (f" selector {self.selector!r}" if self.selector else "")
        return f"{self.kind} in {where}"

    def _selector_kwargs(self) -> dict[str, Any]:
        return {"label_selector": self.selector} if self.selector else {}

    def relist(self) -> None:
        """Replace the cache with a fresh LIST. Raises ApiException (and connection errors)."""
        body = call_json(self._list, self.namespace, **self._selector_kwargs())
        objects = {str(item["metadata"]["name"]): item for item in body.get("items") or []}
        with self._lock:
            self._objects = objects
            self.resource_version = str((body.get("metadata") or {}).get("resourceVersion") or "") or None
        self.synced = True
        self.healthy = True
        log.debug("listed %s: %d objects at resourceVersion %s", self, len(objects), self.resource_version)

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._objects.values())

    def _apply_event(self, event: dict[str, Any]) -> None:
        kind, obj = event.get("type"), event.get("raw_object") or event.get("object") or {}
        metadata = obj.get("metadata") or {}
        version = metadata.get("resourceVersion")
        with self._lock:
            if kind in ("ADDED", "MODIFIED"):
                self._objects[str(metadata["name"])] = obj
            elif kind == "DELETED":
                self._objects.pop(str(metadata.get("name")), None)
            if version:
                self.resource_version = str(version)
        self.healthy = True

    def watch_once(self) -> int:
        """One watch request from the current resourceVersion until the server ends it or `stop()`; returns
        how many events it delivered."""
        count = 0
        stream = watch.Watch(return_type="object")  # "object": events keep the raw dict, unvalidated
        self._watch = stream
        try:
            for event in stream.stream(
                self._list,
                self.namespace,
                resource_version=self.resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=int(self._watch_timeout_seconds),
                _request_timeout=(10, self._watch_timeout_seconds + 30),
                **self._selector_kwargs(),
            ):
                if self._stopping.is_set():
                    break
                self._apply_event(event)
                count += 1
        finally:
            self._watch = None
        return count

    def run(self) -> None:
        delay = self._backoff_seconds
        gone_in_row = 0  # 410 Gone again right after a re-list: back off, or LIST and WATCH would spin
        while not self._stopping.is_set():
            try:
                if not self.synced or self.resource_version is None:
                    self.relist()
                    delay = self._backoff_seconds
                opened = time.monotonic()
                if self.watch_once() == 0 and time.monotonic() - opened < 1.0:
                    self._stopping.wait(self._backoff_seconds)  # watches ended at once: no busy loop
                gone_in_row = 0
            except ApiException as exc:
                if self._stopping.is_set():
                    break
                if exc.status == HTTP_GONE:
                    gone_in_row += 1
                    log.log(logging.INFO if gone_in_row == 1 else logging.DEBUG,
                            "watch of %s expired (410 Gone at resourceVersion %s): re-listing", self,
                            self.resource_version)
                    self.synced = False
                    if gone_in_row > 1:
                        self._stopping.wait(min(self._backoff_seconds * 2 ** (gone_in_row - 2),
                                                self._max_backoff_seconds))
                    continue
                delay = self._fail(exc, delay)
            except Exception as exc:  # connection reset, timeout, bad JSON: all retried the same way
                if self._stopping.is_set():
                    break
                delay = self._fail(exc, delay)

    def _fail(self, exc: BaseException, delay: float) -> float:
        """Mark unhealthy, wait `delay` (cut short by close()), ask for a re-list; return the next delay."""
        level = logging.WARNING if self.healthy else logging.DEBUG
        log.log(level, "watch of %s failed, retrying in %.2gs: %s", self, delay, _describe(exc))
        self.healthy = False
        self.synced = False
        self._stopping.wait(delay)
        return min(delay * 2, self._max_backoff_seconds)

    def start(self) -> None:
        if self._thread is None:
            name = f"watch-{self.kind}-{self.namespace}"
            self._thread = threading.Thread(target=self.run, name=name, daemon=True)
            self._thread.start()

    def stop(self, timeout_seconds: float) -> None:
        """End the watch and join the thread. `Watch.stop()` can only cut a stream whose response has arrived,
        so it is repeated until the thread ends (a watch opening at the moment of the first call)."""
        deadline = time.monotonic() + timeout_seconds
        while self._thread is not None and self._thread.is_alive() and time.monotonic() < deadline:
            current = self._watch
            if current is not None:
                current.stop()
            self._thread.join(0.05)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"


class InformerSet:
    """The informers of one RolloutSource: one per (kind, namespace, selector) its targets name, listed and started
    together by `sync`, healthy together, stopped together."""

    def __init__(
        self,
        lists: Sequence[tuple[str, Callable[..., Any]]],
        targets: Sequence[Target],
        *,
        watch_timeout_seconds: float,
        backoff_seconds: float,
        max_backoff_seconds: float,
    ) -> None:
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.started = False
        self._informers: dict[tuple[str, str, str], _Informer] = {}
        for target in targets:
            for kind, method in lists:
                key = (kind, target.namespace, target.selector)
                if key not in self._informers:
                    self._informers[key] = _Informer(
                        kind, method, target.namespace, target.selector,
                        watch_timeout_seconds=watch_timeout_seconds,
                        backoff_seconds=backoff_seconds,
                        max_backoff_seconds=max_backoff_seconds,
                        stopping=self._stopping,
                    )

    def sync(self) -> None:
        """List every watched collection now and start the watch threads. Raises ApiException (or a
        connection error) when a LIST fails; idempotent once it has succeeded."""
        with self._lock:
            if self.started:
                return
            for informer in self._informers.values():
                if not informer.synced:
                    informer.relist()
            for informer in self._informers.values():
                informer.start()
            self.started = True

    def snapshot(self, kind: str, target: Target) -> list[dict[str, Any]]:
        """The cached objects of `kind` for `target`, syncing first if `sync()` was never called."""
        if not self.started:
            self.sync()
        return self._informers[(kind, target.namespace, target.selector)].snapshot()

    def is_online(self) -> bool:
        """True once synced while no watch is failing (a routine re-list after 410 Gone does not count)."""
        return self.started and all(informer.healthy for informer in self._informers.values())

    def close(self, timeout_seconds: float = 5.0) -> None:
        """Stop the watches and wait (up to `timeout_seconds` each) for their threads."""
        self._stopping.set()
        for informer in self._informers.values():
            informer.stop(timeout_seconds)


class KubernetesRolloutSource:
    """RolloutSource over the Kubernetes API for the Deployments that `targets` select.

    One Deployment, one ReplicaSet and one Pod informer per distinct (namespace, selector); the target's label
    selector applies to all three, so the pod template labels (which ReplicaSets and Pods carry) must include the
    labels the selector names. Target names are filtered here, not by the API. The Pods fill `RolloutState.pods`,
    so that samples are assigned to new and old pods by their `pod-template-hash` label, not their names (which
    Kubernetes cuts for Deployment names of about 47 characters or more).
    """

    def __init__(
        self,
        api_client: client.ApiClient,
        targets: Sequence[Target],
        *,
        watch_timeout_seconds: float = 300.0,
        backoff_seconds: float = 1.0,
        max_backoff_seconds: float = 60.0,
    ) -> None:
        """`watch_timeout_seconds`: how long the server keeps one watch open (default 300). `backoff_seconds`
        (default 1) doubles after each failed attempt up to `max_backoff_seconds` (default 60)."""
        self._targets = tuple(targets)
        self._warned_orphans: set[tuple[str, str]] = set()
        apps = client.AppsV1Api(api_client)
        core = client.CoreV1Api(api_client)
        self._informers = InformerSet(
            (("Deployment", apps.list_namespaced_deployment), ("ReplicaSet", apps.list_namespaced_replica_set),
             ("Pod", core.list_namespaced_pod)),
            self._targets, watch_timeout_seconds=watch_timeout_seconds, backoff_seconds=backoff_seconds,
            max_backoff_seconds=max_backoff_seconds,
        )

    def sync(self) -> None:
        """List every watched collection now and start the watch threads (`InformerSet.sync`)."""
        self._informers.sync()

    def list_rollouts(self, at: float) -> list[RolloutState]:
        """State of every targeted Deployment from the cache (`at` is ignored: the cache is the present).

        Syncs first if `sync()` was never called. While a watch is failing the cache is served as last seen,
        and `is_online()` is False.
        """
        seen: set[tuple[str, str]] = set()
        states: list[RolloutState] = []
        for target in self._targets:
            deployments = self._informers.snapshot("Deployment", target)
            replicasets = self._informers.snapshot("ReplicaSet", target)
            pods = self._informers.snapshot("Pod", target)
            for deployment in deployments:
                name = str(deployment["metadata"]["name"])
                key = (target.namespace, name)
                if (target.names and name not in target.names) or key in seen:
                    continue
                seen.add(key)
                self._warn_if_orphan(deployment, replicasets, target)
                states.append(rollout_state_from_objects(deployment, replicasets, pods))
        states.sort(key=lambda state: state.ref)
        return states

    def _warn_if_orphan(
        self, deployment: dict[str, Any], replicasets: list[dict[str, Any]], target: Target
    ) -> None:
        """Warn once about a Deployment running pods without a ReplicaSet in the cache (selector misses)."""
        key = (target.namespace, str(deployment["metadata"]["name"]))
        status = deployment.get("status") or {}
        if key in self._warned_orphans or not status.get("replicas"):
            return
        if owned_replicasets(deployment, replicasets):
            return
        self._warned_orphans.add(key)
        log.warning(
            "deployment %s/%s runs %s pods but no ReplicaSet of it matches selector %r: its pod template "
            "labels must carry the selector's labels for new and old pods to be told apart",
            key[0], key[1], status.get("replicas"), target.selector,
        )

    def is_online(self) -> bool:
        """True once synced while no watch is failing (a routine re-list after 410 Gone does not count)."""
        return self._informers.is_online()

    def close(self, timeout_seconds: float = 5.0) -> None:
        """Stop the watches and wait (up to `timeout_seconds` each) for their threads."""
        self._informers.close(timeout_seconds)
