"""AlertmanagerNotifier against a real Alertmanager routed to a webhook receiver, and against a fake API for the
answers a healthy Alertmanager does not give (400, 429, 503, slow responses)."""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from predictor.alerting import AlertmanagerNotifier
from predictor.config import AlertmanagerConfig, TLSConfig
from predictor.domain import Alert, DeploymentRef
from tests.fixtures.alertmanager import (
    AlertmanagerProcess,
    RecordedRequest,
    RecordingServer,
    free_port,
    webhook_alerts,
)

GENERATOR_URL = "http://predictor.monitoring.svc:8080/"
MakeNotifier = Callable[..., AlertmanagerNotifier]


@pytest.fixture
def make_notifier() -> Iterator[MakeNotifier]:
    """Notifiers with short timeouts and backoff; all closed on teardown."""
    created: list[AlertmanagerNotifier] = []

    def make(
        url: str,
        *,
        token_file: Path | None = None,
        timeout_seconds: float = 5.0,
        backoff_initial_seconds: float = 0.05,
        backoff_max_seconds: float = 0.2,
        resend_seconds: float = 60.0,
        group_wait_seconds: float = 1.0,
    ) -> AlertmanagerNotifier:
        config = AlertmanagerConfig(
            url=url,
            tls=TLSConfig(bearer_token_file=token_file, timeout_seconds=timeout_seconds),
            generator_url=GENERATOR_URL,
        )
        notifier = AlertmanagerNotifier(
            config,
            resend_seconds=resend_seconds,
            backoff_initial_seconds=backoff_initial_seconds,
            backoff_max_seconds=backoff_max_seconds,
            group_wait_seconds=group_wait_seconds,  # the test Alertmanager's group_wait
        )
        created.append(notifier)
        return notifier

    yield make
    for notifier in created:
        notifier.close(timeout=1.0)


def make_alert(deployment: str = "checkout", *, name: str = "PredictedSLOBreach", revision: int = 7) -> Alert:
    now = time.time()
    return Alert(
        name=name,
        ref=DeploymentRef("shop", deployment),
        revision=revision,
        severity="critical",
        metric="error_ratio",
        summary=f"{deployment} revision {revision} is predicted to breach error_ratio",
        description="error_ratio 0.031 rising 0.002/s, threshold 0.05, breach in 9m30s",
        starts_at=now - 30,
        predicted_breach=now + 570,
        risk=0.83,
    )


