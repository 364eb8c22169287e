"""Where a webhook may go (issue 26, item 1), with real loopback servers: redirects are not
followed, the connection goes to the address that passed the check (a second DNS answer
changes nothing), addresses that are not globally routable are refused (CGNAT and the ranges
ipaddress gets wrong included), and a URL that does not parse is a refusal, not a crash."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest

from server.operations import alerts
from storage.records import AlertDelivery

SECRET = "a-webhook-secret-of-enough-length-0123"


@contextmanager
def server(host: str, status: int = 200, location: str = "") -> Iterator[tuple[int, list[dict[str, str]]]]:
    """An HTTP server on ``host`` answering every POST with ``status``; yields its port and the
    headers of each request it got."""
    got: list[dict[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            got.append({k.lower(): v for k, v in self.headers.items()})
            self.send_response(status)
            if location:
                self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            got.append({"method": "GET"})
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer((host, 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1], got
    finally:
        httpd.shutdown()
        httpd.server_close()


def delivery(url: str) -> AlertDelivery:
    now = datetime.now(UTC)
    return AlertDelivery(7, "acme-corp", uuid.uuid4(), "job_failed", {}, "PENDING", 0, None, None, now, None, url, SECRET)


def test_a_redirect_is_a_failed_try_and_is_not_followed():
    with (
        server("127.0.0.1") as (inner_port, inner),
        server("127.0.0.1", 302, f"http://127.0.0.1:{inner_port}/latest/meta-data/") as (port, outer),
    ):
        result = alerts.post(delivery(f"http://127.0.0.1:{port}/hook"), b"{}", allow_private=True, timeout=5)
    assert not result.ok and result.status == 302 and "not followed" in (result.error or "")
    assert len(outer) == 1 and inner == []  # the loopback target behind the redirect saw nothing


def test_the_connection_goes_to_the_address_that_passed_the_check(monkeypatch):
    # A resolver we control: the first answer is one server, every later answer another.
    with server("127.0.0.1") as (port, first), server("127.0.0.2") as (port_b, second):
        asked: list[str] = []
        real = socket.getaddrinfo

        def answer(host, port_, *args, **kwargs):
            if host != "hooks.example":
                return real(host, port_, *args, **kwargs)  # the address literal the client connects to
            asked.append(host)
            address = "127.0.0.1" if len(asked) == 1 else "127.0.0.2"
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port_))]

        monkeypatch.setattr(socket, "getaddrinfo", answer)
        result = alerts.post(delivery(f"http://hooks.example:{port}/hook"), b'{"a": 1}', allow_private=True, timeout=5)
    assert result.ok and result.status == 200, result
    assert asked == ["hooks.example"] and second == []  # resolved once; the second answer was never used
    (headers,) = first
    assert headers["host"] == f"hooks.example:{port}"  # the original Host header
    # Both signatures: ours and Standard Webhooks' (v1, base64 HMAC of id.timestamp.body).
    ts = headers["webhook-timestamp"]
    assert headers["x-aihub-signature"] == alerts.sign(SECRET, ts, b'{"a": 1}') and headers["webhook-id"] == "7"
    mac = hmac.new(SECRET.encode(), f"7.{ts}.".encode() + b'{"a": 1}', hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(mac).decode()


@pytest.mark.parametrize(
    "url",
    [
        "http://100.64.0.1/",  # shared (CGNAT) space: is_private is False for it
        "http://100.100.100.200/latest/meta-data/",  # a cloud metadata address in that space
        "http://192.0.0.8/",
        "http://198.18.0.1/",
        "http://0.0.0.0:8000/",
        "http://[::ffff:127.0.0.1]/",  # IPv4-mapped loopback
        "http://[64:ff9b::a00:1]/",  # NAT64 of 10.0.0.1
        "http://[fd00::1]/",
        "http://127.0.0.1/",
        "http://169.254.169.254/",
    ],
)
def test_addresses_that_are_not_globally_routable_are_refused(url):
    with pytest.raises(alerts.TargetRefused, match="not globally routable"):
        alerts.check_url(url, allow_private=False)
    assert not alerts.post(delivery(url), b"{}", allow_private=False).ok


@pytest.mark.parametrize("url", ["http://[::1/", "http://example.com:99999/", "http://[not-an-address]/"])
def test_a_url_that_does_not_parse_is_refused_not_a_crash(url):
    for allow_private in (False, True):
        with pytest.raises(alerts.TargetRefused):
            alerts.check_url(url, allow_private=allow_private)


def test_a_public_address_passes():
    assert alerts.check_url("https://93.184.215.14/hook", allow_private=False) == "https://93.184.215.14/hook"
    target = alerts.resolve("https://93.184.215.14:8443/hook?x=1", allow_private=False)
    assert target.pinned_url == "https://93.184.215.14:8443/hook?x=1" and target.netloc == "93.184.215.14:8443"
