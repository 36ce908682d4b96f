"""Leader election driven step by step with a fake clock against an in-memory Lease store.

The store stands in for the three CoordinationV1Api calls the elector makes and answers like the API server
does (404, 409 on a stale resourceVersion or an existing name), so races can be staged between a read and a
write. The same elector against the fake API server over HTTP is in tests/integration/test_leader_election.py.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from predictor.leader import (
    LeaderElectionConfig,
    LeaderElectionConfigError,
    LeaderElector,
    LeaderRecord,
    format_micro_time,
)

NAMESPACE = "predictor"
LEASE = "predictor"
T0 = 1_700_000_000.0


class FakeClock:
    def __init__(self, start: float = T0) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class _Response:
    data: bytes

    def release_conn(self) -> None:
        pass


@dataclass
class LeaseStore:
    """read/create/replace_namespaced_lease with the API server's answers; `before_write` stages races."""

    leases: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    version: int = 0
    writes: list[tuple[str, str]] = field(default_factory=list)
    before_write: Callable[[], None] | None = None
    fail_reads: bool = False

    def _answer(self, obj: dict[str, Any]) -> _Response:
        return _Response(json.dumps(obj).encode())

    def _hook(self) -> None:
        hook, self.before_write = self.before_write, None
        if hook:
            hook()

    def read_namespaced_lease(self, name: str, namespace: str, **_: Any) -> _Response:
        if self.fail_reads:
            raise ApiException(status=503, reason="Service Unavailable")
        if (namespace, name) not in self.leases:
            raise ApiException(status=404, reason="Not Found")
        return self._answer(self.leases[namespace, name])

    def create_namespaced_lease(self, namespace: str, body: dict[str, Any], **_: Any) -> _Response:
        self._hook()
        name = body["metadata"]["name"]
        if (namespace, name) in self.leases:
            raise ApiException(status=409, reason="AlreadyExists")
        self.version += 1
        obj = copy.deepcopy(body)
        obj["metadata"]["resourceVersion"] = str(self.version)
        self.leases[namespace, name] = obj
        self.writes.append(("create", obj["spec"]["holderIdentity"]))
        return self._answer(obj)

    def replace_namespaced_lease(
        self, name: str, namespace: str, body: dict[str, Any], **_: Any
    ) -> _Response:
        self._hook()
        current = self.leases.get((namespace, name))
        if current is None:
            raise ApiException(status=404, reason="Not Found")
        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        self.version += 1
        obj = copy.deepcopy(body)
        obj["metadata"]["resourceVersion"] = str(self.version)
        self.leases[namespace, name] = obj
        self.writes.append(("replace", obj["spec"]["holderIdentity"]))
        return self._answer(obj)

    def spec(self) -> dict[str, Any]:
        return self.leases[NAMESPACE, LEASE]["spec"]


def make_elector(
    store: LeaseStore, clock: FakeClock, identity: str, events: list[str] | None = None
) -> LeaderElector:
    config = LeaderElectionConfig(namespace=NAMESPACE, lease_name=LEASE, identity=identity)
    log = events if events is not None else []
    return LeaderElector(
        store,  # type: ignore[arg-type]
        config,
        clock=clock,
        on_started_leading=lambda: log.append(f"{identity} started"),
        on_stopped_leading=lambda: log.append(f"{identity} stopped"),
    )


@pytest.fixture
def store() -> LeaseStore:
    return LeaseStore()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_first_candidate_creates_the_lease_and_leads(store: LeaseStore, clock: FakeClock) -> None:
    a = make_elector(store, clock, "pod-a")
    assert a.step() is True
    spec = store.spec()
    assert spec["holderIdentity"] == "pod-a"
    assert spec["leaseDurationSeconds"] == 15
    assert spec["leaseTransitions"] == 0
    assert spec["acquireTime"] == spec["renewTime"] == "2023-11-14T22:13:20.000000Z"


def test_second_candidate_follows_while_the_leader_renews(store: LeaseStore, clock: FakeClock) -> None:
    a, b = make_elector(store, clock, "pod-a"), make_elector(store, clock, "pod-b")
    a.step()
    acquired = store.spec()["acquireTime"]
    for _ in range(30):  # a minute of 2 s periods, far past one lease duration
        clock.advance(2)
        assert a.step() is True
        assert b.step() is False
    assert store.spec()["holderIdentity"] == "pod-a"
    assert store.spec()["acquireTime"] == acquired, "renewing keeps acquireTime"
    assert store.spec()["renewTime"] == format_micro_time(clock.now())
    assert store.spec()["leaseTransitions"] == 0
    assert b.holder == "pod-a"