def eventually(predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def notified(deployment: str, status: str) -> Callable[[list[Any]], bool]:
    return lambda bodies: any(
        a["labels"].get("deployment") == deployment for a in webhook_alerts(bodies, status)
    )


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def alert_posts(server: RecordingServer) -> list[RecordedRequest]:
    return [r for r in server.requests if r.method == "POST" and r.path == "/api/v2/alerts"]


# Against a real Alertmanager.


@pytest.mark.alertmanager
def test_firing_alert_reaches_the_webhook_with_labels_and_annotations(
    alertmanager: AlertmanagerProcess, webhook_receiver: RecordingServer, make_notifier: MakeNotifier
) -> None:
    notifier = make_notifier(alertmanager.url)
    alert = make_alert("checkout")
    notifier.send([alert], [], now=time.time())

    bodies = webhook_receiver.wait_for(notified("checkout", "firing"))

    [received] = webhook_alerts(bodies, "firing")
    assert received["labels"] == {
        "alertname": "PredictedSLOBreach",
        "namespace": "shop",
        "deployment": "checkout",
        "revision": "7",
        "severity": "critical",
        "metric": "error_ratio",
    }
    assert received["annotations"]["summary"] == alert.summary
    assert received["annotations"]["description"] == alert.description
    assert received["annotations"]["risk"] == "0.83"
    assert parse_time(received["annotations"]["predicted_breach"]) == pytest.approx(alert.predicted_breach, abs=1)
    assert parse_time(received["startsAt"]) == pytest.approx(alert.starts_at, abs=0.001)
    assert received["generatorURL"] == GENERATOR_URL
    eventually(lambda: notifier.sent == 1, what="the POST's answer")
    assert notifier.dropped == 0


@pytest.mark.alertmanager
def test_resent_alert_is_not_notified_twice(
    alertmanager: AlertmanagerProcess, webhook_receiver: RecordingServer, make_notifier: MakeNotifier
) -> None:
    notifier = make_notifier(alertmanager.url)
    alert = make_alert("cart")
    notifier.send([alert], [], now=time.time())
    webhook_receiver.wait_for(notified("cart", "firing"))

    # The daemon re-sends active alerts every tick; Alertmanager must deduplicate them.
    for resend in range(2, 5):
        notifier.send([alert], [], now=time.time())
        eventually(lambda n=resend: notifier.sent >= n, what=f"re-send {resend} delivered")
        time.sleep(0.5)
    time.sleep(2.0)  # Two more group intervals in which a duplicate would be flushed.

    firing = [a for a in webhook_alerts(webhook_receiver.bodies, "firing") if a["labels"]["deployment"] == "cart"]
    assert len(firing) == 1
    assert notifier.sent == 4


@pytest.mark.alertmanager
def test_resolved_alert_sends_a_resolved_notification(
    alertmanager: AlertmanagerProcess, webhook_receiver: RecordingServer, make_notifier: MakeNotifier
) -> None:
    notifier = make_notifier(alertmanager.url)
    alert = make_alert("payments")
    notifier.send([alert], [], now=time.time())
    webhook_receiver.wait_for(notified("payments", "firing"))

    resolved_at = time.time()
    notifier.send([], [alert], now=resolved_at)
    bodies = webhook_receiver.wait_for(notified("payments", "resolved"))

    [received] = webhook_alerts(bodies, "resolved")
    assert received["labels"]["revision"] == "7"
    assert parse_time(received["endsAt"]) == pytest.approx(resolved_at, abs=0.001)
    assert bodies[-1]["status"] == "resolved"


@pytest.mark.alertmanager
def test_alertmanager_down_at_first_send_does_not_block_and_alert_arrives_later(
    start_alertmanager: Callable[..., AlertmanagerProcess],
    webhook_receiver: RecordingServer,
    make_notifier: MakeNotifier,
) -> None:
    port = free_port()  # Nobody listens here until Alertmanager starts on it below.
    notifier = make_notifier(f"http://127.0.0.1:{port}", backoff_initial_seconds=1.0, backoff_max_seconds=1.0)

    # Called from a thread only so that a send that blocks fails this test instead of hanging it.
    sender = threading.Thread(target=notifier.send, args=([make_alert("search")], [], time.time()))
    sender.start()
    sender.join(timeout=10.0)
    failed_when_send_returned = notifier.failed
    assert not sender.is_alive(), "send blocked while Alertmanager was down"

    # Delivery was impossible, so send did not wait for it; and it returned before the first retry, which
    # the backoff puts at least 0.5 s after the first failed attempt.
    assert notifier.sent == 0
    assert notifier.pending == 1
    assert failed_when_send_returned <= 1
    # Meanwhile the worker keeps retrying in the background.
    eventually(lambda: notifier.failed >= 2, what="the worker to retry")
    assert notifier.sent == 0

    start_alertmanager(port)
    webhook_receiver.wait_for(notified("search", "firing"), timeout=15.0)
    eventually(lambda: notifier.sent == 1 and notifier.pending == 0, what="the POST's answer")
    assert notifier.dropped == 0


@pytest.mark.alertmanager
def test_an_alert_that_fired_and_resolved_while_alertmanager_was_down_is_notified_firing_then_resolved(
    start_alertmanager: Callable[..., AlertmanagerProcess],
    webhook_receiver: RecordingServer,
    make_notifier: MakeNotifier,
) -> None:
    port = free_port()
    notifier = make_notifier(f"http://127.0.0.1:{port}", backoff_initial_seconds=0.2, backoff_max_seconds=0.5)
    alert = make_alert("orders")
    notifier.send([alert], [], now=time.time())
    eventually(lambda: notifier.failed >= 1, what="a failed attempt")
    notifier.send([], [alert], now=time.time())  # resolved before Alertmanager ever heard of it
    start_alertmanager(port)
    bodies = webhook_receiver.wait_for(notified("orders", "resolved"), timeout=20.0)
    statuses = [a["status"] for a in webhook_alerts(bodies) if a["labels"].get("deployment") == "orders"]
    assert statuses[0] == "firing" and statuses[-1] == "resolved", statuses
    eventually(lambda: notifier.pending == 0, what="nothing left pending")


@pytest.mark.alertmanager
def test_is_online(alertmanager: AlertmanagerProcess, make_notifier: MakeNotifier) -> None:
    assert make_notifier(alertmanager.url).is_online()
    assert not make_notifier(f"http://127.0.0.1:{free_port()}").is_online()


# Against a fake Alertmanager API.


def test_client_error_is_logged_dropped_and_not_retried(
    fake_alertmanager_api: RecordingServer, make_notifier: MakeNotifier, caplog: pytest.LogCaptureFixture
) -> None:
    fake_alertmanager_api.responder = lambda request: (400, b'{"code":400,"message":"start time after end"}')
    notifier = make_notifier(fake_alertmanager_api.url, backoff_initial_seconds=0.02, backoff_max_seconds=0.05)

    with caplog.at_level(logging.ERROR, logger="predictor.alerting"):
        notifier.send([make_alert("bad")], [], now=time.time())
        eventually(lambda: notifier.dropped == 1, what="the rejected alert to be dropped")
        time.sleep(0.5)  # Ten backoff periods: a retry would show.

    assert len(alert_posts(fake_alertmanager_api)) == 1
    assert (notifier.sent, notifier.failed, notifier.dropped, notifier.pending) == (0, 0, 1, 0)
    assert any("HTTP 400" in r.getMessage() and "start time after end" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("status", [429, 500, 503])
def test_retryable_answers_are_retried_until_accepted(
    fake_alertmanager_api: RecordingServer, make_notifier: MakeNotifier, status: int
) -> None:
    answers = iter([status, status])
    fake_alertmanager_api.responder = lambda request: (next(answers, 200), b"busy")
    notifier = make_notifier(fake_alertmanager_api.url)

    notifier.send([make_alert("flaky")], [], now=time.time())

    eventually(lambda: notifier.sent == 1, what="delivery after two failures")
    assert len(alert_posts(fake_alertmanager_api)) == 3
    assert (notifier.failed, notifier.dropped, notifier.pending) == (2, 0, 0)


def test_timeout_is_retried(fake_alertmanager_api: RecordingServer, make_notifier: MakeNotifier) -> None:
    slow = threading.Event()
    slow.set()

    def respond(request: RecordedRequest) -> tuple[int, bytes]:
        if slow.is_set():
            slow.clear()
            time.sleep(1.0)
        return 200, b""

    fake_alertmanager_api.responder = respond
    notifier = make_notifier(fake_alertmanager_api.url, timeout_seconds=0.2)

    notifier.send([make_alert("slow")], [], now=time.time())

    eventually(lambda: notifier.sent == 1, what="delivery after a timeout")
    assert notifier.failed == 1


def test_newest_state_wins_and_a_resolve_is_not_lost(
    fake_alertmanager_api: RecordingServer, make_notifier: MakeNotifier
) -> None:
    down = threading.Event()
    down.set()
    accepted: list[RecordedRequest] = []

    def respond(request: RecordedRequest) -> tuple[int, bytes]:
        if down.is_set():
            return 503, b"down"
        accepted.append(request)
        return 200, b""

    fake_alertmanager_api.responder = respond
    notifier = make_notifier(fake_alertmanager_api.url)
    first, second = make_alert("first"), make_alert("second")

    now = time.time()
    notifier.send([first], [], now=now)
    eventually(lambda: notifier.failed >= 1, what="a failed attempt")
    notifier.send([first, second], [], now=now + 1)
    notifier.send([second], [first], now=now + 2)  # `first` resolves while Alertmanager is down.
    assert notifier.pending == 2
    down.clear()

    eventually(lambda: notifier.pending == 0 and notifier.sent >= 3, what="everything delivered")
    last_state: dict[str, dict[str, Any]] = {}
    states: dict[str, list[str]] = {}
    for request in accepted:
        for posted in request.json():
            last_state[posted["labels"]["deployment"]] = posted
            firing = parse_time(posted["endsAt"]) > now + 2
            states.setdefault(posted["labels"]["deployment"], []).append("firing" if firing else "resolved")
    # `first` never reached Alertmanager firing: it is sent firing, then (its group_wait later) resolved.
    assert states["first"] == ["firing", "resolved"]
    # The last Alertmanager heard of `first` is its resolve; of `second` that it fires, as of the last send.
    assert parse_time(last_state["first"]["endsAt"]) == pytest.approx(now + 2, abs=0.001)
    assert parse_time(last_state["second"]["endsAt"]) == pytest.approx(now + 2 + 4 * 60, abs=0.001)
    assert notifier.dropped == 0


def test_bearer_token_is_read_for_each_request(
    fake_alertmanager_api: RecordingServer, make_notifier: MakeNotifier, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first-token\n", encoding="utf-8")
    notifier = make_notifier(fake_alertmanager_api.url, token_file=token_file)

    notifier.send([make_alert("a")], [], now=time.time())
    eventually(lambda: notifier.sent == 1, what="first delivery")
    token_file.write_text("rotated-token\n", encoding="utf-8")
    notifier.send([make_alert("b")], [], now=time.time())
    eventually(lambda: notifier.sent == 2, what="second delivery")

    posts = alert_posts(fake_alertmanager_api)
    assert [r.headers["Authorization"] for r in posts] == ["Bearer first-token", "Bearer rotated-token"]
    assert posts[0].headers["Content-Type"] == "application/json"
    assert isinstance(posts[0].json(), list)


def test_close_flushes_pending_alerts_at_once(
    fake_alertmanager_api: RecordingServer, make_notifier: MakeNotifier
) -> None:
    down = threading.Event()
    down.set()
    fake_alertmanager_api.responder = lambda request: (503, b"down") if down.is_set() else (200, b"")
    # A backoff far longer than the test: only close can cut it short.
    notifier = make_notifier(fake_alertmanager_api.url, backoff_initial_seconds=60.0, backoff_max_seconds=60.0)
    notifier.send([make_alert("flush")], [], now=time.time())
    eventually(lambda: notifier.failed == 1, what="a failed attempt")
    down.clear()

    started = time.monotonic()
    notifier.close(timeout=5.0)

    assert time.monotonic() - started < 5.0
    assert (notifier.sent, notifier.dropped, notifier.pending) == (1, 0, 0)


def test_close_drops_what_it_cannot_deliver_and_later_sends(
    fake_alertmanager_api: RecordingServer, make_notifier: MakeNotifier
) -> None:
    fake_alertmanager_api.responder = lambda request: (503, b"down")
    notifier = make_notifier(fake_alertmanager_api.url)
    notifier.send([make_alert("lost")], [], now=time.time())
    eventually(lambda: notifier.failed >= 1, what="a failed attempt")

    notifier.close(timeout=0.3)

    assert (notifier.sent, notifier.dropped, notifier.pending) == (0, 1, 0)
    notifier.send([make_alert("late")], [], now=time.time())
    assert notifier.dropped == 2


def test_an_alert_that_cannot_be_encoded_is_dropped_and_the_others_sent(
    fake_alertmanager_api: RecordingServer, make_notifier: MakeNotifier
) -> None:
    notifier = make_notifier(fake_alertmanager_api.url)
    broken = dataclasses.replace(make_alert("broken"), starts_at=math.inf)

    notifier.send([broken, make_alert("fine")], [], now=time.time())

    eventually(lambda: notifier.sent == 1 and notifier.dropped == 1, what="one sent, one dropped")
    [post] = alert_posts(fake_alertmanager_api)
    assert [a["labels"]["deployment"] for a in post.json()] == ["fine"]


class FixedClock:
    def __init__(self, now: float) -> None:
        self.time = now

    def now(self) -> float:
        return self.time


def test_expired_firing_alert_is_not_sent_but_a_resolve_is(fake_alertmanager_api: RecordingServer) -> None:
    """A firing state older than its endsAt has expired in Alertmanager too; a resolve must still go out."""
    sent_at = time.time()
    clock = FixedClock(sent_at + 4 * 15.0)
    config = AlertmanagerConfig(url=fake_alertmanager_api.url)
    with AlertmanagerNotifier(config, resend_seconds=15.0, clock=clock, backoff_initial_seconds=0.05) as notifier:
        notifier.group_wait_seconds = 0.0
        notifier.send([make_alert("stale")], [make_alert("gone")], now=sent_at)
        eventually(lambda: notifier.sent == 2, what="the resolve delivered")
        first, second = alert_posts(fake_alertmanager_api)
        # never delivered firing: sent firing first (valid from the clock's now), then resolved
        assert [(a["labels"]["deployment"], a["endsAt"] > a["startsAt"]) for a in first.json()] == [("gone", True)]
        assert [a["labels"]["deployment"] for a in second.json()] == ["gone"]
        assert parse_time(second.json()[0]["endsAt"]) == pytest.approx(sent_at, abs=0.001)
        assert notifier.pending == 0
