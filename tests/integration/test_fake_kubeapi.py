"""Tests of the fake Kubernetes API server itself, through the official client and through kubectl.

They pin the real-server behaviours the daemon's code relies on, so a test passing against the fake means
the same code would behave the same against a real cluster.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from tests.fakes.kubeapi import (
    KUBECTL,
    POD_TEMPLATE_HASH_LABEL,
    REVISION_ANNOTATION,
    FakeKubeAPI,
    labels_match,
    make_deployment,
    parse_label_selector,
    strategic_merge_patch,
)
from tests.fixtures.kube import requires_kubectl

NS = "default"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def _apps(fake: FakeKubeAPI) -> client.AppsV1Api:
    return client.AppsV1Api(fake.api_client())


def _core(fake: FakeKubeAPI) -> client.CoreV1Api:
    return client.CoreV1Api(fake.api_client())


def _status_body(exc: ApiException) -> dict[str, Any]:
    body = json.loads(exc.body)
    assert body["kind"] == "Status"
    assert body["apiVersion"] == "v1"
    assert body["status"] == "Failure"
    assert body["code"] == exc.status
    return body


def _lease(name: str, holder: str = "a", labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": NS, "labels": labels or {}},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15},
    }


def _replica_sets(fake: FakeKubeAPI, name: str) -> list[dict[str, Any]]:
    return sorted(
        fake.list("apps/v1", "ReplicaSet", NS, label_selector=f"app={name}"),
        key=lambda rs: int(rs["metadata"]["annotations"][REVISION_ANNOTATION]),
    )


def _collect(list_func: Any, *args: Any, count: int, **kwargs: Any) -> list[tuple[str, Any]]:
    """The first `count` watch events (type, object), with a timeout as a safety net."""
    events: list[tuple[str, Any]] = []
    watcher = watch.Watch()
    for event in watcher.stream(list_func, *args, timeout_seconds=5, **kwargs):
        events.append((event["type"], event["object"]))
        if len(events) == count:
            watcher.stop()
    return events


def _set_image(fake: FakeKubeAPI, name: str, image: str) -> None:
    _apps(fake).patch_namespaced_deployment(
        name, NS, {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}}
    )


# ----------------------------------------------------------------------------------------------------------
# Discovery


def test_discovery_for_the_official_client(fake_kube: FakeKubeAPI) -> None:
    api = fake_kube.api_client()
    assert client.VersionApi(api).get_code().git_version.startswith("v1.32")
    assert client.CoreApi(api).get_api_versions().versions == ["v1"]
    groups = {
        g.name: g.preferred_version.group_version for g in client.ApisApi(api).get_api_versions().groups
    }
    assert groups == {
        "apps": "apps/v1",
        "coordination.k8s.io": "coordination.k8s.io/v1",
        "events.k8s.io": "events.k8s.io/v1",
        "argoproj.io": "argoproj.io/v1alpha1",  # Argo Rollouts' CRD, installed
    }
    apps = {r.name: r for r in client.AppsV1Api(api).get_api_resources().resources}
    assert {"deployments", "deployments/status", "deployments/scale", "replicasets"} <= set(apps)
    assert apps["deployments"].short_names == ["deploy"]
    assert "watch" in apps["deployments"].verbs
    core = {r.name for r in client.CoreV1Api(api).get_api_resources().resources}
    assert {"pods", "events", "namespaces", "namespaces/status", "pods/status"} <= core
    leases = client.CoordinationV1Api(api).get_api_resources()
    assert [r.name for r in leases.resources] == ["leases"]
    assert client.EventsV1Api(api).get_api_resources().group_version == "events.k8s.io/v1"


# ----------------------------------------------------------------------------------------------------------
# CRUD, selectors, errors


def test_create_get_list_with_label_and_field_selectors(fake_kube: FakeKubeAPI) -> None:
    apps = _apps(fake_kube)
    created = [
        apps.create_namespaced_deployment(NS, make_deployment("a", labels={"app": "a", "tier": "web"})),
        apps.create_namespaced_deployment(NS, make_deployment("b", labels={"app": "b", "tier": "db"})),
        apps.create_namespaced_deployment(NS, make_deployment("c", labels={"app": "c"})),
    ]
    fake_kube.create(make_deployment("d", namespace="other", labels={"app": "d", "tier": "web"}))
    versions = [int(d.metadata.resource_version) for d in created]
    assert versions == sorted(versions) and len(set(versions)) == 3
    assert len({d.metadata.uid for d in created}) == 3
    assert all(d.metadata.generation == 1 for d in created)

    got = apps.read_namespaced_deployment("a", NS)
    assert (got.kind, got.api_version) == ("Deployment", "apps/v1")
    raw = fake_kube.get("apps/v1", "Deployment", NS, "a")
    assert RFC3339.match(raw["metadata"]["creationTimestamp"])
    assert raw["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
    }

    def names(**kwargs: Any) -> list[str]:
        return [d.metadata.name for d in apps.list_namespaced_deployment(NS, **kwargs).items]

    assert names() == ["a", "b", "c"]
    assert names(label_selector="tier=web") == ["a"]
    assert names(label_selector="tier==db") == ["b"]
    assert names(label_selector="tier!=web") == ["b", "c"]
    assert names(label_selector="app in (a, c)") == ["a", "c"]
    assert names(label_selector="app notin (a)") == ["b", "c"]
    assert names(label_selector="tier") == ["a", "b"]
    assert names(label_selector="!tier") == ["c"]
    assert names(label_selector="app in (a,b),tier!=db") == ["a"]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert names(field_selector="metadata.name!=b", label_selector="app") == ["a", "c"]

    listed = apps.list_namespaced_deployment(NS)
    assert listed.kind == "DeploymentList"
    assert int(listed.metadata.resource_version) >= max(versions)
    everywhere = apps.list_deployment_for_all_namespaces(label_selector="tier=web")
    assert [(d.metadata.namespace, d.metadata.name) for d in everywhere.items] == [
        ("default", "a"),
        ("other", "d"),
    ]

    with pytest.raises(ApiException) as bad:
        apps.list_namespaced_deployment(NS, label_selector="app in a")
    assert bad.value.status == 400


def test_real_error_statuses(fake_kube: FakeKubeAPI) -> None:
    apps = _apps(fake_kube)
    apps.create_namespaced_deployment(NS, make_deployment("web"))

    with pytest.raises(ApiException) as exists:
        apps.create_namespaced_deployment(NS, make_deployment("web"))
    body = _status_body(exists.value)
    assert (exists.value.status, body["reason"]) == (409, "AlreadyExists")
    assert body["message"] == 'deployments.apps "web" already exists'
    assert body["details"] == {"name": "web", "group": "apps", "kind": "deployments"}

    with pytest.raises(ApiException) as missing:
        apps.read_namespaced_deployment("nope", NS)
    body = _status_body(missing.value)
    assert (missing.value.status, body["reason"]) == (404, "NotFound")
    assert body["message"] == 'deployments.apps "nope" not found'

    with pytest.raises(ApiException) as no_namespace:
        apps.create_namespaced_deployment("ghost", make_deployment("web", namespace="ghost"))
    assert no_namespace.value.status == 404
    assert _status_body(no_namespace.value)["message"] == 'namespaces "ghost" not found'

    broken = make_deployment("broken")
    broken["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    with pytest.raises(ApiException) as invalid:
        apps.create_namespaced_deployment(NS, broken)
    body = _status_body(invalid.value)
    assert (invalid.value.status, body["reason"]) == (422, "Invalid")
    assert body["details"]["causes"][0]["field"] == "spec.template.metadata.labels"

    with pytest.raises(ApiException) as pod_missing:
        _core(fake_kube).delete_namespaced_pod("nope", NS)
    assert pod_missing.value.status == 404
    assert _status_body(pod_missing.value)["details"] == {"name": "nope", "kind": "pods"}


def test_namespaces_and_leases(fake_kube: FakeKubeAPI) -> None:
    core = _core(fake_kube)
    assert {"default", "kube-system"} <= {n.metadata.name for n in core.list_namespace().items}
    core.create_namespace({"metadata": {"name": "team-a"}})
    team = core.read_namespace("team-a")
    assert team.status.phase == "Active"
    assert team.metadata.labels == {"kubernetes.io/metadata.name": "team-a"}

    leases = client.CoordinationV1Api(fake_kube.api_client())
    first = leases.create_namespaced_lease(NS, _lease("leader"))
    first.spec.holder_identity = "b"
    renewed = leases.replace_namespaced_lease("leader", NS, first)
    assert renewed.spec.holder_identity == "b"
    first.spec.holder_identity = "c"  # still carries the resourceVersion read before the renewal
    with pytest.raises(ApiException) as stale:
        leases.replace_namespaced_lease("leader", NS, first)
    assert stale.value.status == 409
    assert _status_body(stale.value)["reason"] == "Conflict"
    assert leases.read_namespaced_lease("leader", NS).spec.holder_identity == "b"


# ----------------------------------------------------------------------------------------------------------
# Watch


def test_watch_replays_in_order_and_resumes_from_a_resource_version(fake_kube: FakeKubeAPI) -> None:
    leases = client.CoordinationV1Api(fake_kube.api_client())
    start = leases.list_namespaced_lease(NS).metadata.resource_version
    leases.create_namespaced_lease(NS, _lease("one"))
    leases.patch_namespaced_lease("one", NS, {"spec": {"holderIdentity": "b"}})
    leases.create_namespaced_lease(NS, _lease("two"))
    leases.delete_namespaced_lease("one", NS)

    seen = [
        (etype, obj.metadata.name, obj.metadata.resource_version)
        for etype, obj in _collect(leases.list_namespaced_lease, NS, resource_version=start, count=4)
    ]
    assert [(t, n) for t, n, _ in seen] == [
        ("ADDED", "one"),
        ("MODIFIED", "one"),
        ("ADDED", "two"),
        ("DELETED", "one"),
    ]
    assert [int(rv) for _, _, rv in seen] == sorted(int(rv) for _, _, rv in seen)

    resumed = _collect(leases.list_namespaced_lease, NS, resource_version=seen[1][2], count=2)
    assert [(etype, obj.metadata.name) for etype, obj in resumed] == [("ADDED", "two"), ("DELETED", "one")]

    # No resourceVersion: synthetic ADDED for the current state first, then live events.
    leases.create_namespaced_lease(NS, _lease("three"))
    leases.patch_namespaced_lease("two", NS, {"spec": {"holderIdentity": "z"}})
    initial = _collect(leases.list_namespaced_lease, NS, count=2)
    assert [(etype, obj.metadata.name) for etype, obj in initial] == [("ADDED", "three"), ("ADDED", "two")]
    assert initial[1][1].spec.holder_identity == "z"


def test_watch_streams_live_events(fake_kube: FakeKubeAPI) -> None:
    apps = _apps(fake_kube)
    start = apps.list_namespaced_deployment(NS).metadata.resource_version
    received: list[tuple[str, str, int]] = []
    watcher = watch.Watch()

    def consume() -> None:
        for event in watcher.stream(
            apps.list_namespaced_deployment, NS, resource_version=start, timeout_seconds=10
        ):
            obj = event["object"]
            received.append((event["type"], obj.metadata.name, obj.metadata.generation))
            if event["type"] == "MODIFIED" and obj.metadata.generation == 2:
                watcher.stop()

    thread = threading.Thread(target=consume)
    thread.start()
    assert fake_kube.wait_for(lambda: bool(fake_kube.requests_matching("GET", r".*/deployments")))
    apps.create_namespaced_deployment(NS, make_deployment("live"))
    apps.patch_namespaced_deployment("live", NS, {"spec": {"replicas": 2}})
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert received[0] == ("ADDED", "live", 1)
    assert received[-1] == ("MODIFIED", "live", 2)
    assert {t for t, _, _ in received[1:]} == {"MODIFIED"}


def test_watch_label_selector_turns_leaving_objects_into_deleted(fake_kube: FakeKubeAPI) -> None:
    leases = client.CoordinationV1Api(fake_kube.api_client())
    start = leases.list_namespaced_lease(NS).metadata.resource_version
    leases.create_namespaced_lease(NS, _lease("x", labels={"role": "leader"}))
    leases.create_namespaced_lease(NS, _lease("y", labels={"role": "follower"}))
    leases.patch_namespaced_lease("x", NS, {"metadata": {"labels": {"role": "follower"}}})
    leases.patch_namespaced_lease("y", NS, {"metadata": {"labels": {"role": "leader"}}})
    events = _collect(
        leases.list_namespaced_lease, NS, label_selector="role=leader", resource_version=start, count=3
    )
    assert [(etype, obj.metadata.name) for etype, obj in events] == [
        ("ADDED", "x"),
        ("DELETED", "x"),
        ("ADDED", "y"),
    ]


def test_watch_from_a_compacted_resource_version_is_expired() -> None:
    with FakeKubeAPI(history_size=3) as fake:
        leases = client.CoordinationV1Api(fake.api_client())
        start = leases.list_namespaced_lease(NS).metadata.resource_version
        for i in range(5):
            leases.create_namespaced_lease(NS, _lease(f"l{i}"))
        with pytest.raises(ApiException) as expired:
            list(
                watch.Watch().stream(
                    leases.list_namespaced_lease, NS, resource_version=start, timeout_seconds=1
                )
            )
        assert expired.value.status == 410
        assert "Expired" in str(expired.value.reason)
        recent = fake.resource_version - 1
        events = _collect(leases.list_namespaced_lease, NS, resource_version=str(recent), count=1)
        assert [obj.metadata.name for _, obj in events] == ["l4"]
        assert fake.server_errors == []


def test_stop_ends_open_watches_promptly() -> None:
    fake = FakeKubeAPI().start()
    core = client.CoreV1Api(fake.api_client())
    core.list_namespaced_pod(NS)  # warm the client up outside the timed part
    ended = threading.Event()

    def consume() -> None:
        list(watch.Watch().stream(core.list_namespaced_pod, NS, timeout_seconds=60))
        ended.set()  # the stream ended cleanly (terminating chunk), not with a connection error

    thread = threading.Thread(target=consume)
    thread.start()
    # Wait for the watch itself: the warm-up list matches the same path.
    assert fake.wait_for(
        lambda: any(
            request.query.get("watch") == ["true"]
            for request in fake.requests_matching("GET", r"/api/v1/namespaces/default/pods")
        )
    )
    started = time.monotonic()
    fake.stop()
    assert time.monotonic() - started < 2
    thread.join(timeout=5)
    assert ended.is_set()
    assert fake.server_errors == []


def test_watch_honours_timeout_seconds(fake_kube: FakeKubeAPI) -> None:
    started = time.monotonic()
    events = list(watch.Watch().stream(_core(fake_kube).list_namespaced_pod, NS, timeout_seconds=1))
    elapsed = time.monotonic() - started
    assert events == []
    assert 0.9 <= elapsed < 3


# ----------------------------------------------------------------------------------------------------------
# Patches, optimistic concurrency, generation


def test_merge_strategic_and_json_patches(fake_kube: FakeKubeAPI) -> None:
    apps = _apps(fake_kube)
    manifest = make_deployment("web", labels={"app": "web"})
    manifest["metadata"]["labels"]["drop-me"] = "yes"
    manifest["spec"]["template"]["spec"]["containers"].append(
        {"name": "sidecar", "image": "proxy:1", "env": [{"name": "A", "value": "1"}]}
    )
    apps.create_namespaced_deployment(NS, manifest)
    fake_kube.clear_requests()

    merged = apps.patch_namespaced_deployment(
        "web",
        NS,
        {"metadata": {"labels": {"team": "checkout", "drop-me": None}}},
        _content_type="application/merge-patch+json",
    )
    assert merged.metadata.labels == {"app": "web", "team": "checkout"}

    strategic = apps.patch_namespaced_deployment(
        "web",
        NS,
        {
            "spec": {
                "template": {
                    "spec": {"containers": [{"name": "sidecar", "env": [{"name": "B", "value": "2"}]}]}
                }
            }
        },
    )
    sidecar = strategic.spec.template.spec.containers[1]
    assert [c.name for c in strategic.spec.template.spec.containers] == ["app", "sidecar"]
    assert sidecar.image == "proxy:1"
    assert [(e.name, e.value) for e in sidecar.env] == [("A", "1"), ("B", "2")]

    patched = apps.patch_namespaced_deployment(
        "web",
        NS,
        [
            {"op": "test", "path": "/spec/replicas", "value": 4},
            {"op": "replace", "path": "/spec/replicas", "value": 6},
            {"op": "remove", "path": "/spec/template/spec/containers/1"},
        ],
    )
    assert patched.spec.replicas == 6
    assert [c.name for c in patched.spec.template.spec.containers] == ["app"]

    with pytest.raises(ApiException) as failed_test:
        apps.patch_namespaced_deployment("web", NS, [{"op": "test", "path": "/spec/replicas", "value": 4}])
    assert failed_test.value.status == 422

    patches = fake_kube.requests_matching("PATCH", r"/apis/apps/v1/namespaces/default/deployments/web")
    assert [p.content_type for p in patches] == [
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
        "application/json-patch+json",
        "application/json-patch+json",
    ]
    assert [p.status for p in patches] == [200, 200, 200, 422]
    assert patches[0].body == {"metadata": {"labels": {"team": "checkout", "drop-me": None}}}


def test_strategic_merge_directives_and_selector_parsing() -> None:
    original = {
        "containers": [{"name": "app", "image": "a:1"}, {"name": "proxy", "image": "p:1"}],
        "metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x"]},
        "tolerations": [{"key": "k"}],
    }
    patched = strategic_merge_patch(
        original,
        {
            "containers": [{"name": "proxy", "$patch": "delete"}, {"name": "new", "image": "n:1"}],
            "metadata": {"labels": {"$patch": "replace", "c": "3"}, "finalizers": ["y"]},
            "tolerations": [{"key": "other"}],
        },
    )
    assert patched == {
        "containers": [{"name": "app", "image": "a:1"}, {"name": "new", "image": "n:1"}],
        "metadata": {"labels": {"c": "3"}, "finalizers": ["x", "y"]},
        "tolerations": [{"key": "other"}],
    }
    labels = {"app": "web", "tier": "fe", "rank": "3"}
    assert labels_match(parse_label_selector("app=web,tier in (fe,be),!canary,rank>2"), labels)
    assert not labels_match(parse_label_selector("app=web,rank<3"), labels)
    assert labels_match(parse_label_selector(""), labels)


def test_stale_resource_version_is_a_conflict(fake_kube: FakeKubeAPI) -> None:
    apps = _apps(fake_kube)
    apps.create_namespaced_deployment(NS, make_deployment("web"))
    fresh = apps.read_namespaced_deployment("web", NS)
    stale_rv = fresh.metadata.resource_version
    fresh.spec.replicas = 5
    updated = apps.replace_namespaced_deployment("web", NS, fresh)
    assert updated.spec.replicas == 5
    assert int(updated.metadata.resource_version) > int(stale_rv)

    fresh.spec.replicas = 7  # still carries stale_rv
    with pytest.raises(ApiException) as put:
        apps.replace_namespaced_deployment("web", NS, fresh)
    assert put.value.status == 409
    body = _status_body(put.value)
    assert body["reason"] == "Conflict"
    assert body["message"] == (
        'Operation cannot be fulfilled on deployments.apps "web": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )

    for content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
        with pytest.raises(ApiException) as patch:
            apps.patch_namespaced_deployment(
                "web",
                NS,
                {"metadata": {"resourceVersion": stale_rv}, "spec": {"replicas": 9}},
                _content_type=content_type,
            )
        assert patch.value.status == 409
    current = apps.read_namespaced_deployment("web", NS)
    assert current.spec.replicas == 5
    with_current_rv = apps.patch_namespaced_deployment(
        "web",
        NS,
        {"metadata": {"resourceVersion": current.metadata.resource_version}, "spec": {"replicas": 3}},
    )
    assert with_current_rv.spec.replicas == 3


def test_injected_conflicts_fail_the_next_writes_only(fake_kube: FakeKubeAPI) -> None:
    apps = _apps(fake_kube)
    apps.create_namespaced_deployment(NS, make_deployment("web"))
    fake_kube.inject_conflicts("Deployment", NS, "web", 2)
    fake_kube.clear_requests()
    outcomes = []
    for _ in range(3):
        try:
            apps.patch_namespaced_deployment("web", NS, {"spec": {"paused": True}})
            outcomes.append(200)
        except ApiException as exc:
            outcomes.append(exc.status)
            assert _status_body(exc)["reason"] == "Conflict"
    assert outcomes == [409, 409, 200]
    assert [r.status for r in fake_kube.requests_matching("PATCH")] == [409, 409, 200]
    assert apps.read_namespaced_deployment("web", NS).spec.paused is True


def test_generation_moves_only_with_spec_and_status_is_a_subresource(fake_kube: FakeKubeAPI) -> None:
    apps = _apps(fake_kube)
    apps.create_namespaced_deployment(NS, make_deployment("web"))
    before = apps.read_namespaced_deployment("web", NS)
    assert before.metadata.generation == 1
    assert before.status.observed_generation == 1

    labelled = apps.patch_namespaced_deployment("web", NS, {"metadata": {"labels": {"x": "y"}}})
    assert labelled.metadata.generation == 1
    assert int(labelled.metadata.resource_version) > int(before.metadata.resource_version)

    noop = apps.patch_namespaced_deployment("web", NS, {"metadata": {"labels": {"x": "y"}}})
    assert noop.metadata.resource_version == labelled.metadata.resource_version

    ignored = apps.patch_namespaced_deployment("web", NS, {"status": {"replicas": 42}})
    assert ignored.status.replicas != 42

    status_patched = apps.patch_namespaced_deployment_status(
        "web", NS, {"spec": {"replicas": 9}, "status": {"replicas": 42}}
    )
    assert (status_patched.status.replicas, status_patched.spec.replicas) == (42, 4)
    assert status_patched.metadata.generation == 1

    scaled = apps.patch_namespaced_deployment("web", NS, {"spec": {"replicas": 2}})
    assert scaled.metadata.generation == 2
    assert apps.read_namespaced_deployment("web", NS).status.observed_generation == 2

    scale = apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 3}})
    assert (scale.kind, scale.spec.replicas, scale.status.selector) == ("Scale", 3, "app=web")
    assert apps.read_namespaced_deployment("web", NS).metadata.generation == 3


# ----------------------------------------------------------------------------------------------------------
# Deployment controller simulation


def test_template_change_creates_revision_2_and_settle_moves_replicas(fake_kube: FakeKubeAPI) -> None:
    apps = _apps(fake_kube)
    apps.create_namespaced_deployment(NS, make_deployment("web", image="app:v1", replicas=4))
    (first,) = _replica_sets(fake_kube, "web")
    assert first["metadata"]["annotations"][REVISION_ANNOTATION] == "1"
    assert first["spec"]["replicas"] == 0
    assert fake_kube.controller.settle() == 4
    assert apps.read_namespaced_deployment("web", NS).status.updated_replicas == 4

    _set_image(fake_kube, "web", "app:v2")
    deployment = apps.read_namespaced_deployment("web", NS)
    assert deployment.metadata.annotations[REVISION_ANNOTATION] == "2"
    assert deployment.metadata.generation == deployment.status.observed_generation == 2
    old, new = _replica_sets(fake_kube, "web")
    pod_hash = new["metadata"]["labels"][POD_TEMPLATE_HASH_LABEL]
    assert re.fullmatch(r"[a-z0-9]{6,10}", pod_hash)
    assert new["metadata"]["name"] == f"web-{pod_hash}"
    assert new["metadata"]["annotations"][REVISION_ANNOTATION] == "2"
    assert new["spec"]["selector"]["matchLabels"] == {"app": "web", POD_TEMPLATE_HASH_LABEL: pod_hash}
    assert new["spec"]["template"]["spec"]["containers"][0]["image"] == "app:v2"
    (owner,) = new["metadata"]["ownerReferences"]
    assert owner == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "web",
        "uid": deployment.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert (old["spec"]["replicas"], new["spec"]["replicas"]) == (4, 0)

    assert fake_kube.controller.step() is True
    old, new = _replica_sets(fake_kube, "web")
    assert (old["spec"]["replicas"], new["spec"]["replicas"]) == (4, 1)  # surge first: maxSurge 25% of 4 = 1
    assert fake_kube.controller.step() is True
    old, new = _replica_sets(fake_kube, "web")
    assert (old["spec"]["replicas"], new["spec"]["replicas"]) == (3, 1)  # then down, within maxUnavailable
    middle = apps.read_namespaced_deployment("web", NS).status
    assert (middle.replicas, middle.updated_replicas, middle.available_replicas) == (4, 1, 4)
    progressing = next(c for c in middle.conditions if c.type == "Progressing")
    assert (progressing.status, progressing.reason) == ("True", "ReplicaSetUpdated")

    assert fake_kube.controller.settle() == 6
    old, new = _replica_sets(fake_kube, "web")
    assert (old["spec"]["replicas"], new["spec"]["replicas"]) == (0, 4)
    assert (old["status"]["replicas"], new["status"]["readyReplicas"]) == (0, 4)
    final = apps.read_namespaced_deployment("web", NS).status
    assert (final.replicas, final.updated_replicas, final.ready_replicas, final.available_replicas) == (
        4,
        4,
        4,
        4,
    )
    assert final.unavailable_replicas is None
    conditions = {c.type: (c.status, c.reason) for c in final.conditions}
    assert conditions == {
        "Available": ("True", "MinimumReplicasAvailable"),
        "Progressing": ("True", "NewReplicaSetAvailable"),
    }
    assert fake_kube.controller.is_complete(NS, "web")

    pods = _core(fake_kube).list_namespaced_pod(NS, label_selector="app=web").items
    assert len(pods) == 4
    for pod in pods:
        assert re.fullmatch(rf"web-{pod_hash}-[a-z0-9]{{5}}", pod.metadata.name)
        assert pod.metadata.labels[POD_TEMPLATE_HASH_LABEL] == pod_hash
        assert pod.metadata.owner_references[0].name == new["metadata"]["name"]
        assert pod.status.phase == "Running"
    reasons = {e.reason for e in _core(fake_kube).list_namespaced_event(NS).items}
    assert {"ScalingReplicaSet", "SuccessfulCreate", "SuccessfulDelete"} <= reasons


def test_rollback_reuses_the_old_replica_set_with_a_new_revision(fake_kube: FakeKubeAPI) -> None:
    fake_kube.create(make_deployment("web", image="app:v1"))
    fake_kube.controller.settle()
    _set_image(fake_kube, "web", "app:v2")
    fake_kube.controller.settle()
    _set_image(fake_kube, "web", "app:v1")
    revisions = [
        (rs["spec"]["template"]["spec"]["containers"][0]["image"], rs["metadata"]["annotations"])
        for rs in _replica_sets(fake_kube, "web")
    ]
    assert [(image, a[REVISION_ANNOTATION]) for image, a in revisions] == [("app:v2", "2"), ("app:v1", "3")]
    assert revisions[1][1]["deployment.kubernetes.io/revision-history"] == "1"
    deployment = fake_kube.get("apps/v1", "Deployment", NS, "web")
    assert deployment["metadata"]["annotations"][REVISION_ANNOTATION] == "3"


def test_paused_deployment_does_not_progress(fake_kube: FakeKubeAPI) -> None:
    apps = _apps(fake_kube)
    fake_kube.create(make_deployment("web", image="app:v1"))
    fake_kube.controller.settle()
    apps.patch_namespaced_deployment("web", NS, {"spec": {"paused": True}})
    _set_image(fake_kube, "web", "app:v2")
    assert len(_replica_sets(fake_kube, "web")) == 1  # no new ReplicaSet while paused
    assert fake_kube.controller.step() is False
    progressing = next(
        c for c in apps.read_namespaced_deployment("web", NS).status.conditions if c.type == "Progressing"
    )
    assert (progressing.status, progressing.reason) == ("Unknown", "DeploymentPaused")

    apps.patch_namespaced_deployment("web", NS, {"spec": {"paused": False}})
    assert len(_replica_sets(fake_kube, "web")) == 2
    assert fake_kube.controller.step() is True
    fake_kube.controller.set_progress_deadline_exceeded(NS, "web")
    status = apps.read_namespaced_deployment("web", NS).status
    progressing = next(c for c in status.conditions if c.type == "Progressing")
    assert (progressing.status, progressing.reason) == ("False", "ProgressDeadlineExceeded")
    assert (
        progressing.message
        == f'ReplicaSet "{_replica_sets(fake_kube, "web")[1]["metadata"]["name"]}" '
        + ("has timed out progressing.")
    )


def test_a_deleted_pod_is_replaced_by_its_replica_set(fake_kube: FakeKubeAPI) -> None:
    core = _core(fake_kube)
    fake_kube.create(make_deployment("web", replicas=2))
    fake_kube.controller.settle()
    before = {p.metadata.name for p in core.list_namespaced_pod(NS).items}
    victim = sorted(before)[0]
    deleted = core.delete_namespaced_pod(victim, NS)
    assert (deleted.kind, deleted.metadata.name) == ("Pod", victim)  # pods: the deleted object, not a Status
    after = {p.metadata.name for p in core.list_namespaced_pod(NS).items}
    assert len(after) == 2
    assert victim not in after
    (replacement,) = after - before
    assert replacement.rsplit("-", 1)[0] == victim.rsplit("-", 1)[0]


def test_deleting_a_deployment_collects_its_replica_sets_and_pods(fake_kube: FakeKubeAPI) -> None:
    apps = _apps(fake_kube)
    fake_kube.create(make_deployment("web", replicas=2))
    fake_kube.controller.settle()
    assert len(fake_kube.list("v1", "Pod", NS)) == 2
    status = apps.delete_namespaced_deployment("web", NS)  # the v37 client returns the raw body here
    assert (status["kind"], status["status"], status["details"]["name"]) == ("Status", "Success", "web")
    assert fake_kube.list("apps/v1", "ReplicaSet", NS) == []
    assert fake_kube.list("v1", "Pod", NS) == []


def test_core_and_events_v1_share_storage(fake_kube: FakeKubeAPI) -> None:
    core = _core(fake_kube)
    events = client.EventsV1Api(fake_kube.api_client())
    regarding = {"kind": "Deployment", "namespace": NS, "name": "web", "apiVersion": "apps/v1"}
    created = events.create_namespaced_event(
        NS,
        {
            "metadata": {"name": "web.rollback"},
            "eventTime": "2024-05-01T10:00:00.000000Z",
            "reportingController": "predictor",
            "reportingInstance": "predictor-0",
            "action": "Rollback",
            "reason": "SLOBreachPredicted",
            "type": "Warning",
            "note": "rolled back",
            "regarding": regarding,
        },
    )
    assert created.regarding.name == "web"
    as_core = core.read_namespaced_event("web.rollback", NS)
    assert (as_core.message, as_core.reason, as_core.reporting_component) == (
        "rolled back",
        "SLOBreachPredicted",
        "predictor",
    )
    assert as_core.involved_object.kind == "Deployment"
    listed = core.list_namespaced_event(NS, field_selector="involvedObject.name=web")
    assert [e.metadata.name for e in listed.items] == ["web.rollback"]

    with pytest.raises(ApiException) as invalid:
        events.create_namespaced_event(
            NS, {"metadata": {"name": "bad"}, "eventTime": "2024-05-01T10:00:00.000000Z", "type": "Normal"}
        )
    assert invalid.value.status == 422


# ----------------------------------------------------------------------------------------------------------
# kubectl


@requires_kubectl
def test_kubectl_rollout_history_and_undo(fake_kube: FakeKubeAPI) -> None:
    fake_kube.create(make_deployment("web", image="app:v1"))
    fake_kube.controller.settle()
    _set_image(fake_kube, "web", "app:v2")
    fake_kube.controller.settle()
    first, second = _replica_sets(fake_kube, "web")

    history = fake_kube.kubectl("rollout", "history", "deployment/web")
    assert history.returncode == 0, history.stderr
    rows = [line.split()[0] for line in history.stdout.splitlines()[2:] if line.strip()]
    assert rows == ["1", "2"]

    fake_kube.clear_requests()
    undo = fake_kube.kubectl("rollout", "undo", "deployment/web")
    assert undo.returncode == 0, undo.stderr
    assert "rolled back" in undo.stdout
    (patch,) = fake_kube.requests_matching("PATCH")
    assert patch.content_type == "application/json-patch+json"
    assert [op["path"] for op in patch.body] == ["/spec/template", "/metadata/annotations"]

    deployment = fake_kube.get("apps/v1", "Deployment", NS, "web")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "app:v1"
    assert deployment["metadata"]["annotations"][REVISION_ANNOTATION] == "3"
    rolled = fake_kube.get("apps/v1", "ReplicaSet", NS, first["metadata"]["name"])
    assert rolled["metadata"]["annotations"][REVISION_ANNOTATION] == "3"
    assert len(_replica_sets(fake_kube, "web")) == 2  # the revision-1 ReplicaSet was reused, not recreated
    fake_kube.controller.settle()
    assert fake_kube.get("apps/v1", "ReplicaSet", NS, second["metadata"]["name"])["spec"]["replicas"] == 0

    again = fake_kube.kubectl("rollout", "history", "deployment/web")
    assert [line.split()[0] for line in again.stdout.splitlines()[2:] if line.strip()] == ["2", "3"]


@requires_kubectl
def test_kubectl_patch_get_and_scale(fake_kube: FakeKubeAPI, fake_kubeconfig: Path, tmp_path: Path) -> None:
    fake_kube.create(make_deployment("web", replicas=2))
    fake_kube.controller.settle()
    _set_image(fake_kube, "web", "app:v2")
    fake_kube.controller.settle()
    fake_kube.clear_requests()

    patched = subprocess.run(
        [
            KUBECTL,
            "--kubeconfig",
            str(fake_kubeconfig),
            "--cache-dir",
            str(tmp_path / "cache"),
            "patch",
            "deployment",
            "web",
            "-p",
            '{"spec":{"paused":true}}',
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert patched.returncode == 0, patched.stderr
    assert patched.stdout.strip() == "deployment.apps/web patched"
    assert fake_kube.get("apps/v1", "Deployment", NS, "web")["spec"]["paused"] is True
    (patch,) = fake_kube.requests_matching("PATCH")
    assert patch.content_type == "application/strategic-merge-patch+json"

    table = fake_kube.kubectl("get", "deployments")
    assert table.returncode == 0, table.stderr
    assert re.search(r"^web\s+2/2\s+2\s+2\s+\S+$", table.stdout, re.MULTILINE), table.stdout

    scaled = fake_kube.kubectl("scale", "deployment/web", "--replicas=3")
    assert scaled.returncode == 0, scaled.stderr
    assert fake_kube.get("apps/v1", "Deployment", NS, "web")["spec"]["replicas"] == 3

    paused_undo = fake_kube.kubectl("rollout", "undo", "deployment/web")
    assert paused_undo.returncode != 0
    assert "cannot rollback a paused deployment" in paused_undo.stderr