def test_follower_takes_over_one_lease_duration_after_the_leader_stops_renewing(
    store: LeaseStore, clock: FakeClock
) -> None:
    a, b = make_elector(store, clock, "pod-a"), make_elector(store, clock, "pod-b")
    a.step()
    b.step()  # b first sees the record now
    taken_at = None
    for i in range(1, 20):  # a is gone (no more steps, no release)
        clock.advance(1)
        if b.step():
            taken_at = i
            break
    assert taken_at == 15, "expired exactly lease_duration after b last saw the record change"
    assert store.spec()["holderIdentity"] == "pod-b"
    assert store.spec()["leaseTransitions"] == 1


def test_expiry_is_measured_on_the_follower_clock_not_the_lease_timestamps(
    store: LeaseStore, clock: FakeClock
) -> None:
    a = make_elector(store, clock, "pod-a")
    a.step()
    late = FakeClock(T0 + 3600)  # b's node clock is an hour ahead: renewTime looks stale to it
    b = make_elector(store, late, "pod-b")
    assert b.step() is False, "a record b has just seen for the first time is valid for a full duration"
    late.advance(14)
    assert b.step() is False


def test_released_lease_is_taken_at_once(store: LeaseStore, clock: FakeClock) -> None:
    events: list[str] = []
    a, b = make_elector(store, clock, "pod-a", events), make_elector(store, clock, "pod-b", events)
    a.step()
    b.step()
    assert a.release() is True
    assert events == ["pod-a started", "pod-a stopped"]
    assert a.is_leader() is False
    assert store.spec()["holderIdentity"] == ""
    assert store.spec()["leaseDurationSeconds"] == 1
    clock.advance(2)
    assert b.step() is True
    assert store.spec()["holderIdentity"] == "pod-b"
    assert store.spec()["leaseTransitions"] == 1


def test_stop_without_the_runner_releases_too(store: LeaseStore, clock: FakeClock) -> None:
    a = make_elector(store, clock, "pod-a")
    a.step()
    a.stop()
    assert store.spec()["holderIdentity"] == ""
    assert a.is_leader() is False


def test_release_when_not_leading_writes_nothing(store: LeaseStore, clock: FakeClock) -> None:
    a, b = make_elector(store, clock, "pod-a"), make_elector(store, clock, "pod-b")
    a.step()
    b.step()
    writes = len(store.writes)
    assert b.release() is True
    assert len(store.writes) == writes
    assert store.spec()["holderIdentity"] == "pod-a"


def test_a_write_between_read_and_replace_loses_the_race(store: LeaseStore, clock: FakeClock) -> None:
    a, b, c = (make_elector(store, clock, name) for name in ("pod-a", "pod-b", "pod-c"))
    a.step()
    b.step()
    c.step()
    clock.advance(16)  # a stopped renewing; b and c both see it expired
    # c writes its take-over after b has read the Lease and before b writes: b's resourceVersion is stale.
    store.before_write = lambda: c.try_acquire_or_renew()
    assert b.step() is False
    assert store.spec()["holderIdentity"] == "pod-c"
    assert store.spec()["leaseTransitions"] == 1
    assert c.step() is True


def test_create_race_is_lost_with_already_exists(store: LeaseStore, clock: FakeClock) -> None:
    a, b = make_elector(store, clock, "pod-a"), make_elector(store, clock, "pod-b")
    store.before_write = lambda: b.try_acquire_or_renew()
    assert a.step() is False
    assert store.spec()["holderIdentity"] == "pod-b"
    assert [w[0] for w in store.writes] == ["create"]


def test_leader_stops_after_the_renew_deadline_without_successful_renewals(
    store: LeaseStore, clock: FakeClock
) -> None:
    events: list[str] = []
    a = make_elector(store, clock, "pod-a", events)
    a.step()
    store.fail_reads = True
    clock.advance(8)
    assert a.step() is True, "8 s without renewal is within the 10 s renew deadline"
    clock.advance(2)
    assert a.step() is False
    assert events == ["pod-a started", "pod-a stopped"]


def test_is_leader_turns_false_at_the_renew_deadline_even_if_the_runner_stalls(
    store: LeaseStore, clock: FakeClock
) -> None:
    a = make_elector(store, clock, "pod-a")
    a.step()
    clock.advance(9.9)
    assert a.is_leader() is True
    clock.advance(0.1)
    assert a.is_leader() is False, "before any follower can take over (15 s), the stalled leader stops acting"


def test_leader_that_finds_another_holder_stops_at_once(store: LeaseStore, clock: FakeClock) -> None:
    events: list[str] = []
    a, b = make_elector(store, clock, "pod-a", events), make_elector(store, clock, "pod-b", events)
    a.step()
    b.step()
    clock.advance(16)  # a stalled long enough for b to take over
    assert b.step() is True
    clock.advance(1)
    assert a.step() is False
    assert a.holder == "pod-b"
    assert events == ["pod-a started", "pod-b started", "pod-a stopped"]
    assert store.spec()["holderIdentity"] == "pod-b"


