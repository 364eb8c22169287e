"""GetTrainingJob through Envoy (REST, gRPC-JSON transcoding) vs direct gRPC, in one run:
sequential (one request at a time, keep-alive) and at a fixed offered rate (open loop).
Goal: Envoy adds at most 0.3 ms at the median.

    python -m bench.rest_latency [--requests 3000] [--rate 300] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import multiprocessing
import threading
import time
from concurrent.futures import ProcessPoolExecutor

import grpc

from bench._stack import READ_ONLY_JOB, free_port, median, open_loop, pct, stack
from client import AsyncTrainingClient, pb, pb_grpc
from server.api.envoy import Envoy


class RawHttp:
    """A minimal keep-alive HTTP/1.1 client on a raw socket: it only finds the end of the
    response, so the figure is Envoy's time and not Python's header parsing."""

    def __init__(self, port: int) -> None:
        import socket

        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def get(self, path: str) -> bytes:
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += self.sock.recv(65536)
        head, _, body = buf.partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
        while len(body) < length:
            body += self.sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 200"), head
        return body


def sequential(grpc_target: str, rest_port: int, job_id: str, n: int) -> dict[str, list[float]]:
    """Alternating direct gRPC and REST calls, one at a time, so all see the same machine state."""
    channel = grpc.insecure_channel(grpc_target)
    stub = pb_grpc.TrainingServiceStub(channel)
    conn = http.client.HTTPConnection("127.0.0.1", rest_port)
    raw = RawHttp(rest_port)
    request = pb.GetTrainingJobRequest(job_id=job_id)
    path = f"/ai/training/jobs/{job_id}"
    out: dict[str, list[float]] = {"grpc": [], "rest": [], "rest_raw": []}
    for i in range(n + 200):
        t0 = time.perf_counter()
        stub.GetTrainingJob(request)
        t1 = time.perf_counter()
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        t2 = time.perf_counter()
        raw.get(path)
        t3 = time.perf_counter()
        assert resp.status == 200
        if i >= 200:  # warm-up
            out["grpc"].append(t1 - t0)
            out["rest"].append(t2 - t1)
            out["rest_raw"].append(t3 - t2)
    conn.close()
    channel.close()
    return out


def fixed_rate(grpc_target: str, rest_port: int, job_id: str, rate: float, seconds: float) -> dict[str, list[float]]:
    """Each path offered ``rate`` requests/s for ``seconds`` (open loop: latency from the
    scheduled send time), with 8 keep-alive REST connections and one gRPC channel."""
    n = int(rate * seconds)
    out: dict[str, list[float]] = {}

    def rest_run() -> list[float]:
        lat: list[float] = []
        lock = threading.Lock()
        t0 = time.perf_counter() + 0.1

        def worker(k: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", rest_port)
            for i in range(k, n, 8):
                at = t0 + i / rate
                delay = at - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                conn.request("GET", f"/ai/training/jobs/{job_id}")
                conn.getresponse().read()
                with lock:
                    lat.append(time.perf_counter() - at)
            conn.close()

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return lat

    async def grpc_run() -> list[float]:
        async with AsyncTrainingClient(grpc_target) as c:
            return (await open_loop(lambda: c.get_job(job_id), rate, seconds))[0]

    out["grpc"] = asyncio.run(grpc_run())
    out["rest"] = rest_run()
    return out


async def main(requests: int, rate: float, seconds: float) -> None:
    config = READ_ONLY_JOB
    async with stack() as app:
        app.dispatcher.pause()
        async with AsyncTrainingClient(f"127.0.0.1:{app.port}") as c:
            job_id = (await c.create_job("bench", "forecast", config)).job_id
        envoy = Envoy(grpc_port=app.port, http_port=free_port())
        await asyncio.to_thread(envoy.start)
        try:
            target = f"127.0.0.1:{app.port}"
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                seq = await asyncio.wrap_future(pool.submit(sequential, target, envoy.http_port, job_id, requests))
                fixed = await asyncio.wrap_future(pool.submit(fixed_rate, target, envoy.http_port, job_id, rate, seconds))
        finally:
            envoy.stop()

    def row(name: str, values: list[float]) -> str:
        return f"  {name:<34} median {median(values) * 1000:6.3f} ms   p99 {pct(values, 99) * 1000:7.3f} ms"

    print("rest_latency: GetTrainingJob, direct gRPC vs REST through Envoy (load from a second process)")
    print(f"sequential, {requests} requests each, alternating:")
    print(row("direct gRPC (sync stub)", seq["grpc"]))
    print(row("REST via Envoy (http.client)", seq["rest"]))
    print(row("REST via Envoy (raw socket client)", seq["rest_raw"]))
    print(
        f"  Envoy adds at the median: {(median(seq['rest_raw']) - median(seq['grpc'])) * 1000:.3f} ms with a raw-socket client, "
        f"{(median(seq['rest']) - median(seq['grpc'])) * 1000:.3f} ms with http.client   (goal <= 0.3 ms)"
    )
    print(f"fixed rate, {rate:.0f}/s for {seconds:.0f} s each:")
    print(row("direct gRPC (asyncio client)", fixed["grpc"]))
    print(row("REST via Envoy (8 connections)", fixed["rest"]))
    print(f"  Envoy adds at the median: {(median(fixed['rest']) - median(fixed['grpc'])) * 1000:.3f} ms")


# Tiny sizes, seconds: `python -m bench --smoke` runs every bench so (make test), so none breaks unseen.
SMOKE = ["--requests", "40", "--rate", "40", "--seconds", "1"]


def cli(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--rate", type=float, default=300)
    ap.add_argument("--seconds", type=float, default=10)
    a = ap.parse_args(argv)
    asyncio.run(main(a.requests, a.rate, a.seconds))


if __name__ == "__main__":
    cli()
