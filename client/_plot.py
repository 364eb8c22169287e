"""`aihub jobs plot`: a completed job's validation window as a PNG (matplotlib, no display):
forecast vs actual with the seasonal-naive baseline and the residuals; or, for anomaly
detection, the signal with its flagged (and labelled) points and the score against the
threshold."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from client._gen.aihub.training.v1 import training_service_pb2 as pb

PAGE = 50_000


def all_points(fetch: Callable[[str], pb.GetPredictionsResponse]) -> tuple[pb.GetPredictionsResponse, list[pb.PredictionPoint]]:
    """Every kept point, page by page (``fetch(page_token)``); the first answer describes them."""
    first = fetch("")
    points = list(first.points)
    token = first.next_page_token
    while token:
        page = fetch(token)
        points += page.points
        token = page.next_page_token
    return first, points


def _series(points: Sequence[pb.PredictionPoint], name: str) -> tuple[list[datetime], list[float]]:
    xs, ys = [], []
    for p in points:
        if p.HasField(name):
            xs.append(p.timestamp.ToDatetime())
            ys.append(getattr(p, name))
    return xs, ys


def write_png(path: Path, job: pb.TrainingJob, meta: pb.GetPredictionsResponse, points: Sequence[pb.PredictionPoint]) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    series = sorted({p.series_id for p in points if p.series_id})
    if len(series) > 1:
        points = [p for p in points if p.series_id == series[0]]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 6.5), sharex=True, height_ratios=(3, 1.4), layout="constrained")
    target = job.config.target or "target"
    title = f"job {job.job_id} · {job.config.algorithm} · model version {meta.model_version}"
    if len(series) > 1:
        title += f" · series {series[0]} of {len(series)}"
    if meta.model_type == pb.FORECAST:
        if meta.baseline:
            top.plot(*_series(points, "baseline"), color="#f79009", lw=0.8, ls="--", label=f"seasonal-naive baseline ({meta.baseline})")
        top.plot(*_series(points, "actual"), color="#101828", lw=1.2, label="actual")
        top.plot(*_series(points, "predicted"), color="#2563eb", lw=1.0, label="forecast")
        levels = sorted({q for p in points for q in p.quantiles}, key=float)
        if len(levels) >= 2:  # the outermost quantiles as a band
            low, high = levels[0], levels[-1]
            banded = [p for p in points if low in p.quantiles and high in p.quantiles]
            top.fill_between([p.timestamp.ToDatetime() for p in banded], [p.quantiles[low] for p in banded],
                             [p.quantiles[high] for p in banded], color="#93c5fd", alpha=0.4, lw=0, label=f"q{low}-q{high}")  # fmt: skip
        both = [p for p in points if p.HasField("actual") and p.HasField("predicted")]
        bottom.plot([p.timestamp.ToDatetime() for p in both], [p.actual - p.predicted for p in both], color="#7a5af8", lw=0.8)
        bottom.axhline(0, color="#98a2b3", lw=0.8)
        bottom.set_ylabel("residual")
        m = job.metrics
        scores = ", ".join(f"{k} {m[k]:.4g}" for k in ("mae", "rmse", "mape", "skill") if k in m)
        top.set_title(f"{title}\nforecast vs actual on the validation window: {scores}", loc="left", fontsize=10)
    else:
        top.plot(*_series(points, "actual"), color="#344054", lw=0.9, label="signal")
        flagged = [p for p in points if p.flagged and p.HasField("actual")]
        top.scatter(
            [p.timestamp.ToDatetime() for p in flagged],
            [p.actual for p in flagged],
            s=14,
            color="#d92d20",
            zorder=3,
            label=f"flagged ({len(flagged)})",
        )
        labelled = [p for p in points if p.HasField("label") and p.label and p.HasField("actual")]
        if labelled:
            top.scatter(
                [p.timestamp.ToDatetime() for p in labelled],
                [p.actual for p in labelled],
                s=30,
                facecolors="none",
                edgecolors="#12b76a",
                label=f"labelled ({len(labelled)})",
            )
        bottom.plot(*_series(points, "score"), color="#7a5af8", lw=0.8)
        if meta.HasField("threshold"):
            bottom.axhline(meta.threshold, color="#d92d20", ls="--", lw=0.9, label=f"threshold {meta.threshold:.4g}")
            bottom.legend(loc="upper left", fontsize=8)
        bottom.set_ylabel("score")
        top.set_title(f"{title}\nsignal and flagged points on the validation window", loc="left", fontsize=10)
    top.set_ylabel(target)
    top.legend(loc="upper left", fontsize=8, ncols=3)
    for ax in (top, bottom):
        ax.grid(alpha=0.25)
    fig.savefig(path, dpi=110)
    plt.close(fig)
