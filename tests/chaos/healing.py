"""The chaos suite's second stack: one ``python -m server --seed-demo`` as ``make run`` starts
it (its own embedded PostgreSQL and local Ray of 2 CPUs, Envoy for REST, AIHUB_RESERVED_SLOTS
=1), and the faults it must heal by itself, during bursts of quick-start jobs of two tenants:

  * a job's Ray worker killed with -9: the job is queued again as its next attempt (not one of
    its retries) and runs again;
  * the raylet killed with -9: a WARNING names it, a new local Ray starts, and the jobs that
    were running go back to the queue without using their retries;
  * the postmaster killed with -9: the server starts it again; meanwhile REST ``/health``
    answers 503 with the guide's body, and creates retried with their request_id make no
    second job;
  * tenant A's long jobs on every slot but the kept one: tenant B's quick jobs start at once
    (B's create -> COMPLETED median alone and beside A's long jobs).

It records the time from each fault to jobs running again; the database checks of the first
stack (every job final, none completed twice, versions and log sequences whole) then run on
this stack's database too.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import os
import signal
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests

from client import TrainingClient, pb
from server import demo_data
from storage.records import JobStatus
from tests.chaos.__main__ import TENANT, Chaos, Replica, _free_port, long_config, quick_config
from tests.conftest import QUICK_START_CONFIG  # the guide's quick-start job: tenant B's

OTHER = "initech"
WORKER, RAYLET = "ray::aihub-training-job", "raylet"


@dataclass
class HealingFigures:
    worker_kill_to_running_s: list[float] = field(default_factory=list)
    raylet_kill_to_warning_s: list[float] = field(default_factory=list)
    raylet_kill_to_running_s: list[float] = field(default_factory=list)
    postmaster_kill_to_health_200_s: list[float] = field(default_factory=list)
    postmaster_kill_to_running_s: list[float] = field(default_factory=list)
    health_codes_after_postmaster_kill: collections.Counter[int] = field(default_factory=collections.Counter)
    lost_jobs_requeued: int = 0
    b_alone_s: list[float] = field(default_factory=list)
    b_beside_a_s: list[float] = field(default_factory=list)
    a_kept_from_the_last_slot: bool = False


def _summary(values: list[float]) -> dict[str, object]:
    return {
        "n": len(values),
        "median": round(statistics.median(values), 2) if values else None,
        "max": round(max(values), 2) if values else None,
    }


class Healing(Chaos):
    """The second stack. It reuses the first's create-with-retries, its final wait and its
    database checks (``Chaos.check``), pointed at this stack's embedded PostgreSQL."""

    def __init__(self, work: Path, *, short: bool) -> None:
        super().__init__(work, short=short, lease=60.0)
        self.heal = HealingFigures()

    # --- the stack -------------------------------------------------------------------------
    def start(self) -> None:
        self.data_dir = self.work / "stack"
        grpc_port, http_port = _free_port(), _free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "RAY_ADDRESS")}
        env.update({
            "AIHUB_DATA_DIR": str(self.data_dir),
            "AIHUB_GRPC_PORT": str(grpc_port),
            "AIHUB_HTTP_PORT": str(http_port),
            "AIHUB_METRICS_PORT": "0",
            "AIHUB_AUTH": "off",
            "AIHUB_LOCAL_RAY_CPUS": "2",
            "AIHUB_RESERVED_SLOTS": "1",
            "AIHUB_POLL_INTERVAL_SECONDS": "0.5",
            "AIHUB_RAY_RECONNECT_SECONDS": "1",
            "AIHUB_CLUSTER_REFRESH_SECONDS": "1",
            "PYTHONUNBUFFERED": "1",
        })  # fmt: skip
        self.server = Replica("stack", grpc_port, self.work / "stack.log", env)
        self.replicas = [self.server]
        self.server.start(seed=True, timeout=240)
        self.target, self.rest = f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{http_port}"
        self.url = self._database_url()
        with TrainingClient(self.target) as client:  # tenant B's rows, imported through the API
            frame = demo_data.generate("2023-12-01 00:00", "2024-12-31 23:00")
            client.import_data(OTHER, demo_data.TABLE, frame.to_csv(index=False).encode(), format="csv")

    def _database_url(self) -> str:
        """The URL of the server's embedded PostgreSQL, from its postmaster.pid (line 5 is
        the socket folder): the checks read the database directly, as an operator would."""
        lines = (self.data_dir / "postgres" / "postmaster.pid").read_text().splitlines()
        return f"postgresql://postgres:@/postgres?host={lines[4]}"

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.server.stop()

    # --- helpers ---------------------------------------------------------------------------
    def _process(self, name: str) -> psutil.Process | None:
        assert self.server.proc is not None
        for proc in psutil.Process(self.server.proc.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):  # one that ends meanwhile
                if proc.name() == name and proc.status() != psutil.STATUS_ZOMBIE:
                    return proc
        return None

    def _running(self) -> dict[object, int]:
        return {r["id"]: r["attempt"] for r in self.sql("SELECT id, attempt FROM training_jobs WHERE status = 'RUNNING'")}

    def _burst(self, client: TrainingClient, tag: str, n: int, seed: int) -> None:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            for i in range(n):
                tenant = TENANT if i % 2 == 0 else OTHER
                pool.submit(self._create, client, quick_config(seed + i), f"{tag}-{i}", tenant)

    def _back(self, died: float, lost: dict[object, int], what: str, said: str, timeout: float = 120) -> float | None:
        """Seconds from ``died`` until one of the ``lost`` jobs runs again as a later attempt
        (or has ended as one); each lost job must come back so, none with a retry used, and
        the log of one that came back says ``said``."""
        first, pending = None, dict(lost)
        deadline = died + timeout
        while pending and time.monotonic() < deadline:
            for row in self.sql("SELECT id, attempt, status FROM training_jobs WHERE id = ANY($1::uuid[])", list(pending)):
                status = JobStatus(row["status"])
                if row["attempt"] > pending[row["id"]] and (status == JobStatus.RUNNING or status.is_terminal()):
                    first = first if first is not None else time.monotonic() - died
                    del pending[row["id"]]
                elif row["attempt"] == pending[row["id"]] and status.is_terminal():
                    del pending[row["id"]]  # it ended just before the fault reached it
            time.sleep(0.1)
        if pending:
            self.fig.problems.append(f"{what}: {len(pending)} lost jobs did not run again within {timeout:.0f} s")
        self.heal.lost_jobs_requeued += len(lost) - len(pending)
        explained = False
        for job_id in lost:
            rows = self.sql("SELECT message FROM job_logs WHERE job_id = $1 ORDER BY seq", job_id)
            if any(r["message"].startswith(("automatic retry", "job failed")) for r in rows):
                self.fig.problems.append(f"{what}: job {job_id} used a retry or failed")
            explained = explained or any(said in r["message"] for r in rows)
        if lost and first is not None and not explained:
            self.fig.problems.append(f"{what}: no lost job's log says {said!r}")
        return first

    def _under_load(self, client: TrainingClient, tag: str, seed: int) -> None:
        """A long job and a burst of quick ones of both tenants; returns once one runs."""
        self._create(client, long_config(seed), f"{tag}-long")
        self._burst(client, tag, 4, seed + 1)
        self._wait_running()

    def _kill(self, name: str, what: str) -> tuple[dict[object, int], psutil.Process, float] | None:
        """kill -9 of the server's process ``name``: (the jobs RUNNING just before, the
        process, when), or None (a problem noted) when there is none."""
        before, proc = self._running(), self._process(name)
        if proc is None:
            self.fig.problems.append(f"{what}: no {name} process found")
            return None
        proc.send_signal(signal.SIGKILL)
        return before, proc, time.monotonic()

    def _wait_running(self, timeout: float = 60) -> dict[object, int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if running := self._running():
                return running
            time.sleep(0.1)
        self.fig.problems.append(f"no job was RUNNING within {timeout:.0f} s")
        return {}

    # --- scenarios -------------------------------------------------------------------------
    def worker_kills(self) -> None:
        with TrainingClient(self.target) as client:
            for k in range(1 if self.short else 3):
                self._under_load(client, f"worker-{k}", 3000 + 100 * k)
                time.sleep(1)
                if (killed := self._kill(WORKER, "worker kill")) is None:
                    continue
                before, _, died = killed
                back = self._back(died, before, "worker kill", "(not one of its retries)")
                if back is not None:
                    self.heal.worker_kill_to_running_s.append(back)

    def raylet_kills(self) -> None:
        with TrainingClient(self.target) as client:
            for k in range(1 if self.short else 2):
                self._under_load(client, f"raylet-{k}", 4000 + 100 * k)
                warnings = self.server.log.read_text().count("the local Ray node's raylet")
                if (killed := self._kill(RAYLET, "raylet kill")) is None:
                    continue
                before, raylet, died = killed
                while self.server.log.read_text().count("the local Ray node's raylet") == warnings:
                    if time.monotonic() - died > 30:
                        self.fig.problems.append("raylet kill: no WARNING within 30 s")
                        break
                    time.sleep(0.05)
                else:
                    self.heal.raylet_kill_to_warning_s.append(time.monotonic() - died)
                back = self._back(died, before, "raylet kill", "lost with the Ray cluster; queued again as attempt")
                if back is not None:
                    self.heal.raylet_kill_to_running_s.append(back)
                deadline = died + 60
                while (again := self._process(RAYLET)) is None or again.pid == raylet.pid:
                    if time.monotonic() > deadline:
                        self.fig.problems.append("raylet kill: no new raylet within 60 s")
                        break
                    time.sleep(0.2)

    def postmaster_kills(self) -> None:
        with TrainingClient(self.target) as client:
            for k in range(1 if self.short else 2):
                self._create(client, long_config(5000 + k), f"postmaster-long-{k}")
                self._wait_running()
                postmaster = int((self.data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
                os.kill(postmaster, signal.SIGKILL)
                died = time.monotonic()
                during = concurrent.futures.ThreadPoolExecutor(1)
                created = during.submit(self._create, client, quick_config(5100 + k), f"postmaster-{k}", OTHER)
                seen: set[int] = set()
                while not (200 in seen and 503 in seen):
                    if time.monotonic() - died > 90:
                        self.fig.problems.append(f"postmaster kill: /health answered {sorted(seen)} for 90 s, not 503 then 200")
                        break
                    code = self._health()
                    if code != 200 or 503 in seen:
                        seen.add(code)
                    self.heal.health_codes_after_postmaster_kill[code] += 1
                    time.sleep(0.05)
                else:
                    self.heal.postmaster_kill_to_health_200_s.append(time.monotonic() - died)
                created.result(120)
                during.shutdown()
                job_id = self.created[-1]
                while time.monotonic() - died < 120:
                    (row,) = self.sql("SELECT status FROM training_jobs WHERE id = $1::uuid", job_id)
                    if row["status"] != "PENDING":
                        self.heal.postmaster_kill_to_running_s.append(time.monotonic() - died)
                        break
                    time.sleep(0.1)
                else:
                    self.fig.problems.append("postmaster kill: a job created meanwhile did not start within 120 s")

    def _health(self) -> int:
        try:
            got = requests.get(f"{self.rest}/health", timeout=5)
        except requests.RequestException:
            return 0
        if got.status_code == 503 and "database" not in got.json():
            self.fig.problems.append(f"/health 503 without the guide's body: {got.text[:200]}")
        return got.status_code

    def fair_share(self) -> None:
        n = 3 if self.short else 6
        self.wait_final()
        with TrainingClient(self.target) as client:
            self.heal.b_alone_s = [self._quick_b(client, f"b-alone-{i}") for i in range(n)]
            longs = [client.create_job(TENANT, "forecast", long_config(6000 + i), request_id=f"a-long-{i}").job_id for i in range(2)]
            self.created.extend(longs)
            deadline = time.monotonic() + 60
            while client.get_job(longs[0]).status != pb.RUNNING:
                if time.monotonic() > deadline:
                    self.fig.problems.append("fair share: tenant A's first long job did not start")
                    return
                time.sleep(0.1)
            time.sleep(1.5)
            (second,) = self.sql("SELECT status FROM training_jobs WHERE id = $1::uuid", longs[1])
            notes = self.sql("SELECT message FROM job_logs WHERE job_id = $1::uuid", longs[1])
            self.heal.a_kept_from_the_last_slot = second["status"] == "PENDING" and any(
                "AIHUB_RESERVED_SLOTS" in r["message"] for r in notes
            )
            if not self.heal.a_kept_from_the_last_slot:
                self.fig.problems.append(f"fair share: tenant A's second long job is {second['status']}, not kept from the last slot")
            self.heal.b_beside_a_s = [self._quick_b(client, f"b-beside-{i}") for i in range(n)]
            (first,) = self.sql("SELECT status FROM training_jobs WHERE id = $1::uuid", longs[0])
            if first["status"] != "RUNNING":
                self.fig.problems.append("fair share: tenant A's long job ended before B's jobs did: B's latency shows nothing")
            for job_id in longs:
                client.cancel_job(job_id)
        if statistics.median(self.heal.b_beside_a_s) > statistics.median(self.heal.b_alone_s) + 10:
            self.fig.problems.append(f"fair share: B's jobs waited beside A's: {self.heal.b_beside_a_s} vs {self.heal.b_alone_s} alone")

    def _quick_b(self, client: TrainingClient, request_id: str) -> float:
        began = time.monotonic()
        job = client.create_job(OTHER, "forecast", QUICK_START_CONFIG, request_id=request_id)
        self.created.append(job.job_id)
        done = client.wait(job.job_id)
        if done.status != pb.COMPLETED:
            self.fig.problems.append(f"fair share: B's job {job.job_id} ended {pb.JobStatus.Name(done.status)}")
        return time.monotonic() - began

    # --- figures ---------------------------------------------------------------------------
    def check(self) -> dict[str, object]:
        result = super().check()
        if self.server.proc is None or self.server.proc.poll() is not None:
            self.fig.problems.append("the server did not outlive the faults")
        h = self.heal
        return {
            "jobs": result["jobs"],
            "statuses": result["statuses"],
            "failed_reasons": result["failed_reasons"],
            "attempts": result["attempts"],
            "lost_jobs_requeued_free": h.lost_jobs_requeued,
            "worker_kill_to_running_s": _summary(h.worker_kill_to_running_s),
            "raylet_kill_to_warning_s": _summary(h.raylet_kill_to_warning_s),
            "raylet_kill_to_running_s": _summary(h.raylet_kill_to_running_s),
            "postmaster_kill_to_health_200_s": _summary(h.postmaster_kill_to_health_200_s),
            "postmaster_kill_to_running_s": _summary(h.postmaster_kill_to_running_s),
            "health_codes_after_postmaster_kill": dict(h.health_codes_after_postmaster_kill),
            "create_codes": dict(self.fig.create_codes),
            "tenant_b_create_to_completed_s": {"alone": _summary(h.b_alone_s), "beside_a_long_jobs": _summary(h.b_beside_a_s)},
            "a_kept_from_the_last_slot": h.a_kept_from_the_last_slot,
            "problems": self.fig.problems,
        }
