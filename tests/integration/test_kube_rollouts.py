"""KubernetesRolloutSource and build_api_client over real HTTP against the fake API server.

The source's cache is fed by watches in background threads, so assertions on it wait (briefly, polling) for
the watch to deliver what the fake has already committed.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import urllib3
from kubernetes import client

from predictor.config import KubernetesConfig, Target
from predictor.domain import DeploymentRef, RolloutState
from predictor.kube import KubeConfigError, build_api_client
from predictor.rollouts.kubernetes import KubernetesRolloutSource
from predictor.rollouts.state import parse_time
from tests.fakes.kubeapi import FakeKubeAPI, make_deployment

T = TypeVar("T")
NOW = 0.0  # the live source ignores `at`


def eventually(produce: Callable[[], T], check: Callable[[T], bool], timeout: float = 5.0) -> T:
    """Poll `produce()` until `check` accepts its value; fail with the last value after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = produce()
        if check(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s; last value: {value!r}")
        time.sleep(0.01)


def set_image(fake: FakeKubeAPI, name: str, image: str, namespace: str = "default") -> None:
    fake.patch("apps/v1", "Deployment", namespace, name,
               {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}})


def replicaset_hash(fake: FakeKubeAPI, name: str, revision: int, namespace: str = "default") -> str:
    """pod-template-hash of the ReplicaSet of `name` at `revision`, read from the fake directly."""
    for rs in fake.list("apps/v1", "ReplicaSet", namespace):
        owner = rs["metadata"]["ownerReferences"][0]["name"]
        rs_revision = rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
        if owner == name and rs_revision == str(revision):
            return str(rs["metadata"]["labels"]["pod-template-hash"])
    raise AssertionError(f"no ReplicaSet of {name} at revision {revision}")


def lists(fake: FakeKubeAPI, kind: str = "(deployments|replicasets)") -> list[Any]:
    """LIST requests (GET on a collection without watch=true)."""
    collection = fake.requests_matching("GET", rf"/apis/apps/v1/namespaces/[^/]+/{kind}")
    return [r for r in collection if r.query.get("watch") != ["true"]]


def watches(fake: FakeKubeAPI) -> list[Any]:
    collection = fake.requests_matching("GET", r"/apis/apps/v1/namespaces/[^/]+/(deployments|replicasets)")
    return [r for r in collection if r.query.get("watch") == ["true"]]


def first(source: KubernetesRolloutSource) -> RolloutState:
    return source.list_rollouts(NOW)[0]


def unretried_client(url: str) -> client.ApiClient:
    """An ApiClient without urllib3's own retries: these tests are about the source's retries."""
    configuration = client.Configuration(host=url)
    configuration.retries = False
    return client.ApiClient(configuration)


def by_name(states: list[RolloutState]) -> dict[str, RolloutState]:
    return {state.ref.name: state for state in states}


@pytest.fixture
def make_source(fake_kube: FakeKubeAPI) -> Iterator[Callable[..., KubernetesRolloutSource]]:
    """Build sources on `fake_kube` (fast backoff); all are closed before the fake stops."""
    made: list[KubernetesRolloutSource] = []

    def make(targets: list[Target], api_client: Any = None, **kwargs: Any) -> KubernetesRolloutSource:
        kwargs.setdefault("backoff_seconds", 0.05)
        kwargs.setdefault("max_backoff_seconds", 0.2)
        source = KubernetesRolloutSource(api_client or fake_kube.api_client(), targets, **kwargs)
        made.append(source)
        return source

    yield make
    for source in made:
        source.close()


