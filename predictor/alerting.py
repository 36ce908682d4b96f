"""Alerts to Alertmanager: the payload (pure) and a notifier that delivers it in the background.

The daemon calls `Notifier.send` once per tick with the alerts active after the tick and those that stopped. The
tick never waits for Alertmanager: a worker thread POSTs to `/api/v2/alerts` and retries with capped, jittered
exponential backoff while Alertmanager is down. Pending alerts are kept by `Alert.key`, so a newer state of an
alert replaces an older one that was not delivered yet, and a resolve is never lost behind other alerts.

Like Prometheus, a firing alert carries `endsAt` = last send + 4 resend intervals: if the daemon dies,
Alertmanager resolves its alerts by itself.

Alertmanager never notifies a resolve for an alert it never notified firing, and it notifies a new alert only
after its route's `group_wait`. So an alert is never resolved before Alertmanager has held it firing for
`group_wait_seconds`: a resolve of an alert never delivered firing (it fired and resolved while Alertmanager
was down) is sent as firing first, and every resolve waits until its alert has been delivered firing for that
long ("held"). Held resolves are sent at once by `close`.
"""

from __future__ import annotations

import enum
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests

from predictor import __version__
from predictor.config import AlertmanagerConfig
from predictor.domain import Alert, DeploymentRef
from predictor.ports import Clock, SystemClock

log = logging.getLogger(__name__)

ENDS_AT_RESEND_FACTOR = 4
"""A firing alert expires this many resend intervals after it was last sent (Prometheus uses 4 too)."""
_RETRYABLE_4XX = frozenset({408, 429})
"""Request Timeout and Too Many Requests: the only client errors that may succeed when tried again."""
_MAX_LOGGED_BODY_CHARS = 2000
_CLOSE_GRACE_SECONDS = 1.0
_MAX_ANNOUNCED = 10_000
"""Alerts remembered as delivered firing (a bound: the oldest is forgotten first)."""


def format_rfc3339(seconds: float, *, millis: bool = True) -> str:
    """POSIX seconds -> RFC3339 in UTC with a 'Z' suffix, e.g. '2024-05-01T12:00:00.000Z'."""
    text = datetime.fromtimestamp(seconds, tz=UTC).isoformat(timespec="milliseconds" if millis else "seconds")
    return text.removesuffix("+00:00") + "Z"


def alert_payload(
    alert: Alert, *, resolved_at: float | None, now: float, resend_seconds: float, generator_url: str
) -> dict[str, Any]:
    """The Alertmanager v2 `postableAlert` for `alert`: firing when `resolved_at` is None, else resolved then.

    A firing alert ends at `now + 4 * resend_seconds` so Alertmanager resolves it by itself if it stops being
    sent. A resolve time before the alert's start is raised to the start (Alertmanager rejects endsAt < startsAt).
    Labels with an empty value are left out: Alertmanager drops them anyway and they are not part of identity.
    """
    labels = {
        "alertname": alert.name,
        "namespace": alert.ref.namespace,
        alert.ref.kind: alert.ref.name,  # `deployment`, or `service` for a Swarm service
        "revision": str(alert.revision),
        "severity": alert.severity,
        "metric": alert.metric,
    }
    annotations = {
        "summary": alert.summary,
        "description": alert.description,
        "risk": f"{alert.risk:.2f}",
    }
    if alert.predicted_breach is not None and math.isfinite(alert.predicted_breach):
        annotations["predicted_breach"] = format_rfc3339(alert.predicted_breach, millis=False)
    ends_at = (
        now + ENDS_AT_RESEND_FACTOR * resend_seconds if resolved_at is None else max(resolved_at, alert.starts_at)
    )
    payload: dict[str, Any] = {
        "labels": {name: value for name, value in labels.items() if value},
        "annotations": annotations,
        "startsAt": format_rfc3339(alert.starts_at),
        "endsAt": format_rfc3339(ends_at),
    }
    if generator_url:
        payload["generatorURL"] = generator_url
    return payload



@dataclass(frozen=True)
class _Pending:
    alert: Alert
    sent_at: float
    """The `now` of the send that carried this state: a firing alert is valid until sent_at + 4 resends."""
    resolved_at: float | None
    announce: bool = False
    """A resolve of an alert never delivered firing: sent as firing, then held and sent as resolved."""


class _Outcome(enum.Enum):
    DELIVERED = "delivered"
    REJECTED = "rejected"
    RETRY = "retry"


