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
  refuse old timestamps);
- the Standard Webhooks headers too, for receivers that verify those
  (https://www.standardwebhooks.com): ``webhook-id`` (the delivery's number),
  ``webhook-timestamp`` and ``webhook-signature: v1,<base64>``, the HMAC-SHA256 of
  ``<id>.<timestamp>.<body>`` keyed by the secret's UTF-8 bytes (a Standard Webhooks library
  takes it as ``"whsec_" + base64(secret)``).

A 2xx answer delivers it. Anything else (an error status, a redirect, a timeout, a refused
connection) is tried again after ``retry_base`` seconds, doubling each time, up to
``max_attempts`` tries; then it is FAILED. Every try is recorded (status, attempts,
last_error, response_status).

Where a webhook may go (SSRF): the host is resolved once per try, every address it resolves
to must be globally routable (``is_global``, and none of NOT_GLOBAL, the ranges some Python
versions count as global), and the connection is made to the address that passed, with the
original Host header and TLS server name, so a second DNS answer cannot send it elsewhere.
Redirects are never followed (a 3xx is a failed try, recorded with its status). A URL that
does not parse is refused. AIHUB_ALERT_ALLOW_PRIVATE_TARGETS lifts the address rule (tests,
private deployments), not the others.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import time
import urllib.parse
from dataclasses import dataclass

import httpx

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


# Not globally routable, whatever ipaddress's is_global says in this Python: shared (CGNAT)
# space, the IETF protocol block, 6to4 relays, benchmarking, "this network", NAT64 and 6to4
# prefixes (they embed an IPv4 address), unique-local and site-local IPv6.
NOT_GLOBAL = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8", "100.64.0.0/10", "192.0.0.0/24", "192.88.99.0/24", "198.18.0.0/15",
        "64:ff9b::/96", "64:ff9b:1::/48", "2002::/16", "fc00::/7", "fec0::/10",
    )
)  # fmt: skip


def allowed(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether a webhook may connect to ``address``: globally routable, and in none of NOT_GLOBAL
    (an IPv4-mapped IPv6 address is judged as its IPv4 address)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return allowed(address.ipv4_mapped)
    return address.is_global and not any(address.version == net.version and address in net for net in NOT_GLOBAL)


@dataclass(frozen=True)
class Target:
    """A webhook URL resolved for one try: where to connect (``address``, ``port``) and what
    to say (``scheme``, the ``host`` for the Host header and TLS, the path and query)."""

    scheme: str
    host: str
    netloc: str
    port: int
    address: str
    path: str

    @property
    def pinned_url(self) -> str:
        literal = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.scheme}://{literal}:{self.port}{self.path}"


def _parse(url: str) -> tuple[urllib.parse.SplitResult, str, int]:
    try:
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise TargetRefused(f"is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not host:
        raise TargetRefused("must be an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise TargetRefused("must not carry a user name or password (sign with the secret instead)")
    return parts, host, port or (443 if parts.scheme == "https" else 80)


def resolve(url: str, *, allow_private: bool) -> Target:
    """``url`` resolved once, every address checked (unless ``allow_private``); the first is
    the one to connect to. TargetRefused says why not."""
    parts, host, port = _parse(url)
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        raise TargetRefused(f"its host {host!r} cannot be resolved") from None
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    if not addresses:
        raise TargetRefused(f"its host {host!r} cannot be resolved")
    if not allow_private and not all(allowed(a) for a in addresses):
        raise TargetRefused(
            f"its host {host!r} is a loopback, private, link-local or otherwise not globally routable address; "
            "the server's operator can allow those (AIHUB_ALERT_ALLOW_PRIVATE_TARGETS)"
        )
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, host, parts.netloc, port, str(addresses[0]), path)


def check_url(url: str, *, allow_private: bool) -> str:
    """``url`` if it is an http(s) URL this service may POST to, else TargetRefused."""
    if allow_private:
        _parse(url)
    else:
        resolve(url, allow_private=False)
    return url


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def standard_signature(secret: str, message_id: str, timestamp: str, body: bytes) -> str:
    """Standard Webhooks' ``webhook-signature``: ``v1,`` and the base64 HMAC-SHA256 of
    ``<id>.<timestamp>.<body>``, keyed by the secret's bytes."""
    mac = hmac.new(secret.encode(), f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


@dataclass(frozen=True)
class Result:
    ok: bool
    status: int | None
    error: str | None


def post(delivery: AlertDelivery, body: bytes, *, allow_private: bool, timeout: float = TIMEOUT_SECONDS) -> Result:
    """One try (blocking: run in a thread), to the address that passed the check."""
    try:
        target = resolve(delivery.url, allow_private=allow_private)
    except TargetRefused as exc:
        return Result(False, None, f"refused: {exc}")
    timestamp = str(int(time.time()))
    message_id = str(delivery.delivery_id)
    headers = {
        "Host": target.netloc,
        "Content-Type": "application/json",
        "User-Agent": "aihub-training-alerts/1",
        "X-AIHub-Event": delivery.event,
        "X-AIHub-Delivery": message_id,
        "X-AIHub-Timestamp": timestamp,
        "X-AIHub-Signature": sign(delivery.secret, timestamp, body),
        "webhook-id": message_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": standard_signature(delivery.secret, message_id, timestamp, body),
    }
    # The TLS server name (and the certificate's name checked) is the URL's host, not the address.
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    try:
        with httpx.Client(follow_redirects=False, trust_env=False, timeout=timeout) as client:
            answer = client.post(target.pinned_url, content=body, headers=headers, extensions=extensions)
    except httpx.HTTPError as exc:
        return Result(False, None, f"{type(exc).__name__}: {exc}"[:500])
    status = answer.status_code
    if 300 <= status < 400:
        where = answer.headers.get("location", "")[:200]
        return Result(False, status, f"HTTP {status}: a redirect (to {where!r}) is not followed")
    return Result(200 <= status < 300, status, None if status < 300 else f"HTTP {status}")


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
