"""The chaos suite: ``make chaos`` (``python -m tests.chaos``; ``--short`` for the version CI
runs through tests/e2e/test_chaos.py). Run it inside a private network namespace (make
chaos does): it starts a local Ray cluster.

What it does, as an operator would:
  * a PostgreSQL of its own, which outlives the servers, and one Ray node (2 CPUs);
  * two replicas (``python -m server``, DATABASE_URL and RAY_ADDRESS set) behind one Envoy
    that health-checks and balances them; every call below goes through Envoy;
  * bursts of jobs while replica A is killed with -9 (and started again) again and again,
    long jobs that outlive several leases meanwhile; how long each job that ran on A took
    to be taken over (requeued as its next attempt; it runs as soon as a slot is free);
  * PostgreSQL stopped for a few seconds while jobs run and log streams follow them (the
    streams resume by sequence); the gRPC codes unary calls got meanwhile;
  * 100 concurrent creates with one request_id;
  * then a second stack, as `make run` starts it, and the faults it heals by itself (a job's
    Ray worker, the raylet and the postmaster killed with -9; one tenant's long jobs beside
    another's quick ones): see tests/chaos/healing.py;
then it checks from the database that every job is final, none completed twice, and no
model version or log sequence is duplicated or missing, and prints its figures. Exit code
0 when every check holds.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc

from client import AIHubError, TrainingClient
from server.api.envoy import Envoy
from server.execution.local_cluster import LocalCluster, NodeSpec
from storage import db
from storage.embedded import EmbeddedPostgres
from storage.records import JobStatus

ROOT = Path(__file__).resolve().parents[2]
TENANT = "acme-corp"
FINAL = {"COMPLETED", "FAILED", "CANCELLED"}


def quick_config(seed: int) -> dict:
    return {
        "algorithm": "lgbm",
        "hyperparameters": {"n_estimators": 30, "num_leaves": 7},
        "training_start": "2024-03-01T00:00:00",
        "training_end": "2024-03-31T23:00:00",
        "features": ["temperature", "humidity", "hour_of_day", "load_lag_24"],
        "target": "load",
        "random_seed": seed,
    }


def long_config(seed: int) -> dict:
    """A job of about 10-20 s: several leases long at the suite's lease."""
    return {**quick_config(seed), "hyperparameters": {"n_estimators": 3000, "learning_rate": 0.01, "num_leaves": 63},
            "training_start": "2024-01-01T00:00:00", "training_end": "2024-12-31T23:00:00"}  # fmt: skip


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Replica:
    name: str
    port: int
    log: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def launch(self, *, seed: bool = False) -> None:
        """Start the process, not waiting for it (wait_ready does): in the caller's thread,
        so that a wait_ready after it counts this start."""
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "server", *(["--seed-demo"] if seed else [])],
                cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.starts += 1

    def start(self, *, seed: bool = False, timeout: float = 120) -> None:
        self.launch(seed=seed)
        deadline = time.monotonic() + timeout
        while self.log.read_text().count("Ctrl-C to stop") < self.starts:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} ended while starting:\n{self.log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start in {timeout:.0f} s:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while self.proc is None or self.log.read_text().count("Ctrl-C to stop") < self.starts:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} is not ready after {timeout:.0f} s:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@dataclass
class Figures:
    jobs: int = 0
    kills: int = 0
    recoveries: list[float] = field(default_factory=list)  # death -> queued again (taken over by the live replica), s
    ended_before_kill: int = 0  # seen RUNNING on the replica, then ended there before it was killed
    create_codes: collections.Counter[str] = field(default_factory=collections.Counter)  # through Envoy, during the kills
    outage_codes: collections.Counter[str] = field(default_factory=collections.Counter)
    outage_answer_ms: list[float] = field(default_factory=list)
    stream_resumes: int = 0
    streamed_lines: int = 0
    same_request_jobs: int = 0
    problems: list[str] = field(default_factory=list)


