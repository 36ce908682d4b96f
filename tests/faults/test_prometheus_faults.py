"""Prometheus down, slow past the timeout, answering 5xx, 429, garbage or truncated JSON, resetting the
connection, then partial results: `predictor run` takes no action from missing data, raises the blind alert
after `blind_after` ticks, and once Prometheus answers again undoes the bad release without a restart."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.kubeapi import FakeKubeAPI
from tests.faults.harness import (
    Row,
    alerts_for,
    applied_patches,
    config_file,
    delivered,
    deploy,
    namespace,
    record,
    roll_out,
    step_until,
    undone,
)
from tests.faults.proxy import Fault, FaultProxy
from tests.fixtures.alertmanager import RecordingServer
from tests.fixtures.prometheus import LivePrometheus
from tests.integration.live import TrafficFeeder, image_of, start_daemon, stop_daemon, wait_for_first_tick

pytestmark = [pytest.mark.prometheus, pytest.mark.alertmanager]

BLIND_FAULTS: list[tuple[Fault, dict[str, Any]]] = [
    (Fault.DROP, {}),
    (Fault.DELAY, {"seconds": 2.5}),
    (Fault.STATUS, {"status": 503, "body": b"overloaded"}),
    (Fault.STATUS, {"status": 429, "headers": {"Retry-After": "5"}}),
    (Fault.GARBAGE, {}),
    (Fault.TRUNCATE, {}),
    (Fault.RESET, {}),
]


def test_prometheus_faults_cause_no_action_then_the_blind_alert_then_recovery(
    fake_kube: FakeKubeAPI, live_prometheus: LivePrometheus, alertmanager: Any, webhook_receiver: RecordingServer,
    tmp_path: Path,
) -> None:
    ns = namespace()
    deploy(fake_kube, ns, "checkout", "catalog")
    with FaultProxy(live_prometheus.server.port) as proxy:
        config = config_file(tmp_path, prometheus=proxy.url, alertmanager=alertmanager.url, kube=fake_kube, ns=ns,
                             prometheus__timeout="1s", policy__blind_after=4)
        with TrafficFeeder(fake_kube, live_prometheus, ns, bad_images={"checkout:v2"}):
            live_prometheus.wait_for(f'count(http_requests_total{{namespace="{ns}"}})',
                                     lambda r: bool(r) and float(r[0]["value"][1]) >= 16, timeout=20)
            daemon = start_daemon(config)
            try:
                wait_for_first_tick(config, daemon)
                roll_out(fake_kube, ns, "checkout", "catalog")
                fake_kube.controller.step(ns)  # one bad pod of checkout's v2 serves from now on
                for fault, options in BLIND_FAULTS:
                    proxy.set(fault, **options)
                    time.sleep(2.5)  # each fault for a couple of 1 s ticks: the test watches what happens meanwhile
                    assert applied_patches(fake_kube, ns, "checkout") == 0, f"acted on missing data ({fault})"
                blind = webhook_receiver.wait_for(
                    lambda b: alerts_for(b, "checkout", "firing", "PredictorBlind"), timeout=20)
                assert alerts_for(blind, "catalog", "firing", "PredictorBlind"), "both rollouts are blind"

                proxy.set(Fault.PARTIAL)  # only the first series of each query: never a false action on catalog
                time.sleep(3)
                proxy.set(Fault.PASS)
                assert step_until(fake_kube, ns, undone(fake_kube, ns, "checkout"), timeout=60), \
                    "not undone after Prometheus came back"
                webhook_receiver.wait_for(lambda b: alerts_for(b, "checkout", "firing"), timeout=20)
                webhook_receiver.wait_for(
                    lambda b: alerts_for(b, "catalog", "resolved", "PredictorBlind"), timeout=20)
                step_until(fake_kube, ns, lambda: False, timeout=6, every=0.5)  # the rollback completes
                webhook_receiver.wait_for(lambda b: alerts_for(b, "checkout", "resolved"), timeout=20)
            finally:
                output = stop_daemon(daemon)
    assert daemon.returncode == 0, output[-3000:]
    assert applied_patches(fake_kube, ns, "checkout") == 1, "exactly one action, the undo"
    assert applied_patches(fake_kube, ns, "catalog") == 0, "the healthy release was left alone"
    assert image_of(fake_kube, ns, "catalog") == "catalog:v2"
    assert alerts_for(webhook_receiver.bodies, "catalog", "firing") == []
    seen = {fault.value for fault, _ in BLIND_FAULTS} | {"partial"}
    assert seen <= set(proxy.requests), f"every fault met a request: {proxy.requests}"
    record(Row("Prometheus faults", "drop, delay 2.5 s (timeout 1 s), 503, 429 Retry-After, garbage JSON, "
               "truncated body, reset, partial results; then back", 1, applied_patches(fake_kube, ns, "checkout"),
               max(0, applied_patches(fake_kube, ns, "checkout") - 1) + applied_patches(fake_kube, ns, "catalog"),
               1, delivered(webhook_receiver, "checkout"), notes="blind alert for both rollouts during the outage"))
