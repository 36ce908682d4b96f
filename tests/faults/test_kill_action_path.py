"""`kill -9` of `predictor run` at each step of the action path, then a restart: the bad release is undone
exactly once, with exactly one `PredictorRolledBack` Event (re-created from the Deployment's annotations when
the kill came before it) and its alert delivered, firing then resolved (re-derived from the annotations when
the kill came before it was queued).

The kill comes from the documented test hook `PREDICTOR_CRASH_AT` (predictor/actuators/kubernetes.py): the
process sends itself SIGKILL at that step, so each run dies at exactly the step it names."""

from __future__ import annotations

import signal
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
)
from tests.fixtures.alertmanager import RecordingServer
from tests.fixtures.prometheus import LivePrometheus
from tests.integration.live import TrafficFeeder, start_daemon, stop_daemon, wait_for_first_tick

pytestmark = [pytest.mark.prometheus, pytest.mark.alertmanager]


@pytest.mark.parametrize("crash_at", ["after_decision", "after_patch", "after_event"])
def test_killed_at_a_step_of_the_action_path_acts_once_with_one_event_and_its_alert(
    crash_at: str, fake_kube: FakeKubeAPI, live_prometheus: LivePrometheus, alertmanager: Any,
    webhook_receiver: RecordingServer, tmp_path: Path,
) -> None:
    ns = namespace()
    deploy(fake_kube, ns, "checkout")
    config = config_file(tmp_path, prometheus=live_prometheus.url, alertmanager=alertmanager.url, kube=fake_kube,
                         ns=ns)
    with TrafficFeeder(fake_kube, live_prometheus, ns, bad_images={"checkout:v2"}):
        live_prometheus.wait_for(f'count(http_requests_total{{namespace="{ns}"}})',
                                 lambda r: bool(r) and float(r[0]["value"][1]) >= 8, timeout=20)
        first = start_daemon(config, env={"PREDICTOR_CRASH_AT": crash_at})
        try:
            wait_for_first_tick(config, first)
            roll_out(fake_kube, ns, "checkout")
            assert step_until(fake_kube, ns, lambda: first.poll() is not None, timeout=60), "never reached the step"
        finally:
            if first.poll() is None:
                first.kill()
            output, _ = first.communicate()
        assert first.returncode == -signal.SIGKILL, output[-3000:]
        patches_at_kill = applied_patches(fake_kube, ns, "checkout")
        events_at_kill = predictor_events(fake_kube, ns, "checkout")
        assert (patches_at_kill, events_at_kill) == {
            "after_decision": (0, []), "after_patch": (1, []), "after_event": (1, ["PredictorRolledBack"]),
        }[crash_at], "the process died at another step"

        second = start_daemon(config)
        try:
            wait_for_first_tick(config, second)
            assert step_until(fake_kube, ns, undone(fake_kube, ns, "checkout"), timeout=60), "never undone"
            assert fake_kube.wait_for(lambda: predictor_events(fake_kube, ns, "checkout") != [], timeout=20)
            webhook_receiver.wait_for(lambda b: alerts_for(b, "checkout", "firing"), timeout=20)
            step_until(fake_kube, ns, lambda: False, timeout=6, every=0.5)  # the rollback completes
            webhook_receiver.wait_for(lambda b: alerts_for(b, "checkout", "resolved"), timeout=20)
        finally:
            output = stop_daemon(second)
    assert second.returncode == 0, output[-3000:]
    patches = applied_patches(fake_kube, ns, "checkout")
    events = predictor_events(fake_kube, ns, "checkout")
    assert patches == 1, "exactly one action, the undo"
    assert events == ["PredictorRolledBack"], "exactly one Event"
    firing = alerts_for(webhook_receiver.bodies, "checkout", "firing")
    assert {a["labels"]["revision"] for a in firing} == {"2"} and firing[0]["labels"]["metric"] == "error_ratio"
    record(Row(f"kill -9 {crash_at.replace('_', ' ')}, restart", f"SIGKILL {crash_at.replace('_', ' ')}", 1,
               min(patches, 1), max(0, patches - 1), 1, delivered(webhook_receiver, "checkout"),
               notes=f"Events: {len(events)}"))