def test_template_change_progress_and_completion(
    fake_kube: FakeKubeAPI, make_source: Callable[..., KubernetesRolloutSource]
) -> None:
    fake_kube.create(make_deployment("web", image="app:v1", replicas=4))
    fake_kube.controller.settle()
    source = make_source([Target("default")])
    assert not source.is_online()
    source.sync()
    assert source.is_online()

    (before,) = source.list_rollouts(NOW)
    v1_hash = replicaset_hash(fake_kube, "web", 1)
    assert (before.ref, before.revision, before.new_hash, before.old_hashes) == (
        DeploymentRef("default", "web"), 1, v1_hash, ())
    assert before.completed_at is not None and before.progress == 1.0

    set_image(fake_kube, "web", "app:v2")
    v2_hash = replicaset_hash(fake_kube, "web", 2)
    # Deployments and ReplicaSets come by two watches: wait for both to have delivered.
    started = eventually(lambda: first(source), lambda s: s.revision == 2 and s.new_hash is not None)
    assert (started.new_hash, started.old_hashes, started.previous_revision) == (v2_hash, (v1_hash,), 1)
    assert started.completed_at is None and started.progress == 0.0 and started.old_replicas == 4
    rs2 = fake_kube.get("apps/v1", "ReplicaSet", "default", f"web-{v2_hash}")
    assert started.started_at == parse_time(rs2["metadata"]["creationTimestamp"])

    seen_progress = [started.progress]
    while fake_kube.controller.step():
        rs2 = fake_kube.get("apps/v1", "ReplicaSet", "default", f"web-{v2_hash}")
        expected = rs2["status"].get("replicas", 0)
        state = eventually(lambda: first(source), lambda s, e=expected: s.updated_replicas == e)
        seen_progress.append(state.progress)
    assert seen_progress == sorted(seen_progress) and seen_progress[-1] == 1.0
    assert len(set(seen_progress)) == 5  # 0, 1/4, 2/4, 3/4, 1: one replica per step

    done = eventually(lambda: first(source), lambda s: s.completed_at is not None)
    assert (done.old_hashes, done.old_replicas, done.ready_new_replicas) == ((), 0, 4)
    assert not done.is_rollback
    assert done.completed_at is not None and done.completed_at >= done.started_at


def test_watch_cache_follows_changes_without_relisting(
    fake_kube: FakeKubeAPI, make_source: Callable[..., KubernetesRolloutSource]
) -> None:
    fake_kube.create(make_deployment("web"))
    fake_kube.controller.settle()
    source = make_source([Target("default")])
    source.sync()
    assert len(lists(fake_kube)) == 2  # one Deployment LIST, one ReplicaSet LIST
    eventually(lambda: len(watches(fake_kube)), lambda n: n == 2)

    set_image(fake_kube, "web", "app:v2")
    fake_kube.controller.step()
    fake_kube.controller.step()
    fake_kube.create(make_deployment("api"))
    fake_kube.patch("apps/v1", "Deployment", "default", "web", {"spec": {"paused": True}}, patch_type="merge")
    fake_kube.controller.set_progress_deadline_exceeded("default", "web")

    new_rs, old_rs = (
        fake_kube.get("apps/v1", "ReplicaSet", "default", f"web-{replicaset_hash(fake_kube, 'web', rev)}")
        for rev in (2, 1)
    )
    expected = (new_rs["status"]["replicas"], old_rs["status"]["replicas"])
    assert expected[0] > 0 and expected[1] > 0  # mid rollout
    states = eventually(
        lambda: by_name(source.list_rollouts(NOW)),
        lambda s: "api" in s and s["web"].paused and s["web"].progress_deadline_exceeded
        and (s["web"].updated_replicas, s["web"].old_replicas) == expected,
    )
    assert states["web"].revision == 2
    for _ in range(20):  # many ticks, still no LIST
        source.list_rollouts(NOW)
    fake_kube.delete("apps/v1", "Deployment", "default", "api")
    eventually(lambda: by_name(source.list_rollouts(NOW)), lambda s: set(s) == {"web"})
    assert len(lists(fake_kube)) == 2
    assert source.is_online()