class AlertmanagerNotifier:
    """Delivers alerts to Alertmanager from a background thread; implements the `Notifier` port.

    Counters, for the daemon's /metrics (monotonic, read without locking):
    `sent`: alerts Alertmanager accepted; `failed`: POST attempts that failed and will be retried;
    `dropped`: alerts given up on (rejected with a 4xx other than 408/429, sent after close, or still pending
    when `close` ran out of time).
    """

    def __init__(
        self,
        config: AlertmanagerConfig,
        *,
        resend_seconds: float,
        clock: Clock | None = None,
        backoff_initial_seconds: float = 1.0,
        backoff_max_seconds: float = 60.0,
        group_wait_seconds: float | None = None,
        page_url: Callable[[DeploymentRef], str] | None = None,
    ) -> None:
        if not config.url:
            raise ValueError("alertmanager.url: required for AlertmanagerNotifier (use LoggingNotifier without it)")
        if resend_seconds <= 0:
            raise ValueError(f"resend_seconds: expected a positive number of seconds, got {resend_seconds!r}")
        if not 0 < backoff_initial_seconds <= backoff_max_seconds:
            raise ValueError(
                f"backoff: expected 0 < initial <= max, got initial={backoff_initial_seconds!r} "
                f"max={backoff_max_seconds!r}"
            )
        self.config = config
        self.page_url = page_url
        """The rollout's status page (`ServerConfig.page_url`): the alert's generatorURL when it gives one."""
        self.resend_seconds = resend_seconds
        self.clock: Clock = clock or SystemClock()
        """Decides when an undelivered firing alert has expired (it is then not sent: Alertmanager expired it)."""
        self.backoff_initial_seconds = backoff_initial_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self.group_wait_seconds = config.group_wait_seconds if group_wait_seconds is None else group_wait_seconds
        """How long an alert is kept firing in Alertmanager before its resolve is sent (see the module docstring)."""
        self._announced: dict[tuple[str, str, str, int, str], float] = {}
        """Alerts delivered firing and not yet resolved: the monotonic time of their first firing delivery."""
        self._held: dict[tuple[str, str, str, int, str], tuple[_Pending, float]] = {}
        """Resolves waiting for their alert's `group_wait_seconds`: (the resolve, monotonic time to send it)."""
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self._base_url = config.url.rstrip("/")
        self._cond = threading.Condition()
        self._pending: dict[tuple[str, str, str, int, str], _Pending] = {}
        self._in_flight: dict[tuple[str, str, str, int, str], _Pending] = {}
        self._thread: threading.Thread | None = None
        self._closing = False
        self._close_deadline = 0.0

    @property
    def alerts_url(self) -> str:
        return self._base_url + "/api/v2/alerts"

    @property
    def pending(self) -> int:
        """Alerts not delivered yet: queued, or in a POST in flight."""
        with self._cond:
            return len(self._pending.keys() | self._in_flight.keys() | self._held.keys())

    def send(self, firing: Sequence[Alert], resolved: Sequence[Alert], now: float) -> None:
        """Queue the newest state of these alerts and return at once; delivery happens in the background.

        An alert listed in both is taken as firing (it stays active; a wrong resolve would flap).
        """
        with self._cond:
            if self._closing:
                self.dropped += len(firing) + len(resolved)
                log.warning("alertmanager notifier is closed: dropping %d alert(s)", len(firing) + len(resolved))
                return
            for alert in resolved:
                entry = _Pending(alert, sent_at=now, resolved_at=now, announce=alert.key not in self._announced)
                if entry.announce or not self._hold_locked(entry):
                    self._pending[alert.key] = entry
            for alert in firing:
                self._held.pop(alert.key, None)  # firing again: the held resolve is obsolete
                self._pending[alert.key] = _Pending(alert, sent_at=now, resolved_at=None)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="alertmanager-notifier", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def _hold_locked(self, entry: _Pending) -> bool:
        """Hold a resolve until its alert has been firing in Alertmanager for group_wait; True when held."""
        announced = self._announced.get(entry.alert.key)
        if announced is None:
            return False
        due = announced + self.group_wait_seconds
        if time.monotonic() >= due:
            return False
        self._held[entry.alert.key] = (entry, due)
        self._pending.pop(entry.alert.key, None)
        return True

    def _release_due_locked(self) -> float | None:
        """Move held resolves that are due (all of them when closing) to pending; seconds to the next one."""
        now = time.monotonic()
        for key, (entry, due) in list(self._held.items()):
            if due <= now or self._closing:
                del self._held[key]
                self._pending.setdefault(key, entry)
        return min((due for _, due in self._held.values()), default=now) - now if self._held else None

    def _delivered_locked(self, batch: dict[tuple[str, str, str, int, str], _Pending]) -> None:
        """Alertmanager accepted `batch`: what fired is announced, what was announced is now held."""
        now = time.monotonic()
        for key, entry in batch.items():
            if entry.resolved_at is None or entry.announce:
                self._announced.setdefault(key, now)
                if len(self._announced) > _MAX_ANNOUNCED:
                    del self._announced[next(iter(self._announced))]
            else:
                self._announced.pop(key, None)
            if entry.announce and key not in self._pending:
                resolve = _Pending(entry.alert, sent_at=entry.sent_at, resolved_at=entry.resolved_at)
                if not self._hold_locked(resolve):
                    self._pending[key] = resolve

    def close(self, timeout: float = 5.0) -> None:
        """Try to deliver what is pending within `timeout` seconds, then stop the worker; drops the rest.

        Cuts a backoff short to try at once. Returns within about `timeout` + 1 s: the grace lets a POST cut
        short by the deadline end and the worker count what it drops.
        """
        with self._cond:
            if not self._closing:
                self._closing = True
                self._close_deadline = time.monotonic() + timeout
            thread = self._thread
            self._cond.notify_all()
        if thread is not None:
            thread.join(timeout + _CLOSE_GRACE_SECONDS)
            if thread.is_alive():
                log.warning("alertmanager notifier did not stop within %.1fs", timeout)

    def __enter__(self) -> AlertmanagerNotifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def is_online(self) -> bool:
        """True when Alertmanager answers 200 on `/-/ready`."""
        try:
            response = requests.get(
                self._base_url + "/-/ready",
                headers=self._headers(),
                verify=self._verify(),
                timeout=self.config.tls.timeout_seconds,
            )
            with response:
                return response.status_code == 200
        except (requests.RequestException, OSError) as exc:
            log.debug("alertmanager %s not ready: %s", self._base_url, exc)
            return False

    # The worker thread.

    def _run(self) -> None:
        session = requests.Session()
        failures = 0
        try:
            while True:
                with self._cond:
                    while True:
                        next_due = self._release_due_locked()
                        if self._pending or self._closing:
                            break
                        self._cond.wait(next_due)
                    if not self._pending:
                        return
                    if self._closing and time.monotonic() >= self._close_deadline:
                        self._drop_pending_locked()
                        return
                    batch, self._pending = self._pending, {}
                    self._in_flight = batch
                try:
                    outcome = self._deliver(session, batch, failures_in_row=failures)
                except Exception:
                    # Keep the worker alive whatever happens: a dead worker would silently stop all alerts.
                    log.exception("unexpected error sending alerts to %s, will retry", self.alerts_url)
                    outcome = _Outcome.RETRY
                if outcome is not _Outcome.RETRY:
                    with self._cond:
                        self._in_flight = {}
                        if outcome is _Outcome.DELIVERED:
                            self._delivered_locked(batch)
                    if failures:
                        log.info("alertmanager %s reachable again after %d failed attempt(s)", self._base_url,
                                 failures)
                    failures = 0
                    continue
                failures += 1
                with self._cond:
                    self.failed += 1
                    self._in_flight = {}
                    for key, entry in batch.items():
                        # A newer state queued while the POST was in flight wins over the one that failed.
                        self._pending.setdefault(key, entry)
                self._sleep(self._backoff_seconds(failures))
        finally:
            session.close()

    def _backoff_seconds(self, failures: int) -> float:
        """Exponential in the number of failures in a row, capped, with 'equal jitter' (half fixed, half random)."""
        delay = min(self.backoff_max_seconds, self.backoff_initial_seconds * 2 ** min(failures - 1, 62))
        return delay / 2 + random.uniform(0, delay / 2)

    def _sleep(self, seconds: float) -> None:
        """Wait out a backoff; a close that arrives meanwhile ends it at once so pending alerts are flushed."""
        with self._cond:
            was_closing = self._closing
            end = time.monotonic() + seconds
            while True:
                if self._closing and not was_closing:
                    return
                if self._closing:
                    end = min(end, self._close_deadline)
                remaining = end - time.monotonic()
                if remaining <= 0:
                    return
                self._cond.wait(remaining)

    def _drop_pending_locked(self) -> None:
        if self._pending:
            log.warning(
                "alertmanager notifier closing: dropping %d undelivered alert(s) for %s",
                len(self._pending), self._base_url,
            )
            self.dropped += len(self._pending)
            self._pending = {}

    def _deliver(
        self, session: requests.Session, batch: dict[tuple[str, str, str, int, str], _Pending], *,
        failures_in_row: int,
    ) -> _Outcome:
        now = self.clock.now()
        payload = []
        for entry in batch.values():
            if entry.resolved_at is None and now >= entry.sent_at + ENDS_AT_RESEND_FACTOR * self.resend_seconds:
                # No longer sent by the daemon and already expired in Alertmanager: nothing left to say.
                log.debug("not sending expired alert %s", entry.alert.key)
                continue
            try:
                payload.append(
                    alert_payload(
                        # A resolve never delivered firing is first sent firing, valid from now for 4 resends.
                        entry.alert,
                        resolved_at=None if entry.announce else entry.resolved_at,
                        now=now if entry.announce else entry.sent_at,
                        resend_seconds=self.resend_seconds,
                        generator_url=(self.page_url(entry.alert.ref) if self.page_url else "")
                        or self.config.generator_url,
                    )
                )
            except (ValueError, OverflowError, OSError):
                # A time no datetime can hold: this alert can never be sent, the others still can.
                log.exception("dropping alert %s: cannot build its Alertmanager payload", entry.alert.key)
                with self._cond:
                    self.dropped += 1
        if not payload:
            return _Outcome.DELIVERED
        try:
            response = session.post(
                self.alerts_url,
                json=payload,
                headers=self._headers(),
                verify=self._verify(),
                timeout=self._request_timeout(),
            )
        except (requests.RequestException, OSError) as exc:
            self._log_failure(f"{type(exc).__name__}: {exc}", failures_in_row)
            return _Outcome.RETRY
        with response:
            status, body = response.status_code, response.text
        if 200 <= status < 300:
            with self._cond:
                self.sent += len(payload)
            log.debug("sent %d alert(s) to %s", len(payload), self.alerts_url)
            return _Outcome.DELIVERED
        if 400 <= status < 500 and status not in _RETRYABLE_4XX:
            with self._cond:
                self.dropped += len(payload)
            log.error(
                "alertmanager rejected %d alert(s) with HTTP %d, dropping them (a retry would fail the same): %s",
                len(payload), status, body[:_MAX_LOGGED_BODY_CHARS],
            )
            return _Outcome.REJECTED
        self._log_failure(f"HTTP {status}: {body[:_MAX_LOGGED_BODY_CHARS]}", failures_in_row)
        return _Outcome.RETRY

    def _log_failure(self, detail: str, failures_in_row: int) -> None:
        # The first failure of a streak is a warning; the retries after it would only repeat it.
        level = logging.WARNING if failures_in_row == 0 else logging.DEBUG
        log.log(level, "cannot send alerts to %s, will retry: %s", self.alerts_url, detail)

    def _request_timeout(self) -> float:
        timeout = self.config.tls.timeout_seconds
        with self._cond:
            if self._closing:
                timeout = min(timeout, max(0.1, self._close_deadline - time.monotonic()))
        return timeout

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": f"predictor/{__version__}"}
        token_file = self.config.tls.bearer_token_file
        if token_file is not None:
            # Read per request: projected service-account tokens are rotated on disk.
            headers["Authorization"] = "Bearer " + token_file.read_text(encoding="utf-8").strip()
        return headers

    def _verify(self) -> bool | str:
        if not self.config.tls.verify_tls:
            return False
        return str(self.config.tls.ca_file) if self.config.tls.ca_file is not None else True


class LoggingNotifier:
    """The `Notifier` used when no Alertmanager URL is configured: logs each alert at INFO, keeps nothing."""

    sent = 0
    failed = 0
    dropped = 0
    pending = 0

    def send(self, firing: Sequence[Alert], resolved: Sequence[Alert], now: float) -> None:
        for alert in firing:
            log.info(
                "alert firing (no Alertmanager configured): %s %s revision %d metric=%s severity=%s risk=%.2f: %s",
                alert.name, alert.ref, alert.revision, alert.metric, alert.severity, alert.risk, alert.summary,
            )
        for alert in resolved:
            log.info(
                "alert resolved (no Alertmanager configured): %s %s revision %d metric=%s",
                alert.name, alert.ref, alert.revision, alert.metric,
            )

    def is_online(self) -> bool:
        return True

    def close(self, timeout: float = 5.0) -> None:
        return None
