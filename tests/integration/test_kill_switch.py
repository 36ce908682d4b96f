"""The kill switch ConfigMap read over real HTTP from the fake API server, as the daemon reads it every tick."""

import logging

import pytest

from predictor.kill_switch import ConfigMapKillSwitch
from tests.fakes.kubeapi import FakeKubeAPI


def configmap(data: dict[str, str]) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "predictor-kill-switch",
                                                                  "namespace": "predictor"}, "data": data}


def test_the_switch_follows_the_configmap_and_keeps_its_state_when_unreadable(
    fake_kube: FakeKubeAPI, caplog: pytest.LogCaptureFixture
) -> None:
    fake_kube.ensure_namespace("predictor")
    switch = ConfigMapKillSwitch(fake_kube.api_client(), "predictor", "predictor-kill-switch")
    with caplog.at_level(logging.INFO, logger="predictor.kill_switch"):
        assert switch.engaged() is False, "no ConfigMap: not engaged"
        fake_kube.create(configmap({"stop": "true"}))
        assert switch.engaged() is True
        assert switch.engaged() is True
        fake_kube.update({**configmap({"stop": "false"})})
        assert switch.engaged() is False
        fake_kube.update({**configmap({"stop": "please"})})
        assert switch.engaged() is True, "a value that is not false engages it: an operator meant to stop it"
        fake_kube.stop()
        assert switch.engaged() is True and switch.engaged() is True, "unreadable: the last state holds"
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "predictor.kill_switch"]
    assert [level for level, _ in lines] == ["WARNING", "WARNING", "WARNING", "WARNING"], lines
    assert lines[0][1].startswith("kill switch engaged (ConfigMap predictor/predictor-kill-switch, stop: 'true')")
    assert lines[1][1].startswith("kill switch lifted")
    assert "unreadable" in lines[3][1] and "keeping its last state (engaged)" in lines[3][1]
    assert len(fake_kube.requests_matching("GET", "/api/v1/namespaces/predictor/configmaps/predictor-kill-switch")) == 5