def test_selectors_and_names_of_targets_are_honoured(
    fake_kube: FakeKubeAPI, make_source: Callable[..., KubernetesRolloutSource]
) -> None:
    shop = {"team": "shop"}
    fake_kube.create(make_deployment("web", labels={"app": "web", **shop}))
    fake_kube.create(make_deployment("api", labels={"app": "api", **shop}))
    fake_kube.create(make_deployment("infra", labels={"app": "infra", "team": "infra"}))
    fake_kube.create(make_deployment("batch", namespace="jobs"))
    fake_kube.create(make_deployment("ignored", namespace="elsewhere"))
    fake_kube.controller.settle()

    source = make_source([
        Target("default", selector="team=shop", names=("web",)),
        Target("default", selector="team in (shop,infra)", names=("infra",)),
        Target("jobs"),
    ])
    source.sync()
    states = source.list_rollouts(NOW)
    assert [str(s.ref) for s in states] == ["default/infra", "default/web", "jobs/batch"]
    assert all(s.new_hash is not None and s.revision == 1 for s in states)
    selectors = {tuple(r.query.get("labelSelector", [""])) for r in lists(fake_kube)}
    assert selectors == {("team=shop",), ("team in (shop,infra)",), ("",)}

    # A Deployment that starts matching the selector later is picked up by the watch.
    fake_kube.patch("apps/v1", "Deployment", "jobs", "batch", {"spec": {"replicas": 2}}, patch_type="merge")
    fake_kube.create(make_deployment("web", namespace="jobs"))
    eventually(lambda: [str(s.ref) for s in source.list_rollouts(NOW)],
               lambda refs: refs == ["default/infra", "default/web", "jobs/batch", "jobs/web"])


