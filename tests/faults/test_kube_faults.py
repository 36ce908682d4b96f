"""The API server behind a fault proxy while a bad release rolls out: watches cut and answered 410 Gone,
then the undo's PATCH answered 429 with Retry-After, 500, a 409 Conflict storm, and finally applied by the
server with the connection reset before the answer arrives. The undo is retried (each attempt from a fresh
read) until it lands, and lands once: the fake API server counts the PATCHes it applied."""

from __future__ import annotations

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
    predictor_events,
    record,
    roll_out,
    step_until,
    undone,
    wait_for,
)
from tests.faults.proxy import Fault, FaultProxy
from tests.fixtures.alertmanager import RecordingServer
from tests.fixtures.prometheus import LivePrometheus
from tests.integration.live import TrafficFeeder, start_daemon, stop_daemon, wait_for_first_tick

pytestmark = [pytest.mark.prometheus, pytest.mark.alertmanager]

WATCHES = r"(?i)[?&]watch=(true|1)"


def test_api_server_faults_are_retried_and_the_undo_applied_once(
    fake_kube: FakeKubeAPI, live_prometheus: LivePrometheus, alertmanager: Any, webhook_receiver: RecordingServer,
    tmp_path: Path,
) -> None:
    ns = namespace()
    deploy(fake_kube, ns, "checkout")
    with FaultProxy(fake_kube.port) as proxy:
        config = config_file(tmp_path, prometheus=live_prometheus.url, alertmanager=alertmanager.url, kube=proxy.url,
                             ns=ns)
        with TrafficFeeder(fake_kube, live_prometheus, ns, bad_images={"checkout:v2"}):
            live_prometheus.wait_for(f'count(http_requests_total{{namespace="{ns}"}})',
                                     lambda r: bool(r) and float(r[0]["value"][1]) >= 8, timeout=20)
            daemon = start_daemon(config)
            try:
                wait_for_first_tick(config, daemon)
                # Watches cut (the switch hangs up open connections), answered 410 Gone, then reset.
                proxy.set(Fault.STATUS, status=410, path=WATCHES, body=b'{"kind":"Status","code":410}',
                          headers={"Content-Type": "application/json"})
                assert wait_for(lambda: proxy.requests["status"] >= 2, timeout=20), proxy.requests
                proxy.set(Fault.RESET, path=WATCHES)
                assert wait_for(lambda: proxy.requests["reset"] >= 2, timeout=20), proxy.requests
                # The undo's PATCH: 429 with Retry-After, then 500.
                proxy.set(Fault.STATUS, status=429, method="PATCH", headers={"Retry-After": "1"},
                          body=b'{"kind":"Status","code":429,"reason":"TooManyRequests"}')
                roll_out(fake_kube, ns, "checkout")
                fake_kube.controller.step(ns)
                assert step_until(fake_kube, ns, lambda: proxy.requests["status"] >= 4, timeout=60,
                                  steps=1), f"no undo tried: {proxy.requests}"
                patched_429 = proxy.requests["status"] - 2
                proxy.set(Fault.STATUS, status=500, method="PATCH", body=b'{"kind":"Status","code":500}')
                assert wait_for(lambda: proxy.requests["status"] >= patched_429 + 4, timeout=20), proxy.requests
                # A 409 storm longer than one apply's attempts, then a PATCH applied but its answer lost.
                fake_kube.inject_conflicts("Deployment", ns, "checkout", count=7)
                proxy.set(Fault.RESET, method="PATCH")
                assert step_until(fake_kube, ns, undone(fake_kube, ns, "checkout"), timeout=60, steps=0), \
                    f"never undone: {proxy.requests}"
                assert wait_for(lambda: proxy.requests["pass"] > 0 and predictor_events(fake_kube, ns), timeout=20)
                proxy.set(Fault.PASS)
                webhook_receiver.wait_for(lambda b: alerts_for(b, "checkout", "firing"), timeout=20)
                step_until(fake_kube, ns, lambda: False, timeout=6, every=0.5)  # the rollback completes
                webhook_receiver.wait_for(lambda b: alerts_for(b, "checkout", "resolved"), timeout=20)
            finally:
                output = stop_daemon(daemon)
    assert daemon.returncode == 0, output[-3000:]
    path = rf"/apis/apps/v1/namespaces/{ns}/deployments/checkout"
    answered = [r.status for r in fake_kube.requests_matching(method="PATCH", path=path)]
    assert answered.count(409) == 7, answered
    patches = applied_patches(fake_kube, ns, "checkout")
    assert patches == 1, f"applied {patches} times: {answered}"
    assert predictor_events(fake_kube, ns, "checkout") == ["PredictorRolledBack"]
    record(Row("API server faults", "watch cut, 410 Gone and reset; PATCH 429 Retry-After, 500, 7 x 409, "
               "reset after applying", 1, min(1, patches), max(0, patches - 1), 1,
               delivered(webhook_receiver, "checkout"), notes=f"PATCH answers seen by the server: {answered}"))
