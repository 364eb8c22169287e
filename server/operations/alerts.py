"""Alert delivery: POSTs each alert in the outbox (storage/alerts.py) to its webhook, signed,
with retries, on every server, without ever holding up the queue (its own task; each POST
runs in a thread with a timeout).

Each request carries:

- ``Content-Type: application/json``; the body is the alert (event, tenant_id, job_id,
  reason, message, link, ...);
- ``X-AIHub-Event``, ``X-AIHub-Delivery`` (the delivery's number: the same on every retry,
  for the receiver to drop duplicates) and ``X-AIHub-Timestamp`` (Unix seconds);
- ``X-AIHub-Signature: sha256=<hex>``, the HMAC-SHA256 with the target's secret of
  ``<timestamp>.<body>``. A receiver recomputes it and compares in constant time (and may
  refuse old timestamps).

A 2xx answer delivers it. Anything else (an error status, a timeout, a refused connection) is
tried again after ``retry_base`` seconds, doubling each time, up to ``max_attempts`` tries;
then it is FAILED. Every try is recorded (status, attempts, last_error, response_status).
Webhooks to loopback, private or link-local addresses are refused (at creation and at each
send, after name resolution) unless AIHUB_ALERT_ALLOW_PRIVATE_TARGETS is on.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from server.operations.periodic import Periodic
from storage import alerts, db
from storage.records import AlertDelivery

log = logging.getLogger(__name__)
EVENTS = ("job_failed", "degradation", "promotion", "forecast_ready")
TIMEOUT_SECONDS = 10.0
CLAIM_SECONDS = 60.0  # a claimed delivery is not sent by another server for this long
BATCH = 10


class TargetRefused(ValueError):
    """A webhook URL that may not be used."""


def check_url(url: str, *, allow_private: bool) -> str:
    """``url`` if it is an http(s) URL this service may POST to, else TargetRefused."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetRefused("must be an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise TargetRefused("must not carry a user name or password (sign with the secret instead)")
    if not allow_private:
        _check_public(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    return url


def _check_public(host: str, port: int) -> None:
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except OSError:
        raise TargetRefused(f"its host {host!r} cannot be resolved") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if address.is_private or address.is_loopback or address.is_link_local or address.is_reserved or address.is_multicast:
            raise TargetRefused(
                f"its host {host!r} is a loopback, private or link-local address; the server's operator can allow those "
                "(AIHUB_ALERT_ALLOW_PRIVATE_TARGETS)"
            )


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Result:
    ok: bool
    status: int | None
    error: str | None


def post(delivery: AlertDelivery, body: bytes, *, allow_private: bool, timeout: float = TIMEOUT_SECONDS) -> Result:
    """One try (blocking: run in a thread)."""
    try:
        check_url(delivery.url, allow_private=allow_private)
    except TargetRefused as exc:
        return Result(False, None, f"refused: {exc}")
    timestamp = str(int(time.time()))
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
        delivery.url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "aihub-training-alerts/1",
            "X-AIHub-Event": delivery.event,
            "X-AIHub-Delivery": str(delivery.delivery_id),
            "X-AIHub-Timestamp": timestamp,
            "X-AIHub-Signature": sign(delivery.secret, timestamp, body),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
            return Result(200 <= answer.status < 300, answer.status, None if answer.status < 300 else f"HTTP {answer.status}")
    except urllib.error.HTTPError as exc:
        return Result(False, exc.code, f"HTTP {exc.code}")
    except (OSError, ValueError) as exc:
        return Result(False, None, f"{type(exc).__name__}: {exc}"[:500])


class Alerter(Periodic):
    name = "alerts"

    def __init__(
        self,
        engine: db.Engine,
        *,
        public_url: str,
        interval: float = 1.0,
        retry_base: float = 10.0,
        max_attempts: int = 8,
        allow_private: bool = False,
    ) -> None:
        self.engine = engine  # the dispatcher's role: every tenant's outbox
        self.public_url = public_url.rstrip("/")
        self.interval = interval
        self.retry_base = retry_base
        self.max_attempts = max_attempts
        self.allow_private = allow_private
        self.sent: dict[str, int] = {}  # outcome -> count, for metrics

    async def run_pass(self) -> None:
        while await self.deliver_due() == BATCH:
            pass

    def body(self, delivery: AlertDelivery) -> bytes:
        payload = dict(delivery.body)
        link = payload.get("link")
        if isinstance(link, str) and link.startswith("/"):
            payload["link"] = self.public_url + link
        payload["delivery_id"] = delivery.delivery_id
        return json.dumps(payload, sort_keys=True).encode()

    async def deliver_due(self) -> int:
        """Send what is due now (concurrently); how many were tried."""
        async with db.transaction(self.engine) as conn:
            due = await alerts.claim_due(conn, limit=BATCH, claim_seconds=CLAIM_SECONDS)
        if due:
            await asyncio.gather(*(self._send(d) for d in due))
        return len(due)

    async def _send(self, delivery: AlertDelivery) -> None:
        result = await asyncio.to_thread(post, delivery, self.body(delivery), allow_private=self.allow_private)
        tries = delivery.attempts + 1
        if result.ok:
            status, retry_in = "DELIVERED", 0.0
        elif tries >= self.max_attempts:
            status, retry_in = "FAILED", 0.0
        else:
            status, retry_in = "PENDING", self.retry_base * 2 ** (tries - 1)
        self.sent[status] = self.sent.get(status, 0) + 1
        level = logging.INFO if result.ok else logging.WARNING
        log.log(
            level,
            "alert %d (%s) to target %s: %s%s",
            delivery.delivery_id,
            delivery.event,
            delivery.target_id,
            "delivered" if result.ok else result.error,
            f"; next try in {retry_in:g} s" if status == "PENDING" else (" (gave up)" if status == "FAILED" else ""),
            extra={"tenant_id": delivery.tenant_id},
        )
        async with db.transaction(self.engine) as conn:
            await alerts.record_attempt(
                conn, delivery.delivery_id, status=status, error=result.error, response_status=result.status, retry_in=retry_in
            )
