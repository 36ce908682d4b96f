"""Two `predictor run` processes with Lease leader election against the fake API server and a real Prometheus:
one leader acts, the follower only scores; when the leader stops, the follower takes over within one lease
period and acts on the next bad release; nothing is patched twice.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from tests.fakes.kubeapi import FakeKubeAPI, make_deployment
from tests.fixtures.prometheus import LivePrometheus
from tests.integration.live import (
    TrafficFeeder,
    image_of,
    set_image,
    start_daemon,
    stop_daemon,
    wait_for_first_tick,
    write_config,
)

pytestmark = [pytest.mark.prometheus]
LEASE_SECONDS = 3.0


def lease_holder(fake: FakeKubeAPI, namespace: str) -> str | None:
    lease = fake.try_get("coordination.k8s.io/v1", "Lease", namespace, "predictor")
    return (lease or {}).get("spec", {}).get("holderIdentity") or None


def wait_for(predicate, timeout: float, what: str) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def roll_out_until_undone(fake: FakeKubeAPI, namespace: str, name: str, good: str, bad: str) -> None:
    set_image(fake, namespace, name, bad)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and image_of(fake, namespace, name) != good:
        fake.controller.step(namespace, name)
        time.sleep(2.0)
    assert image_of(fake, namespace, name) == good, f"{name}: the bad release was not undone"


def daemon_patches(fake: FakeKubeAPI, namespace: str, name: str) -> int:
    path = rf"/apis/apps/v1/namespaces/{namespace}/deployments/{name}"
    return len([r for r in fake.requests_matching(method="PATCH", path=path) if r.status < 300])


def test_one_leader_acts_and_the_follower_takes_over_without_acting_twice(
    fake_kube: FakeKubeAPI, live_prometheus: LivePrometheus, tmp_path: Path
) -> None:
    namespace = f"ha-{uuid.uuid4().hex[:6]}"
    for name in ("checkout", "cart"):
        fake_kube.create(make_deployment(name, namespace, image=f"{name}:v1", replicas=4))
    fake_kube.controller.settle()
    kubeconfig = fake_kube.write_kubeconfig(tmp_path / "kubeconfig")
    election = {"PREDICTOR_LEADER_ELECTION": "true", "PREDICTOR_LEASE_NAMESPACE": namespace,
                "PREDICTOR_LEASE_DURATION": f"{LEASE_SECONDS:g}s", "PREDICTOR_RENEW_DEADLINE": "2s",
                "PREDICTOR_RETRY_PERIOD": "500ms"}
    configs = {}
    for identity in ("predictor-a", "predictor-b"):  # each its own port, otherwise the same config
        configs[identity] = tmp_path / f"{identity}.yaml"
        write_config(configs[identity], prometheus=live_prometheus.url, alertmanager=None, kubeconfig=kubeconfig,
                     namespace=namespace)

    with TrafficFeeder(fake_kube, live_prometheus, namespace, bad_images={"checkout:v2", "cart:v2"}):
        live_prometheus.wait_for(f'count(http_requests_total{{namespace="{namespace}"}})',
                                 lambda r: bool(r) and float(r[0]["value"][1]) >= 16, timeout=20)
        first = start_daemon(configs["predictor-a"], {**election, "POD_NAME": "predictor-a"})
        second = None
        try:
            wait_for_first_tick(configs["predictor-a"], first)  # start-up takes far longer on a loaded machine
            wait_for(lambda: lease_holder(fake_kube, namespace) == "predictor-a", 20, "predictor-a to lead")
            second = start_daemon(configs["predictor-b"], {**election, "POD_NAME": "predictor-b"})
            wait_for_first_tick(configs["predictor-b"], second)  # the follower is up and scoring
            assert lease_holder(fake_kube, namespace) == "predictor-a"

            roll_out_until_undone(fake_kube, namespace, "checkout", "checkout:v1", "checkout:v2")
            first_log = stop_daemon(first)
            taken_over = wait_for(lambda: lease_holder(fake_kube, namespace) == "predictor-b", 2 * LEASE_SECONDS,
                                  "predictor-b to take over")
            assert taken_over <= LEASE_SECONDS, f"hand-over took {taken_over:.1f}s, more than one lease period"

            roll_out_until_undone(fake_kube, namespace, "cart", "cart:v1", "cart:v2")
            time.sleep(3.0)  # ticks after the hand-over and the undo: nothing more may be patched
        finally:
            if first.poll() is None:
                stop_daemon(first)
            second_log = stop_daemon(second) if second is not None else ""

    assert first.returncode == 0 and second is not None and second.returncode == 0, first_log[-2000:]
    assert daemon_patches(fake_kube, namespace, "checkout") == 1, "the undo of checkout, once"
    assert daemon_patches(fake_kube, namespace, "cart") == 1, "the undo of cart, once"

    def undos(log: str) -> list[str]:
        return [line for line in log.splitlines() if '"level": "WARNING"' in line and "undo" in line]

    assert [f"{namespace}/checkout" in line for line in undos(first_log)] == [True]
    assert [f"{namespace}/cart" in line for line in undos(second_log)] == [True]
    lease = fake_kube.get("coordination.k8s.io/v1", "Lease", namespace, "predictor")
    assert lease["spec"]["leaseTransitions"] >= 1
