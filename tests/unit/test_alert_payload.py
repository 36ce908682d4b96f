"""alert_payload: the Alertmanager v2 postableAlert built from an Alert (labels, annotations, times)."""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from typing import Any

import pytest

from predictor.alerting import AlertmanagerNotifier, LoggingNotifier, alert_payload, format_rfc3339
from predictor.config import AlertmanagerConfig
from predictor.domain import Alert, DeploymentRef

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC).timestamp()


def make_alert(**overrides: object) -> Alert:
    fields: dict[str, object] = {
        "name": "PredictedSLOBreach",
        "ref": DeploymentRef("shop", "checkout"),
        "revision": 7,
        "severity": "critical",
        "metric": "error_ratio",
        "summary": "checkout revision 7 is predicted to breach error_ratio",
        "description": "error_ratio 0.031 rising 0.002/s, threshold 0.05, breach in 9m30s",
        "starts_at": T0,
        "predicted_breach": T0 + 570,
        "risk": 0.8349,
    }
    fields.update(overrides)
    return Alert(**fields)  # type: ignore[arg-type]


def firing(alert: Alert, now: float = T0 + 30, resend_seconds: float = 15.0, generator_url: str = "") -> dict[str, Any]:
    return alert_payload(alert, resolved_at=None, now=now, resend_seconds=resend_seconds, generator_url=generator_url)


def test_labels_identify_the_alert() -> None:
    payload = firing(make_alert())
    assert payload["labels"] == {
        "alertname": "PredictedSLOBreach",
        "namespace": "shop",
        "deployment": "checkout",
        "revision": "7",
        "severity": "critical",
        "metric": "error_ratio",
    }
    assert all(isinstance(value, str) for value in payload["labels"].values())


def test_annotations_carry_summary_description_breach_and_risk() -> None:
    payload = firing(make_alert())
    assert payload["annotations"] == {
        "summary": "checkout revision 7 is predicted to breach error_ratio",
        "description": "error_ratio 0.031 rising 0.002/s, threshold 0.05, breach in 9m30s",
        "predicted_breach": "2024-05-01T12:09:30Z",
        "risk": "0.83",
    }


def test_predicted_breach_is_absent_when_not_predicted() -> None:
    payload = firing(make_alert(name="PredictorBlind", predicted_breach=None, risk=0.0))
    assert "predicted_breach" not in payload["annotations"]
    assert payload["annotations"]["risk"] == "0.00"
    assert payload["labels"]["alertname"] == "PredictorBlind"


@pytest.mark.parametrize("breach", [math.inf, math.nan])
def test_predicted_breach_is_absent_when_not_finite(breach: float) -> None:
    assert "predicted_breach" not in firing(make_alert(predicted_breach=breach))["annotations"]


def test_empty_label_values_are_left_out() -> None:
    payload = firing(make_alert(metric=""))
    assert "metric" not in payload["labels"]


def test_times_are_rfc3339_utc_with_z() -> None:
    payload = firing(make_alert(starts_at=T0 + 0.25), now=T0 + 30)
    assert payload["startsAt"] == "2024-05-01T12:00:00.250Z"
    assert payload["endsAt"] == "2024-05-01T12:01:30.000Z"  # now + 4 * 15s


def test_firing_alert_ends_four_resends_after_now() -> None:
    payload = firing(make_alert(), now=T0 + 100, resend_seconds=60.0)
    assert payload["endsAt"] == format_rfc3339(T0 + 100 + 240)


def test_resolved_alert_ends_at_the_resolve_time() -> None:
    payload = alert_payload(
        make_alert(), resolved_at=T0 + 45, now=T0 + 1000, resend_seconds=15.0, generator_url=""
    )
    assert payload["endsAt"] == "2024-05-01T12:00:45.000Z"
    assert payload["startsAt"] == "2024-05-01T12:00:00.000Z"


def test_resolve_before_start_is_raised_to_the_start() -> None:
    """Alertmanager rejects endsAt before startsAt (a clock step back must not lose the resolve)."""
    payload = alert_payload(make_alert(), resolved_at=T0 - 5, now=T0, resend_seconds=15.0, generator_url="")
    assert payload["endsAt"] == payload["startsAt"]


def test_generator_url_only_when_set() -> None:
    assert "generatorURL" not in firing(make_alert())
    payload = firing(make_alert(), generator_url="http://predictor.monitoring:8080/")
    assert payload["generatorURL"] == "http://predictor.monitoring:8080/"
    assert set(payload) == {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}


def test_format_rfc3339() -> None:
    assert format_rfc3339(0.0) == "1970-01-01T00:00:00.000Z"
    assert format_rfc3339(1.5, millis=False) == "1970-01-01T00:00:01Z"


def test_logging_notifier_logs_and_keeps_nothing(caplog: pytest.LogCaptureFixture) -> None:
    notifier = LoggingNotifier()
    with caplog.at_level(logging.INFO, logger="predictor.alerting"):
        notifier.send([make_alert()], [make_alert(revision=6)], now=T0)
    messages = [r.getMessage() for r in caplog.records]
    assert any("firing" in m and "shop/checkout revision 7" in m for m in messages)
    assert any("resolved" in m and "shop/checkout revision 6" in m for m in messages)
    assert (notifier.sent, notifier.failed, notifier.dropped, notifier.pending) == (0, 0, 0, 0)
    assert notifier.is_online()
    notifier.close()


@pytest.mark.parametrize(
    ("config", "kwargs", "message"),
    [
        (AlertmanagerConfig(url=None), {"resend_seconds": 15.0}, "alertmanager.url"),
        (AlertmanagerConfig(url="http://am:9093"), {"resend_seconds": 0.0}, "resend_seconds"),
        (
            AlertmanagerConfig(url="http://am:9093"),
            {"resend_seconds": 15.0, "backoff_initial_seconds": 5.0, "backoff_max_seconds": 1.0},
            "backoff",
        ),
    ],
)
def test_notifier_rejects_bad_parameters(config: AlertmanagerConfig, kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AlertmanagerNotifier(config, **kwargs)
