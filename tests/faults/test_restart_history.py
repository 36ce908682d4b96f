"""A restart mid-rollout costs a tick or two, not a lookback: `predictor run` rebuilds the history of every
rollout it first sees after it started from the same queries over `lookback`, so a daemon killed 5 s into a
bad rollout and restarted at once undoes it within a couple of ticks of an uninterrupted daemon.

Both run side by side on the same timeline: two namespaces with the same bad release, the controller stepping
both at once, one daemon each; one of them is killed with SIGKILL 5 s into the rollout and started again."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.kubeapi import FakeKubeAPI
from tests.faults.harness import (
    RampingFeeder,
    Row,
    applied_patches,
    config_file,
    deploy,
    namespace,
    record,
    roll_out,
)
from tests.fixtures.prometheus import LivePrometheus
from tests.integration.live import image_of, start_daemon, stop_daemon, wait_for_first_tick

pytestmark = [pytest.mark.prometheus]

TICK_SECONDS = 1.0
RAMP_PER_SECOND = 0.003
"""The new pods' error share grows 0.3 points a second from 0.5 %: 5 % after 15 s."""


def test_a_restart_5s_into_a_bad_rollout_acts_within_a_couple_of_ticks_of_an_uninterrupted_run(
    fake_kube: FakeKubeAPI, live_prometheus: LivePrometheus, tmp_path: Path,
) -> None:
    steady, restarted = namespace(), namespace()
    configs = {}
    for ns in (steady, restarted):
        deploy(fake_kube, ns, "checkout")
        (tmp_path / ns).mkdir()
        configs[ns] = config_file(tmp_path / ns, prometheus=live_prometheus.url, alertmanager=None, kube=fake_kube,
                                  ns=ns)
    feeders = [RampingFeeder(fake_kube, live_prometheus, ns, {"checkout:v2"}, RAMP_PER_SECOND) for ns in configs]
    daemons: dict[str, Any] = {}
    acted_at: dict[str, float] = {}
    with feeders[0], feeders[1]:
        live_prometheus.wait_for(f'count(http_requests_total{{namespace=~"{steady}|{restarted}"}})',
                                 lambda r: bool(r) and float(r[0]["value"][1]) >= 16, timeout=20)
        try:
            for ns, config in configs.items():
                daemons[ns] = start_daemon(config)
            for ns, config in configs.items():
                wait_for_first_tick(config, daemons[ns])
            for ns in configs:
                roll_out(fake_kube, ns, "checkout")
            started = time.monotonic()
            killed = False
            restarted_ready_at = None
            next_step = started
            while time.monotonic() - started < 90 and len(acted_at) < 2:
                now = time.monotonic()
                if not killed and now - started >= 5.0:
                    assert restarted not in acted_at, "acted within 5 s: nothing left to measure"
                    daemons[restarted].kill()
                    daemons[restarted].communicate()
                    daemons[restarted] = start_daemon(configs[restarted])
                    killed = True
                if killed and restarted_ready_at is None and _ticked(configs[restarted]):
                    restarted_ready_at = time.monotonic() - started
                if now >= next_step:
                    for ns in configs:
                        if ns not in acted_at:
                            fake_kube.controller.step(ns)
                    next_step = now + 2.0
                for ns in configs:
                    if ns not in acted_at and image_of(fake_kube, ns, "checkout") == "checkout:v1":
                        acted_at[ns] = time.monotonic() - started
                time.sleep(0.05)
        finally:
            outputs = {ns: stop_daemon(d) for ns, d in daemons.items()}
    assert killed and acted_at.get(steady, 0.0) > 5.0, f"the uninterrupted daemon acted before the kill: {acted_at}"
    assert set(acted_at) == {steady, restarted}, f"not both undone: {acted_at}; {outputs[restarted][-3000:]}"
    # Start-up (imports, start-up checks) is not the history's fault: measure from the restarted daemon's
    # first tick where it came after the uninterrupted one's action.
    ready = restarted_ready_at if restarted_ready_at is not None else acted_at[restarted]
    late = acted_at[restarted] - max(acted_at[steady], ready)
    assert late <= 3 * TICK_SECONDS, (
        f"restarted daemon acted at +{acted_at[restarted]:.1f}s (first tick +{ready:.1f}s), "
        f"uninterrupted at +{acted_at[steady]:.1f}s")
    assert "rebuilt 1 rollout(s)' history" in outputs[restarted], outputs[restarted][-3000:]
    for ns in configs:
        assert applied_patches(fake_kube, ns, "checkout") == 1
    record(Row("kill -9 5 s into a bad rollout, restart", "SIGKILL at +5 s", 1, 1, 0, 0, 0,
               notes=f"undone at +{acted_at[restarted]:.1f}s (first tick after restart +{ready:.1f}s) vs "
                     f"+{acted_at[steady]:.1f}s uninterrupted"))


def _ticked(config: Path) -> bool:
    import urllib.request

    import yaml

    port = yaml.safe_load(config.read_text())["server"]["port"]
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=0.5) as response:
            body = response.read().decode()
    except OSError:
        return False
    return any(line.startswith("predictor_ticks_total ") and float(line.split()[1]) >= 1
               for line in body.splitlines())