class Chaos:
    def __init__(self, work: Path, *, short: bool, lease: float) -> None:
        self.work, self.short, self.lease = work, short, lease
        self.fig = Figures()
        self.created: list[str] = []
        self.lock = threading.Lock()

    # --- the stack -------------------------------------------------------------------------
    def start(self) -> None:
        self.pg = EmbeddedPostgres(self.work / "postgres")
        self.url = self.pg.start()
        db.migrate(self.url)
        self.cluster = LocalCluster(Path(f"/tmp/aihub-chaos-{os.getpid()}"), [NodeSpec(2)])
        self.cluster.start()
        env = {
            **os.environ,
            "DATABASE_URL": self.url,
            "RAY_ADDRESS": self.cluster.address,
            "AIHUB_REST": "false",
            "AIHUB_AUTH": "off",
            "AIHUB_LEASE_SECONDS": str(self.lease),
            "AIHUB_POLL_INTERVAL_SECONDS": "0.5",
            "AIHUB_MAX_LOST_LEASES": "20",
            "AIHUB_DRAIN_SECONDS": "5",
            "AIHUB_DATA_DIR": str(self.work / "data"),
            "PYTHONUNBUFFERED": "1",
        }
        self.replicas = []
        for name in ("a", "b"):
            port = _free_port()
            self.replicas.append(
                Replica(
                    name,
                    port,
                    self.work / f"replica-{name}.log",
                    {**env, "AIHUB_GRPC_PORT": str(port), "AIHUB_METRICS_PORT": "0", "AIHUB_SERVER_ID": f"chaos-{name}"},
                )
            )
        for i, replica in enumerate(self.replicas):
            replica.start(seed=i == 0)
        self.grpc_port = _free_port()
        self.envoy = Envoy(
            grpc_port=self.replicas[0].port,
            more_grpc_ports=[self.replicas[1].port],
            http_port=_free_port(),
            grpc_listen=("127.0.0.1", self.grpc_port),
        )
        self.envoy.start()
        self.target = f"127.0.0.1:{self.grpc_port}"
        time.sleep(2)  # Envoy's first health checks

    def stop(self) -> None:
        for replica in getattr(self, "replicas", []):
            replica.stop()
        with contextlib.suppress(Exception):
            self.envoy.stop()
        with contextlib.suppress(Exception):
            self.cluster.stop()
        with contextlib.suppress(Exception):
            self.pg.stop()

    # --- helpers ---------------------------------------------------------------------------
    def _create(self, client: TrainingClient, config: dict, request_id: str, tenant: str = TENANT) -> None:
        for _ in range(30):  # a client that retries UNAVAILABLE, with its request_id: never two jobs
            try:
                job = client.create_job(tenant, "forecast", config, request_id=request_id)
                with self.lock:
                    self.fig.create_codes["OK"] += 1
                    if job.job_id not in self.created:
                        self.created.append(job.job_id)
                return
            except AIHubError as exc:
                with self.lock:
                    self.fig.create_codes[exc.code.name] += 1
                if exc.code != grpc.StatusCode.UNAVAILABLE:
                    self.fig.problems.append(f"create {request_id}: {exc}")
                    return
                time.sleep(0.3)
        self.fig.problems.append(f"create {request_id}: still UNAVAILABLE after 30 tries")

    async def _sql(self, query: str, *args: object) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(db.asyncpg_dsn(self.url))
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    def sql(self, query: str, *args: object) -> list[asyncpg.Record]:
        return asyncio.run(self._sql(query, *args))

    # --- scenarios -------------------------------------------------------------------------
    def bursts_and_kills(self) -> None:
        kills, burst = (2, 6) if self.short else (5, 12)
        a = self.replicas[0]
        with TrainingClient(self.target) as client:
            for k in range(2 if self.short else 4):  # long jobs, across several leases
                self._create(client, long_config(1000 + k), f"long-{k}")
            for round_ in range(kills):
                a.wait_ready()
                with concurrent.futures.ThreadPoolExecutor(8) as pool:
                    for i in range(burst):
                        pool.submit(self._create, client, quick_config(round_ * 100 + i), f"burst-{round_}-{i}")
                    time.sleep(1.5)
                    running = self.sql("SELECT id, attempt FROM training_jobs WHERE status = 'RUNNING' AND claimed_by = $1", "chaos-a")
                    a.kill()
                    died = time.monotonic()
                    self.fig.kills += 1
                a.launch()  # as a supervisor would; the next round's wait_ready waits for it
                self._recoveries(died, [(r["id"], r["attempt"]) for r in running])
            a.wait_ready()

    def _recoveries(self, died: float, lost: list[tuple[object, int]]) -> None:
        pending = dict(lost)
        deadline = died + self.lease * 3 + 60
        while pending and time.monotonic() < deadline:
            rows = self.sql("SELECT id, attempt, status FROM training_jobs WHERE id = ANY($1::uuid[])", list(pending))
            for row in rows:
                if row["attempt"] > pending[row["id"]]:  # taken over: queued again as its next attempt (or further)
                    self.fig.recoveries.append(time.monotonic() - died)
                    del pending[row["id"]]
                elif JobStatus(row["status"]).is_terminal():  # it ended on the replica between the look and the kill: nothing to take over
                    self.fig.ended_before_kill += 1
                    del pending[row["id"]]
            time.sleep(0.1)
        if pending:
            self.fig.problems.append(f"{len(pending)} jobs of the killed replica were not taken over within {deadline - died:.0f} s")

    def database_outage(self) -> None:
        """PostgreSQL stops for a few seconds mid-run and mid-stream."""
        down = 3.0 if self.short else 5.0
        with TrainingClient(self.target) as client:
            for i in range(3):
                self._create(client, long_config(2000 + i), f"outage-{i}")
            job_ids = self.created[-3:]
            while not self.sql("SELECT 1 FROM training_jobs WHERE id = ANY($1::uuid[]) AND status = 'RUNNING'", job_ids):
                time.sleep(0.2)
            streams = [threading.Thread(target=self._follow, args=(job_id,), daemon=True) for job_id in job_ids]
            for t in streams:
                t.start()
            time.sleep(1)
            self.pg.pg_ctl("-w", "-m", "fast", "stop")
            stopped = time.monotonic()
            while time.monotonic() - stopped < down:
                t0 = time.perf_counter()
                try:
                    client.get_job(job_ids[0])
                    self.fig.outage_codes["OK"] += 1
                except AIHubError as exc:
                    self.fig.outage_codes[f"{exc.code.name}/{exc.reason}"] += 1
                self.fig.outage_answer_ms.append((time.perf_counter() - t0) * 1000)
                time.sleep(0.1)
            self.pg.restart()
            for t in streams:
                t.join(300)
                if t.is_alive():
                    self.fig.problems.append("a log stream did not end with its job")

    def _follow(self, job_id: str) -> None:
        """Follow a job's log to its end, resuming by sequence after any error; every line once."""
        seen: list[int] = []
        after = 0
        deadline = time.monotonic() + 300
        with TrainingClient(self.target) as client:
            while time.monotonic() < deadline:
                try:
                    for line in client.stream_logs(job_id, follow=True, after_sequence=after):
                        seen.append(line.sequence)
                        after = line.sequence
                    break
                except AIHubError as exc:
                    if exc.code != grpc.StatusCode.UNAVAILABLE:
                        self.fig.problems.append(f"log stream of {job_id}: {exc.code.name} {exc.reason}")
                        return
                    with self.lock:
                        self.fig.stream_resumes += 1
                    time.sleep(0.5)
        with self.lock:
            self.fig.streamed_lines += len(seen)
        if seen != list(range(1, len(seen) + 1)):
            self.fig.problems.append(f"log stream of {job_id}: sequences {seen[:5]}... not each line once, in order")
        (total,) = self.sql("SELECT log_seq FROM training_jobs WHERE id = $1::uuid", job_id)
        if len(seen) != total["log_seq"]:
            self.fig.problems.append(f"log stream of {job_id}: {len(seen)} lines streamed, {total['log_seq']} written")

    def same_request_id(self) -> None:
        n = 30 if self.short else 100
        with TrainingClient(self.target) as client, concurrent.futures.ThreadPoolExecutor(32) as pool:
            config = quick_config(4242)
            answers = list(pool.map(lambda _: client.create_job(TENANT, "forecast", config, request_id="chaos-once").job_id, range(n)))
        self.fig.same_request_jobs = len(set(answers))
        if len(set(answers)) != 1:
            self.fig.problems.append(f"{n} creates with one request_id made {len(set(answers))} jobs")
        with self.lock:
            if answers[0] not in self.created:
                self.created.append(answers[0])

    def print_errors(self) -> None:
        """The servers' unexpected errors, with their tracebacks (the logs go with the work folder)."""
        for replica in self.replicas:
            lines = replica.log.read_text().splitlines()
            for i, line in enumerate(lines):
                if " ERROR " in line and "error id" in line:
                    print(f"--- replica {replica.name}:", *lines[i : i + 40], sep="\n", file=sys.stderr)

    # --- the checks ------------------------------------------------------------------------
    def wait_final(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.sql("SELECT count(*) AS n FROM training_jobs WHERE status NOT IN ('COMPLETED', 'FAILED', 'CANCELLED')")
            if rows[0]["n"] == 0:
                return
            time.sleep(1)
        self.fig.problems.append(f"{rows[0]['n']} jobs are not final after {timeout:.0f} s")

    def check(self) -> dict[str, object]:
        jobs = self.sql("SELECT id, status, attempt, model_version, log_seq, error_reason FROM training_jobs")
        self.fig.jobs = len(jobs)
        created = set(self.created)
        missing = created - {str(j["id"]) for j in jobs}
        if missing:
            self.fig.problems.append(f"{len(missing)} created jobs are not in the database")
        twice = self.sql("SELECT job_id, count(*) AS n FROM job_attempts WHERE status = 'COMPLETED' GROUP BY job_id HAVING count(*) > 1")
        if twice:
            self.fig.problems.append(f"{len(twice)} jobs completed more than once")
        live_versions = self.sql(
            "SELECT job_id, count(*) AS n FROM model_versions WHERE deleted_at IS NULL GROUP BY job_id HAVING count(*) > 1"
        )
        if live_versions:
            self.fig.problems.append(f"{len(live_versions)} jobs have more than one live model version")
        for row in self.sql("SELECT tenant_id, model_type, array_agg(version ORDER BY version) AS v FROM model_versions GROUP BY 1, 2"):
            if list(row["v"]) != list(range(1, len(row["v"]) + 1)):
                self.fig.problems.append(f"model versions of {row['tenant_id']}/{row['model_type']} are not 1..n: {row['v'][:10]}")
        for job in jobs:
            if job["status"] == "COMPLETED":
                versions = self.sql(
                    "SELECT count(*) AS n FROM model_versions WHERE job_id = $1 AND version = $2 AND deleted_at IS NULL",
                    job["id"], job["model_version"],
                )  # fmt: skip
                if versions[0]["n"] != 1:
                    self.fig.problems.append(f"completed job {job['id']} has no live model version {job['model_version']}")
        gaps = self.sql(
            "SELECT j.id FROM training_jobs j LEFT JOIN (SELECT job_id, count(*) AS n, max(seq) AS top FROM job_logs GROUP BY job_id) l "
            "ON l.job_id = j.id WHERE COALESCE(l.n, 0) <> j.log_seq OR COALESCE(l.top, 0) <> j.log_seq"
        )
        if gaps:
            self.fig.problems.append(f"{len(gaps)} jobs have log sequences missing or beyond their counter")
        statuses = collections.Counter(j["status"] for j in jobs)
        attempts = sum(j["attempt"] for j in jobs)
        reasons = collections.Counter(j["error_reason"] for j in jobs if j["status"] == "FAILED")
        rec = sorted(self.fig.recoveries)
        return {
            "jobs": len(jobs),
            "statuses": dict(statuses),
            "failed_reasons": dict(reasons),
            "attempts": attempts,
            "kills": self.fig.kills,
            "ended_before_kill": self.fig.ended_before_kill,
            "lease_seconds": self.lease,
            "recovery_s": {
                "n": len(rec),
                "min": round(rec[0], 2) if rec else None,
                "median": round(statistics.median(rec), 2) if rec else None,
                "max": round(rec[-1], 2) if rec else None,
            },
            "create_codes_during_kills": dict(self.fig.create_codes),
            "outage_codes": dict(self.fig.outage_codes),
            "outage_answer_ms_max": round(max(self.fig.outage_answer_ms), 1) if self.fig.outage_answer_ms else None,
            "stream_resumes": self.fig.stream_resumes,
            "streamed_lines": self.fig.streamed_lines,
            "same_request_id_jobs": self.fig.same_request_jobs,
            "problems": self.fig.problems,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.chaos", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--short", action="store_true", help="the version CI runs: fewer kills and jobs")
    parser.add_argument("--lease", type=float, default=5.0, help="the servers' AIHUB_LEASE_SECONDS (default 5)")
    parser.add_argument("--only-recovery", action="store_true", help="only kill a replica once and report death -> RUNNING again")
    parser.add_argument("--only-healing", action="store_true", help="only the second stack's faults (tests/chaos/healing.py)")
    args = parser.parse_args(argv)
    from server import isolation

    if not isolation.isolated():
        raise SystemExit("run it in a private network namespace: make chaos (python -m server.isolation -- python -m tests.chaos)")
    from tests.chaos.healing import Healing

    started = time.monotonic()
    result: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="aihub-chaos-") as work:
        if not args.only_healing:
            chaos = Chaos(Path(work) / "replicas", short=args.short, lease=args.lease)
            (Path(work) / "replicas").mkdir()
            steps = (
                [chaos.bursts_and_kills] if args.only_recovery else [chaos.bursts_and_kills, chaos.database_outage, chaos.same_request_id]
            )
            result = _run(chaos, steps)
        if not args.only_recovery:
            healing = Healing(Path(work) / "healing", short=args.short)
            (Path(work) / "healing").mkdir()
            steps = [healing.worker_kills, healing.raylet_kills, healing.postmaster_kills, healing.fair_share]
            result["self_healing"] = _run(healing, steps)
    result["seconds"] = round(time.monotonic() - started)
    problems = [*result.get("problems", []), *result.get("self_healing", {}).get("problems", [])]  # type: ignore[attr-defined]
    print(json.dumps(result, indent=2, default=str))
    print(f"chaos: {len(problems)} problem(s)")
    print("chaos: " + ("PASSED" if not problems else "FAILED"), flush=True)
    return 0 if not problems else 1


def _run(chaos: Chaos, steps: list) -> dict[str, object]:
    """Start the stack, run the steps, wait until every job is final, check the database."""
    try:
        chaos.start()
        for step in steps:
            t0 = time.monotonic()
            step()
            print(f"chaos: {step.__name__} done in {time.monotonic() - t0:.0f} s", flush=True)
        chaos.wait_final()
        result = chaos.check()
        if result["problems"]:
            chaos.print_errors()
        return result
    finally:
        chaos.stop()


if __name__ == "__main__":
    raise SystemExit(main())
