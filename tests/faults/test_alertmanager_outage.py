"""Alertmanager down while a bad release is undone and its rollback completes, the daemon killed with
SIGKILL and restarted meanwhile, then Alertmanager back: the undo's alert is notified firing, then resolved
(Alertmanager never notifies a resolve it never notified firing, so a resolve alone would tell nobody)."""

from __future__ import annotations

import signal
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
from tests.fixtures.alertmanager import RecordingServer, webhook_alerts
from tests.fixtures.prometheus import LivePrometheus
from tests.integration.live import TrafficFeeder, start_daemon, stop_daemon, wait_for_first_tick

pytestmark = [pytest.mark.prometheus, pytest.mark.alertmanager]


def test_alerts_of_an_outage_are_delivered_firing_then_resolved_across_a_restart(
    fake_kube: FakeKubeAPI, live_prometheus: LivePrometheus, alertmanager: Any, webhook_receiver: RecordingServer,
    tmp_path: Path,
) -> None:
    ns = namespace()
    deploy(fake_kube, ns, "checkout")
    with FaultProxy(alertmanager.port) as proxy:
        config = config_file(tmp_path, prometheus=live_prometheus.url, alertmanager=proxy.url, kube=fake_kube, ns=ns,
                             alertmanager__group_wait="2s")
        with TrafficFeeder(fake_kube, live_prometheus, ns, bad_images={"checkout:v2"}):
            live_prometheus.wait_for(f'count(http_requests_total{{namespace="{ns}"}})',
                                     lambda r: bool(r) and float(r[0]["value"][1]) >= 8, timeout=20)
            daemon = start_daemon(config)
            try:
                wait_for_first_tick(config, daemon)
                proxy.set(Fault.DROP)  # Alertmanager unreachable from here on
                outage_started = time.monotonic()
                roll_out(fake_kube, ns, "checkout")
                assert step_until(fake_kube, ns, undone(fake_kube, ns, "checkout"), timeout=60), "never undone"
                fake_kube.controller.settle(ns)  # the rollback completes: the alert resolves, still unheard
                time.sleep(3)  # a few ticks: the daemon resolves the alert while Alertmanager is down
                daemon.send_signal(signal.SIGKILL)
                daemon.communicate()
                daemon = start_daemon(config)
                wait_for_first_tick(config, daemon)
                time.sleep(2)
                assert webhook_alerts(webhook_receiver.bodies) == [], "nothing got through the outage"
                outage_seconds = time.monotonic() - outage_started
                proxy.set(Fault.PASS)
                webhook_receiver.wait_for(lambda b: alerts_for(b, "checkout", "resolved"), timeout=30)
            finally:
                output = stop_daemon(daemon)
    assert daemon.returncode == 0, output[-3000:]
    statuses = [a["status"] for a in webhook_alerts(webhook_receiver.bodies)
                if a["labels"].get("deployment") == "checkout" and a["labels"]["alertname"] == "PredictedSLOBreach"]
    assert statuses[0] == "firing" and statuses[-1] == "resolved", statuses
    assert applied_patches(fake_kube, ns, "checkout") == 1
    patches = applied_patches(fake_kube, ns, "checkout")
    record(Row("Alertmanager down, daemon kill -9 meanwhile", f"Alertmanager unreachable {outage_seconds:.0f} s "
               "(undo and rollback inside), SIGKILL and restart during it", 1, min(1, patches), max(0, patches - 1),
               1, delivered(webhook_receiver, "checkout"), notes="notified: " + " then ".join(statuses)))