def test_a_selector_that_misses_the_pod_template_labels_is_reported(
    fake_kube: FakeKubeAPI,
    make_source: Callable[..., KubernetesRolloutSource],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The target's selector applies to ReplicaSets too, whose labels are the pod template's."""
    manifest = make_deployment("web")
    manifest["metadata"]["labels"]["tier"] = "frontend"  # on the Deployment only
    fake_kube.create(manifest)
    fake_kube.controller.settle()
    source = make_source([Target("default", selector="tier=frontend")])
    with caplog.at_level("WARNING", logger="predictor.rollouts.kubernetes"):
        (state,) = source.list_rollouts(NOW)
        source.list_rollouts(NOW)
    assert (state.revision, state.new_hash, state.updated_replicas) == (1, None, 0)
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "default/web runs 4 pods but no ReplicaSet of it matches selector 'tier=frontend'" in warning


def test_rollback_with_kubectl_is_seen_as_a_rollback(
    fake_kube: FakeKubeAPI, make_source: Callable[..., KubernetesRolloutSource]
) -> None:
    fake_kube.create(make_deployment("web"))
    fake_kube.controller.settle()
    set_image(fake_kube, "web", "app:v2")
    fake_kube.controller.settle()
    source = make_source([Target("default")])
    source.sync()
    v1_hash, v2_hash = replicaset_hash(fake_kube, "web", 1), replicaset_hash(fake_kube, "web", 2)

    undo = fake_kube.kubectl("rollout", "undo", "deployment/web")
    assert undo.returncode == 0, undo.stderr
    fake_kube.controller.step()
    state = eventually(lambda: first(source), lambda s: s.revision == 3 and s.updated_replicas == 1)
    assert (state.new_hash, state.old_hashes, state.is_rollback, state.previous_revision) == (
        v1_hash, (v2_hash,), True, 2)


def test_relists_after_410_gone() -> None:
    """A watch whose resourceVersion fell out of the server's window gets 410 and the source re-lists."""
    with FakeKubeAPI(history_size=10) as fake:
        fake.create(make_deployment("web"))
        fake.controller.settle()
        source = KubernetesRolloutSource(fake.api_client(), [Target("default")], backoff_seconds=0.05)
        try:
            source.sync()
            eventually(lambda: len(watches(fake)), lambda n: n == 2)
            with fake.state.lock:  # the watch cannot read while we write more than the window holds
                for replicas in range(5, 25):
                    fake.patch("apps/v1", "Deployment", "default", "web", {"spec": {"replicas": replicas}},
                               patch_type="merge")
            state = eventually(lambda: first(source), lambda s: s.desired_replicas == 24)
            assert state.revision == 1
            assert len(lists(fake, "deployments")) >= 2  # the first LIST, then the re-list after 410
            assert source.is_online()
        finally:
            source.close()


class _CuttableProxy:
    """A TCP proxy in front of the fake whose connections can be cut and refused: a network outage."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._up = True
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._start(self._accept_loop)

    def _start(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if not self._up or self._closed:
                    conn.close()
                    continue
                upstream = socket.create_connection(("127.0.0.1", self._upstream_port))
                self._sockets += [conn, upstream]
            self._start(self._pump, conn, upstream)
            self._start(self._pump, upstream, conn)

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                target.sendall(data)
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self._lock:
            self._up = False
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def restore(self) -> None:
        with self._lock:
            self._up = True

    def close(self) -> None:
        with self._lock:
            self._closed = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone does not
        self._listener.close()
        self.cut()
        for thread in self._threads:
            thread.join(timeout=5)


def test_reconnects_with_backoff_after_losing_the_server(
    fake_kube: FakeKubeAPI, make_source: Callable[..., KubernetesRolloutSource]
) -> None:
    fake_kube.create(make_deployment("web"))
    fake_kube.controller.settle()
    proxy = _CuttableProxy(fake_kube.port)
    api = unretried_client(f"http://127.0.0.1:{proxy.port}")
    try:
        source = make_source([Target("default")], api_client=api)
        source.sync()
        eventually(lambda: len(watches(fake_kube)), lambda n: n == 2)

        proxy.cut()
        eventually(source.is_online, lambda online: not online)
        set_image(fake_kube, "web", "app:v2")  # a change the source cannot see yet
        time.sleep(0.3)  # several failed attempts at 0.05 -> 0.2 s backoff
        assert source.list_rollouts(NOW)[0].revision == 1  # the last known state is served meanwhile
        assert not source.is_online()

        proxy.restore()
        eventually(source.is_online, bool)
        state = eventually(lambda: first(source), lambda s: s.revision == 2)
        assert state.new_hash == replicaset_hash(fake_kube, "web", 2)
        assert len(lists(fake_kube)) >= 4  # re-listed after the outage
    finally:
        source.close()
        api.close()
        proxy.close()


def test_sync_raises_when_the_server_is_unreachable() -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    api = unretried_client(f"http://127.0.0.1:{port}")
    source = KubernetesRolloutSource(api, [Target("default")])
    try:
        with pytest.raises(urllib3.exceptions.NewConnectionError):
            source.list_rollouts(NOW)
        assert not source.is_online()
    finally:
        source.close()
        api.close()


def test_api_client_from_kubeconfig_file_and_context(fake_kube: FakeKubeAPI, tmp_path: Path) -> None:
    path = fake_kube.write_kubeconfig(tmp_path / "kubeconfig")
    fake_kube.create(make_deployment("web"))
    fake_kube.controller.settle()
    api = build_api_client(KubernetesConfig(kubeconfig=path, context="fake"), environ={})
    source = KubernetesRolloutSource(api, [Target("default")])
    try:
        assert [s.ref.name for s in source.list_rollouts(NOW)] == ["web"]
    finally:
        source.close()
        api.close()

    expected = r"kubernetes.kubeconfig: cannot load .*kubeconfig \(context 'prod'\)"
    with pytest.raises(KubeConfigError, match=expected):
        build_api_client(KubernetesConfig(kubeconfig=path, context="prod"), environ={})
    # An explicit kubeconfig wins over the in-cluster environment.
    api = build_api_client(KubernetesConfig(kubeconfig=path), environ={"KUBERNETES_SERVICE_HOST": "10.0.0.1"})
    assert api.configuration.host == fake_kube.url
    api.close()


def test_in_cluster_config_is_used_in_a_pod_and_fails_clearly_without_a_service_account(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    # No /var/run/secrets/kubernetes.io/serviceaccount/token here: the in-cluster loader is tried and fails.
    with pytest.raises(KubeConfigError, match=r"in-cluster config \(KUBERNETES_SERVICE_HOST is set\) failed"):
        build_api_client(KubernetesConfig())
