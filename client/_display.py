"""What the CLI shows a person (rich): a job followed live (a progress bar per step, the
current metric, the log lines under it), the final metrics as a table, and the job list.
On a terminal the view redraws in place; piped, it prints each change and each log line as
plain lines, then the same final summary."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from client._gen.aihub.training.v1 import training_service_pb2 as pb

STEPS = ("data_loading", "preprocessing", "training", "evaluation", "registration")
STEP_START = {"data_loading": 0, "preprocessing": 10, "training": 20, "evaluation": 80, "registration": 90}
FINAL = (pb.COMPLETED, pb.FAILED, pb.CANCELLED)
STATUS_STYLE = {"PENDING": "grey62", "RUNNING": "bold blue", "COMPLETED": "bold green", "FAILED": "bold red", "CANCELLED": "yellow"}
HEADLINE = (
    "mae",
    "rmse",
    "mape",
    "r2_score",
    "baseline_mae",
    "skill",
    "f1",
    "precision",
    "recall",
    "roc_auc",
    "pr_auc",
    "threshold",
    "anomaly_rate",
    "training_duration_seconds",
    "validation_rows",
)
LOG_LINES = 8  # log lines under the live view


def console() -> Console:
    """stdout; piped output is not wrapped (ids and log lines stay whole)."""
    out = Console(highlight=False)
    if not out.is_terminal:
        out = Console(highlight=False, width=max(out.width, 200), soft_wrap=True)
    return out


def status_name(job: pb.TrainingJob) -> str:
    return pb.JobStatus.Name(job.status)


def _status(job: pb.TrainingJob) -> Text:
    name = status_name(job)
    return Text(name, style=STATUS_STYLE.get(name, ""))


def step_share(job: pb.TrainingJob, step: str) -> float:
    """How far (0-100) the job is through one step."""
    i = STEPS.index(step)
    current = STEPS.index(job.current_step) if job.current_step in STEPS else -1
    if job.status == pb.COMPLETED or current > i:
        return 100.0
    if current < i:
        return 0.0
    end = STEP_START[STEPS[i + 1]] if i + 1 < len(STEPS) else 100
    return max(0.0, min(100.0, 100.0 * (job.progress - STEP_START[step]) / (end - STEP_START[step])))


def current_metric(job: pb.TrainingJob) -> str:
    """The metric to show beside the running step: a live one while training, else the MAE (or F1)."""
    m = job.metrics
    if "live_round" in m:  # live values belong to the training step; the evaluation replaces them
        if job.current_step != "training":
            return ""
        live = next((k for k in sorted(m) if k.startswith("live_") and k.endswith("_mae")), None)
        if live:
            return f"{live} {m[live]:.4g} (round {int(m['live_round'])})"
    for name in ("mae", "f1", "anomaly_rate"):
        if name in m:
            return f"{name} {m[name]:.4g}"
    return ""


def header(job: pb.TrainingJob) -> Text:
    algorithm = job.config.algorithm or "-"
    return Text.assemble(
        ("job ", "dim"),
        job.job_id,
        "  ",
        _status(job),
        f"  {job.progress}%  ",
        (f"{job.tenant_id} · {pb.ModelType.Name(job.model_type).lower()} · {algorithm} · attempt {job.attempt}", "dim"),
    )


def steps(job: pb.TrainingJob) -> Table:
    grid = Table.grid(padding=(0, 1))
    for step in STEPS:
        share = step_share(job, step)
        note = current_metric(job) if step == job.current_step and job.status == pb.RUNNING else ""
        style = "green" if share >= 100 else "blue"
        grid.add_row(Text(f"{step:<13}"), ProgressBar(total=100, completed=share, width=36, complete_style=style), f"{share:3.0f}%", note)
    return grid


def log_text(entry: pb.LogEntry) -> Text:
    stamp = entry.time.ToDatetime().strftime("%H:%M:%S")
    level = pb.LogLevel.Name(entry.level)
    style = {"WARNING": "yellow", "ERROR": "red"}.get(level, "")
    return Text.assemble((f"{stamp} {level:<7} ", "dim"), (entry.message, style))


def metrics_table(metrics: dict[str, float] | Any) -> Table:
    table = Table(title="metrics", title_justify="left", show_edge=False, pad_edge=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    names = [k for k in HEADLINE if k in metrics]
    for name in names:
        table.add_row(name, f"{metrics[name]:.4g}")
    return table


def summary(job: pb.TrainingJob) -> RenderableType:
    parts: list[RenderableType] = [header(job), steps(job)]
    if job.status == pb.FAILED:
        parts.append(Text.assemble((f"{job.error.reason}: ", "bold red"), job.error.message))
    if job.metrics and job.status == pb.COMPLETED:
        parts.append(metrics_table(job.metrics))
        rest = len([k for k in job.metrics if k not in HEADLINE])
        if rest:
            parts.append(Text(f"and {rest} more: aihub jobs metrics {job.job_id}", style="dim"))
    if job.model_version:
        parts.append(Text(f"model version {job.model_version}", style="dim"))
    return Group(*parts)


def progress_line(job: pb.TrainingJob) -> str:
    """One plain line per change (piped output)."""
    line = f"{status_name(job):<9} {job.progress:3d}%  {job.current_step or '-'}"
    metric = current_metric(job)
    if metric:
        line += f"  {metric}"
    if job.error.reason:
        line += f"  {job.error.reason}: {job.error.message}"
    return line


def follow(
    out: Console,
    snapshots: Iterable[pb.TrainingJob],
    log_entries: Callable[[], Iterator[pb.LogEntry]],
) -> pb.TrainingJob | None:
    """Show a job until it is final: the watch stream's snapshots, and the log stream read
    beside it (a thread). Returns the last snapshot; the final summary is printed."""
    lines: deque[Text] = deque(maxlen=LOG_LINES)
    lock = threading.Lock()
    live_view = out.is_terminal

    def read_logs() -> None:
        try:
            for entry in log_entries():
                text = log_text(entry)
                with lock:
                    lines.append(text)
                if not live_view:
                    out.print(text)
        except Exception:  # noqa: BLE001 - the log is a courtesy: the watch decides the outcome
            return

    reader = threading.Thread(target=read_logs, name="aihub-logs", daemon=True)
    reader.start()
    job: pb.TrainingJob | None = None

    def view() -> RenderableType:
        with lock:
            log = Text("\n").join(list(lines)) if lines else Text("(no log lines yet)", style="dim")
        head = Group(header(job), steps(job)) if job is not None else Text("waiting for the job ...", style="dim")
        return Group(head, Panel(log, title="log", title_align="left", border_style="dim"))

    if live_view:
        with Live(get_renderable=view, console=out, refresh_per_second=8, transient=True):
            for job in snapshots:  # noqa: B007 - the view reads the latest
                pass
            reader.join(timeout=5)  # the last lines arrive with the final state
        with lock:
            for text in lines:
                out.print(text)
    else:
        for job in snapshots:
            out.print(progress_line(job))
        reader.join(timeout=5)
    if job is not None:
        out.print(summary(job))
    return job


def jobs_table(jobs: Iterable[pb.TrainingJob]) -> Table:
    table = Table(show_edge=False, pad_edge=False, header_style="bold")
    table.add_column("job", no_wrap=True, min_width=36)
    for name in ("tenant", "type", "algorithm", "priority", "status"):
        table.add_column(name, no_wrap=True)
    table.add_column("progress", no_wrap=True)
    table.add_column("step")
    table.add_column("mae", justify="right")
    table.add_column("created", no_wrap=True)
    for j in jobs:
        mae = f"{j.metrics['mae']:.4g}" if "mae" in j.metrics else ""
        table.add_row(
            j.job_id,
            j.tenant_id,
            pb.ModelType.Name(j.model_type).lower(),
            j.config.algorithm,
            pb.Priority.Name(j.priority).lower(),
            _status(j),
            _bar(j.progress),
            j.current_step or "-",
            mae,
            j.created_at.ToDatetime().strftime("%Y-%m-%d %H:%M:%S") if j.HasField("created_at") else "",
        )
    return table


def _bar(progress: int) -> Text:
    filled = round(progress / 10)
    return Text.assemble(("━" * filled, "green" if progress >= 100 else "blue"), ("━" * (10 - filled), "grey23"), f" {progress:3d}%")
