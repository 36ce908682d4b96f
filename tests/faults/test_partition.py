"""Lease renewals failing (a partition between the leader and the API server): the old leader stops acting
before its Lease can expire, the follower takes over only after it expired, and two replicas never lead at
once. Two real LeaderElector runners on real time over real HTTP; the leader's API traffic goes through a
fault proxy that holds its Lease requests past the renew deadline (a hung connection, the worst case)."""

from __future__ import annotations

import threading
import time

from kubernetes import client

from predictor.leader import LeaderElectionConfig, LeaderElector
from tests.fakes.kubeapi import FakeKubeAPI
from tests.faults.harness import Row, record, wait_for
from tests.faults.proxy import Fault, FaultProxy

LEASE_SECONDS, RENEW_DEADLINE_SECONDS = 3.0, 2.0


def _elector(api_url: str, name: str) -> LeaderElector:
    configuration = client.Configuration(host=api_url)
    config = LeaderElectionConfig(namespace="predictor", lease_name="predictor", identity=name,
                                  lease_duration_seconds=LEASE_SECONDS, renew_deadline_seconds=RENEW_DEADLINE_SECONDS,
                                  retry_period_seconds=0.2)
    return LeaderElector(client.CoordinationV1Api(client.ApiClient(configuration)), config)


def test_a_partitioned_leader_stops_acting_before_the_follower_takes_over(fake_kube: FakeKubeAPI) -> None:
    fake_kube.ensure_namespace("predictor")
    with FaultProxy(fake_kube.port) as proxy:
        a, b = _elector(proxy.url, "predictor-a"), _elector(fake_kube.url, "predictor-b")
        a.start()
        try:
            assert wait_for(a.is_leader, timeout=10), "a never led"
            b.start()
            samples: list[tuple[float, bool, bool]] = []
            stop = threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    samples.append((time.monotonic(), a.is_leader(), b.is_leader()))
                    time.sleep(0.005)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            time.sleep(1.0)  # a renews, b follows
            partitioned_at = time.monotonic()
            proxy.set(Fault.DELAY, seconds=8.0, path="/leases")
            assert wait_for(b.is_leader, timeout=15), "b never took over"
            time.sleep(1.0)
            proxy.set(Fault.PASS)  # healed: a's late renewal must be refused, a stays a follower
            time.sleep(2.0)
            stop.set()
            sampler.join(5)
        finally:
            a.stop(timeout_seconds=5)
            b.stop(timeout_seconds=5)
    both = [t for t, x, y in samples if x and y]
    assert both == [], f"two leaders at once for {len(both)} samples"
    a_stopped = next(t for t, x, _ in samples if t > partitioned_at and not x)
    b_started = next(t for t, _, y in samples if y)
    assert a_stopped - partitioned_at <= RENEW_DEADLINE_SECONDS + 0.5, "a kept acting past its renew deadline"
    gap = b_started - a_stopped
    assert gap >= 0.5, f"b led {gap:.2f}s after a stopped: no margin"
    assert samples[-1][1:] == (False, True), "after the partition healed a follows, b leads"
    record(Row("Lease renewals hung (partition)", f"leader's Lease requests held 8 s (renew deadline "
               f"{RENEW_DEADLINE_SECONDS:.0f} s, lease {LEASE_SECONDS:.0f} s)", 0, 0, 0, 0, 0,
               notes=f"old leader stopped {a_stopped - partitioned_at:.1f}s after the partition, the follower led "
                     f"{gap:.1f}s after that; 0 samples with two leaders"))