def test_same_identity_after_a_restart_keeps_the_lease(store: LeaseStore, clock: FakeClock) -> None:
    make_elector(store, clock, "pod-a").step()
    clock.advance(3)
    again = make_elector(store, clock, "pod-a")
    assert again.step() is True
    assert store.spec()["leaseTransitions"] == 0


def test_runner_thread_leads_and_releases_on_stop(store: LeaseStore) -> None:
    class WallClock:
        def now(self) -> float:
            import time

            return time.time()

    config = LeaderElectionConfig(namespace=NAMESPACE, lease_name=LEASE, identity="pod-a",
                                  lease_duration_seconds=1.5, renew_deadline_seconds=1.0,
                                  retry_period_seconds=0.05)
    elector = LeaderElector(store, config, clock=WallClock())  # type: ignore[arg-type]
    started, stopped = threading.Event(), threading.Event()
    thread = elector.start(started.set, stopped.set)
    assert started.wait(5), "the runner won the free Lease"
    assert elector.is_leader()
    with pytest.raises(RuntimeError, match="already started"):
        elector.start()
    elector.stop(timeout_seconds=5)
    assert not thread.is_alive()
    assert stopped.is_set()
    assert store.spec()["holderIdentity"] == ""


def test_record_round_trips_through_a_lease_spec() -> None:
    record = LeaderRecord("pod-a", 15, "2024-01-01T00:00:00.000000Z", "2024-01-01T00:00:02.500000Z", 3)
    assert LeaderRecord.from_lease({"spec": record.to_spec()}) == record
    assert LeaderRecord.from_lease({}) == LeaderRecord("", 0, None, None, 0)


def test_micro_time_always_has_six_fraction_digits() -> None:
    assert format_micro_time(0) == "1970-01-01T00:00:00.000000Z"
    assert format_micro_time(1.25) == "1970-01-01T00:00:01.250000Z"


@pytest.mark.parametrize(
    ("timings", "message"),
    [
        ({"retry_period_seconds": 0}, "retry_period: expected a positive duration, got 0s"),
        ({"renew_deadline_seconds": 2.0},
         r"renew_deadline: expected more than 1.2 x retry_period \(2.4s\), got 2s"),
        ({"lease_duration_seconds": 10.0},
         r"lease_duration: expected more than renew_deadline \(10s\), got 10s"),
    ],
)
def test_config_rejects_timings_that_allow_two_leaders(timings: dict[str, float], message: str) -> None:
    with pytest.raises(LeaderElectionConfigError, match=message):
        LeaderElectionConfig(namespace=NAMESPACE, lease_name=LEASE, identity="pod-a", **timings)


def test_config_from_env() -> None:
    assert LeaderElectionConfig.from_env({}) is None
    assert LeaderElectionConfig.from_env({"PREDICTOR_LEADER_ELECTION": "false"}) is None
    config = LeaderElectionConfig.from_env({
        "PREDICTOR_LEADER_ELECTION": "true",
        "POD_NAMESPACE": "shop",
        "POD_NAME": "checkout-7d9c-abcde",
        "PREDICTOR_LEASE_NAME": "predictor-checkout",
        "PREDICTOR_LEASE_DURATION": "30s",
        "PREDICTOR_RENEW_DEADLINE": "20s",
        "PREDICTOR_RETRY_PERIOD": "4s",
    })
    assert config == LeaderElectionConfig(
        namespace="shop", lease_name="predictor-checkout", identity="checkout-7d9c-abcde",
        lease_duration_seconds=30.0, renew_deadline_seconds=20.0, retry_period_seconds=4.0,
    )
    explicit = LeaderElectionConfig.from_env({
        "PREDICTOR_LEADER_ELECTION": "1", "POD_NAMESPACE": "shop", "PREDICTOR_LEASE_NAMESPACE": "predictor",
        "POD_NAME": "p",
    })
    assert explicit is not None and explicit.namespace == "predictor" and explicit.lease_name == "predictor"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PREDICTOR_LEADER_ELECTION": "maybe"},
         "PREDICTOR_LEADER_ELECTION: expected true or false, got 'maybe'"),
        ({"PREDICTOR_LEADER_ELECTION": "true"}, "PREDICTOR_LEASE_NAMESPACE: required"),
        ({"PREDICTOR_LEADER_ELECTION": "true", "POD_NAMESPACE": "x", "PREDICTOR_RETRY_PERIOD": "soon"},
         "PREDICTOR_RETRY_PERIOD: expected a duration such as '15s', got 'soon'"),
    ],
)
def test_config_from_env_names_the_bad_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(LeaderElectionConfigError, match=message):
        LeaderElectionConfig.from_env(env)
