"""`aihub`: the command line over TrainingClient.

    aihub data import --tenant acme-corp --table load_forecasting load.csv
    aihub jobs create --config job.json [--follow]   # the guide's POST body, or just its config with --tenant/--model-type
    aihub jobs list --tenant acme-corp --status COMPLETED
    aihub jobs watch JOB_ID                      # a progress bar per step, the current metric, the log; then the metrics
    aihub jobs get|logs|metrics|cancel|retry JOB_ID
    aihub jobs plot JOB_ID [forecast.png]        # forecast vs actual (or the anomaly signal) as a PNG
    aihub jobs update JOB_ID --priority critical
    aihub config validate config.json
    aihub models list --tenant acme-corp
    aihub models get|delete MODEL_ID
    aihub models evaluate MODEL_ID --start 2025-01-01T00:00:00 --end 2025-03-31T23:00:00
    aihub clusters | aihub health
    aihub keys create --tenant acme-corp --output json   # admin: a tenant's key (the secret shown once)
    aihub keys create --admin --name ops                 # admin: another admin key
    aihub keys list [--tenant T] | aihub keys revoke KEY_ID
    aihub tenants get acme-corp
    aihub tenants set acme-corp --max-queued-jobs 200 --max-running-jobs 4 --max-priority critical --keep-versions 10
    aihub audit list [--tenant T] [--action key.create]  # admin: the audit trail, newest first
    aihub schedules create --config job.json --schedule "0 2 * * 0" --window P365D   # or the guide's body with "schedule"
    aihub schedules create --tenant acme-corp --model-type forecast --action forecast --alias production --schedule "30 5 * * *"
    aihub schedules create --config job.json --schedule "0 3 * * 0" --window P365D --action train_and_promote --alias production
    aihub schedules list --tenant acme-corp | aihub schedules get|pause|resume|run|delete SCHEDULE_ID
    aihub alerts add --tenant acme-corp --url https://hooks.example.org/aihub [--event job_failed]
    aihub alerts list|deliveries --tenant acme-corp | aihub alerts delete TARGET_ID
    aihub models keep MODEL_ID [--off]
    aihub models alias set production MODEL_ID [--reason "better MAE"] | aihub models alias list --tenant acme-corp
    aihub models alias rm production --tenant acme-corp [--model-type forecast]
    aihub forecast --alias production --horizon 24 [--series meter_1 ...] [--output csv|json] [--inputs weather.csv]

The server address is --target, else AIHUB_TARGET, else localhost:50051. The API key is
AIHUB_API_KEY (sent as `authorization: Bearer <key>`); none when unset.

Every command takes --output json (before or after the command): JSON on stdout for scripts
(one document; followed streams, one object per line). Exit codes: 0 done (a followed job
COMPLETED), 1 the service refused or failed the request, 2 bad input (arguments, files),
3 a followed job FAILED, 4 a followed job was CANCELLED, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from google.protobuf import json_format
from google.protobuf.message import Message

from client import _display, _plot
from client._client import DEFAULT_TARGET, TrainingClient
from client._gen.aihub.training.v1 import training_service_pb2 as pb
from client.errors import AIHubError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_FAILED, EXIT_CANCELLED = 0, 1, 2, 3, 4
EXIT_PIPE = 141  # the reader of our output went away: 128 + SIGPIPE, as a shell tool says it
JOB_EXIT = {pb.COMPLETED: EXIT_OK, pb.FAILED: EXIT_FAILED, pb.CANCELLED: EXIT_CANCELLED}
# --output on every command (and before it); SUPPRESS: a command's own default never hides the one given first.
OUTPUT = argparse.ArgumentParser(add_help=False)
OUTPUT.add_argument("--output", choices=["text", "json"], default=argparse.SUPPRESS, help="text (default) or json, for scripts")


def _json(msg: Message | list) -> str:
    if isinstance(msg, list):
        return json.dumps([json.loads(_json(m)) for m in msg], indent=2)
    return json_format.MessageToJson(msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def _line(msg: Message) -> str:
    """One message as one line of JSON (a followed stream)."""
    return json.dumps(json.loads(_json(msg)), separators=(",", ":"))


def _is_json(a: argparse.Namespace) -> bool:
    return getattr(a, "output", "text") == "json"


def _read_json(path: str) -> dict[str, Any]:
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    return json.loads(text)


def _create(c: TrainingClient, a: argparse.Namespace) -> int:
    body = _read_json(a.config)
    config = body.get("config", body)
    tenant = a.tenant or body.get("tenant_id")
    model_type = a.model_type or body.get("model_type") or config.get("model_type")
    if not tenant or not model_type:
        print("aihub: --tenant and --model-type are needed when the file does not give tenant_id and model_type", file=sys.stderr)
        return 2
    metadata = dict(body.get("metadata") or {})
    metadata.update(kv.split("=", 1) for kv in a.metadata or [])
    job = c.create_job(
        tenant,
        model_type,
        config,
        priority=a.priority or body.get("priority"),
        metadata=metadata,
        request_id=a.request_id or body.get("request_id"),
    )
    if a.follow:
        if _is_json(a):
            print(_line(job), flush=True)
        else:
            print(f"created job {job.job_id} ({pb.Priority.Name(job.priority).lower()} priority); following it", flush=True)
        return _follow(c, a, job.job_id)
    print(_json(job))
    return 0


def _list(c: TrainingClient, a: argparse.Namespace) -> int:
    token, jobs = "", []
    while True:
        page = c.list_jobs(a.tenant, a.status, a.model_type, page_size=a.page_size, page_token=token, schedule_id=a.schedule)
        jobs.extend(page.jobs)
        token = page.next_page_token
        if not token or not a.all:
            break
    if _is_json(a):
        print(_json(jobs))
    else:
        _display.console().print(_display.jobs_table(jobs))
    if token:
        print(f"(more: --page-token {token}, or --all)", file=sys.stderr)
    return 0


def _follow(c: TrainingClient, a: argparse.Namespace, job_id: str) -> int:
    """Follow a job to its end; the exit code says how it ended."""
    job = None
    if _is_json(a):
        for job in c.watch_job(job_id):
            print(_line(job), flush=True)
    else:
        job = _display.follow(_display.console(), c.watch_job(job_id), lambda: c.stream_logs(job_id, follow=True))
    return EXIT_ERROR if job is None else JOB_EXIT.get(job.status, EXIT_ERROR)


def _logs(c: TrainingClient, a: argparse.Namespace) -> int:
    for e in c.stream_logs(a.job_id, follow=not a.no_follow, after_sequence=a.after):
        if _is_json(a):
            print(_line(e), flush=True)
            continue
        stamp = e.time.ToDatetime().strftime("%H:%M:%S.%f")[:-3]
        print(f"{e.sequence:5d} {stamp} {pb.LogLevel.Name(e.level):<7} {e.step or '-':<13} {e.message}", flush=True)
    return 0


def _plot_job(c: TrainingClient, a: argparse.Namespace) -> int:
    job = c.get_job(a.job_id)
    meta, points = _plot.all_points(lambda token: c.get_predictions(a.job_id, page_size=_plot.PAGE, page_token=token))
    path = Path(a.path or f"{a.job_id}.png")
    _plot.write_png(path, job, meta, points)
    if _is_json(a):
        print(json.dumps({"job_id": a.job_id, "path": str(path), "points": len(points), "model_version": meta.model_version}))
    else:
        print(f"wrote {path}: {len(points)} points of model version {meta.model_version}'s validation window")
    return 0


def _schedule_create(c: TrainingClient, a: argparse.Namespace) -> int:
    body = _read_json(a.config) if a.config else {}
    config = body.get("config", body) if a.config else None
    tenant = a.tenant or body.get("tenant_id")
    model_type = a.model_type or body.get("model_type") or (config or {}).get("model_type")
    cron = a.schedule or body.get("schedule")
    if not tenant or not model_type or not cron:
        print("aihub: --tenant, --model-type and --schedule are needed when the file does not give them", file=sys.stderr)
        return 2
    given = {"window": a.check_window, "max_mae_increase": a.max_mae_increase, "max_skill_drop": a.max_skill_drop}
    policy = {k: v for k, v in given.items() if v is not None}
    promoted = {"window": a.promotion_window, "metric": a.metric, "min_improvement": a.min_improvement}
    made = c.create_schedule(
        tenant,
        model_type,
        config,
        cron,
        timezone=a.timezone or body.get("timezone", ""),
        window=a.window or body.get("window", ""),
        name=a.name or body.get("name", ""),
        priority=a.priority or body.get("priority"),
        metadata=body.get("metadata"),
        action=a.action or body.get("action"),
        degradation=policy or body.get("degradation"),
        paused=a.paused,
        alias=a.alias or body.get("alias", ""),
        forecast={"horizon_hours": a.horizon} if a.horizon else body.get("forecast"),
        promotion={k: v for k, v in promoted.items() if v is not None} or body.get("promotion"),
    )
    print(_json(made))
    return 0


def _operations_parsers(sub: Any) -> None:
    schedules = sub.add_parser("schedules", parents=[OUTPUT], help="cron schedules (retraining, degradation checks)")
    sch = schedules.add_subparsers(dest="cmd", required=True)
    sc = sch.add_parser("create", parents=[OUTPUT], help="create a schedule from a JSON file (- for stdin)")
    sc.add_argument("--config", help='the guide\'s body with "schedule", or a TrainingConfig (not for --action forecast)')
    sc.add_argument("--schedule", help="cron: minute hour day month weekday (six fields: seconds first)")
    sc.add_argument("--timezone", help="IANA time zone the cron is read in (default UTC)")
    sc.add_argument("--window", help="rolling training window ending at each firing, e.g. P365D")
    sc.add_argument("--tenant")
    sc.add_argument("--model-type", choices=["forecast", "anomaly"])
    sc.add_argument("--name")
    sc.add_argument("--priority", choices=["critical", "high", "normal", "low"], help="default high")
    sc.add_argument("--action", choices=["train", "evaluate", "train_and_evaluate", "forecast", "train_and_promote"])
    sc.add_argument("--check-window", help="degradation check window (default P7D)")
    sc.add_argument("--max-mae-increase", type=float, help="alert when MAE grows past (1 + this) x training MAE (default 0.2)")
    sc.add_argument("--max-skill-drop", type=float, help="alert when skill drops by more than this (default 0.1)")
    sc.add_argument("--alias", help="the alias its firings use (forecast, train_and_promote; evaluate scores its version)")
    sc.add_argument("--horizon", type=int, help="forecast: hours ahead (default the version's forecast_horizon_hours)")
    sc.add_argument("--min-improvement", type=float, help="train_and_promote: the challenger must be this much better (default 0.02)")
    sc.add_argument("--metric", help="train_and_promote: mae (default), rmse, mape, r2_score, skill or f1")
    sc.add_argument("--promotion-window", help="train_and_promote: the window both are scored on (default P7D)")
    sc.add_argument("--paused", action="store_true")
    sc.set_defaults(func=_schedule_create)
    sl = sch.add_parser("list", parents=[OUTPUT], help="list schedules")
    sl.add_argument("--tenant", default="")
    sl.set_defaults(func=_show(lambda c, a: c.list_schedules(a.tenant)))
    for name, help_, func in [
        ("get", "show a schedule, its recent jobs and checks", _show(lambda c, a: c.get_schedule(a.schedule_id))),
        ("pause", "stop a schedule from firing", _show(lambda c, a: c.pause_schedule(a.schedule_id))),
        ("resume", "let a paused schedule fire again", _show(lambda c, a: c.resume_schedule(a.schedule_id))),
        ("run", "fire a schedule now, once", _show(lambda c, a: c.run_schedule(a.schedule_id))),
        ("delete", "delete a schedule (its jobs stay)", _show(lambda c, a: c.delete_schedule(a.schedule_id))),
    ]:
        one = sch.add_parser(name, parents=[OUTPUT], help=help_)
        one.add_argument("schedule_id")
        one.set_defaults(func=func)

    al = sub.add_parser("alerts", parents=[OUTPUT], help="webhooks for failures and degradation").add_subparsers(dest="cmd", required=True)
    aa = al.add_parser("add", parents=[OUTPUT], help="add a webhook; prints its signing secret once")
    aa.add_argument("--tenant", required=True)
    aa.add_argument("--url", required=True)
    aa.add_argument("--event", action="append", choices=["job_failed", "degradation"], help="default: both")
    aa.add_argument("--secret", default="", help="16+ characters; default: one is made")
    aa.set_defaults(func=_show(lambda c, a: c.create_alert_target(a.tenant, a.url, events=a.event, secret=a.secret)))
    alist = al.add_parser("list", parents=[OUTPUT], help="list webhooks")
    alist.add_argument("--tenant", default="")
    alist.set_defaults(func=_show(lambda c, a: c.list_alert_targets(a.tenant)))
    adel = al.add_parser("delete", parents=[OUTPUT], help="remove a webhook")
    adel.add_argument("target_id")
    adel.set_defaults(func=_show(lambda c, a: c.delete_alert_target(a.target_id)))
    ad = al.add_parser("deliveries", parents=[OUTPUT], help="alerts sent, newest first")
    ad.add_argument("--tenant", default="")
    ad.add_argument("--page-size", type=int, default=50)
    ad.set_defaults(func=_show(lambda c, a: c.list_alert_deliveries(a.tenant, a.page_size)))


def _admin_parsers(sub: Any) -> None:
    keys = sub.add_parser("keys", parents=[OUTPUT], help="API keys (admin)").add_subparsers(dest="cmd", required=True)
    kc = keys.add_parser("create", parents=[OUTPUT], help="create a key for a tenant, or an admin key; prints the secret once")
    who = kc.add_mutually_exclusive_group(required=True)
    who.add_argument("--tenant")
    who.add_argument("--admin", action="store_true")
    kc.add_argument("--name", default="")
    kc.add_argument("--expires-in", metavar="DAYS", type=float, help="the key stops working after this many days (default: never)")
    kc.set_defaults(func=_key_create)
    kl = keys.add_parser("list", parents=[OUTPUT], help="list keys (never their secrets)")
    kl.add_argument("--tenant", default="")
    kl.set_defaults(func=_show(lambda c, a: c.list_keys(a.tenant)))
    kr = keys.add_parser("revoke", parents=[OUTPUT], help="revoke a key")
    kr.add_argument("key_id")
    kr.set_defaults(func=_show(lambda c, a: c.revoke_key(a.key_id)))

    ten = sub.add_parser("tenants", parents=[OUTPUT], help="tenant quotas (admin)").add_subparsers(dest="cmd", required=True)
    tg = ten.add_parser("get", parents=[OUTPUT], help="show a tenant's quotas")
    tg.add_argument("tenant")
    tg.set_defaults(func=_show(lambda c, a: c.get_quota(a.tenant)))
    ts = ten.add_parser("set", parents=[OUTPUT], help="change a tenant's quotas")
    ts.set_defaults(func=_show(_quota_set))
    ts.add_argument("tenant")
    ts.add_argument("--max-queued-jobs", type=int)
    ts.add_argument("--max-running-jobs", type=int, help="0: no cap beyond the fair share")
    ts.add_argument("--max-priority", choices=["critical", "high", "normal", "low"])
    ts.add_argument("--max-import-bytes", type=int)
    ts.add_argument("--keep-versions", type=int, help="retention: the newest N versions per model type (0: keep all)")
    ts.add_argument("--min-schedule-interval-seconds", type=int, help="the shortest time between two firings of a schedule")
    ts.add_argument("--max-scheduled-jobs-per-day", type=int, help="jobs the tenant's schedules may create in any 24 hours")
    ts.add_argument("--max-open-streams", type=int, help="log and watch streams open at once, per server")

    aud = sub.add_parser("audit", parents=[OUTPUT], help="the audit trail (admin)").add_subparsers(dest="cmd", required=True)
    al = aud.add_parser("list", parents=[OUTPUT], help="key, quota and alias changes and admin calls, newest first")
    al.add_argument("--tenant", default="", help="only this tenant's events ('*': calls made for every tenant)")
    al.add_argument("--action", default="", help="only this action: key.create, key.revoke, quota.update, alias.set, ...")
    al.add_argument("--page-size", type=int, default=100)
    al.add_argument("--page-token", default="")
    al.set_defaults(func=_show(lambda c, a: c.list_audit_events(a.tenant, action=a.action, page_size=a.page_size, page_token=a.page_token)))


def _model_parsers(sub: Any) -> None:
    mdl = sub.add_parser("models", parents=[OUTPUT], help="the model registry").add_subparsers(dest="cmd", required=True)
    ml = mdl.add_parser("list", parents=[OUTPUT], help="a tenant's model versions")
    ml.add_argument("--tenant", required=True)
    ml.add_argument("--model-type", choices=["forecast", "anomaly"])
    ml.add_argument("--include-deleted", action="store_true")
    ml.set_defaults(func=_models)
    mg = mdl.add_parser("get", parents=[OUTPUT], help="show a model version")
    mg.add_argument("model_id")
    mg.set_defaults(func=_show(lambda c, a: c.get_model(a.model_id)))
    md = mdl.add_parser("delete", parents=[OUTPUT], help="delete a version's artifact (the row stays)")
    md.add_argument("model_id")
    md.set_defaults(func=_show(lambda c, a: c.delete_model(a.model_id)))
    me = mdl.add_parser("evaluate", parents=[OUTPUT], help="score a version on another window")
    me.add_argument("model_id")
    me.add_argument("--start", required=True)
    me.add_argument("--end", required=True)
    me.set_defaults(func=_show(lambda c, a: c.evaluate_model(a.model_id, a.start, a.end)))
    mk = mdl.add_parser("keep", parents=[OUTPUT], help="protect a version from the retention sweep")
    mk.add_argument("model_id")
    mk.add_argument("--off", action="store_true", help="let retention remove it again")
    mk.set_defaults(func=_show(lambda c, a: c.keep_model(a.model_id, not a.off)))
    al = mdl.add_parser("alias", parents=[OUTPUT], help="aliases (production, staging, ...)").add_subparsers(
        dest="alias_cmd", required=True
    )
    aset = al.add_parser("set", parents=[OUTPUT], help="point an alias at a version (made, or moved; recorded)")
    aset.add_argument("alias")
    aset.add_argument("model_id")
    aset.add_argument("--reason", default="", help="why it moves, kept with the move")
    aset.set_defaults(func=_show(lambda c, a: c.set_alias(a.alias, a.model_id, reason=a.reason)))
    arm = al.add_parser("rm", parents=[OUTPUT], help="remove an alias (recorded)")
    arm.add_argument("alias")
    arm.add_argument("--tenant", default="", help="default: the API key's tenant")
    arm.add_argument("--model-type", choices=["forecast", "anomaly"], default="forecast")
    arm.add_argument("--reason", default="")
    arm.set_defaults(func=_show(lambda c, a: c.delete_alias(a.alias, tenant_id=a.tenant, model_type=a.model_type, reason=a.reason)))
    als = al.add_parser("list", parents=[OUTPUT], help="a tenant's aliases, each with its version and moves")
    als.add_argument("--tenant", default="", help="default: the API key's tenant")
    als.add_argument("--model-type", choices=["forecast", "anomaly"], default="")
    als.set_defaults(func=_aliases)


def _forecast_parser(sub: Any) -> None:
    fc = sub.add_parser("forecast", help="forecast the next hours from a version (by alias or id)")
    which = fc.add_mutually_exclusive_group(required=True)
    which.add_argument("--alias", help="the alias whose version forecasts (production, ...)")
    which.add_argument("--model-id", help="a version's id")
    fc.add_argument("--tenant", default="", help="default: the API key's tenant")
    fc.add_argument("--horizon", type=int, default=0, help="hours ahead (default: the model's forecast_horizon_hours)")
    fc.add_argument("--origin", default="", help="the last hour with actuals (default: each series' latest)")
    fc.add_argument("--series", nargs="+", default=None, help="the series to forecast (default: all)")
    fc.add_argument("--inputs", help="a CSV of known-ahead values for the hours to forecast (timestamp[, series_id], columns)")
    fc.add_argument("--output", choices=["text", "json", "csv"], default=argparse.SUPPRESS, help="text (default), json or csv")
    fc.set_defaults(func=_forecast)


def _forecast(c: TrainingClient, a: argparse.Namespace) -> int:
    inputs = None
    if a.inputs:
        import csv

        with open(a.inputs, newline="") as f:
            inputs = [
                {k: v if k in ("timestamp", "series_id") else (float(v) if v != "" else None) for k, v in row.items()}
                for row in csv.DictReader(f)
            ]
    resp = c.forecast(
        a.model_id or "", alias=a.alias or "", tenant_id=a.tenant, origin=a.origin, horizon_hours=a.horizon, series=a.series, inputs=inputs
    )
    output = getattr(a, "output", "text")
    if output == "json":
        print(_json(resp))
    elif output == "csv":
        print("timestamp,series_id,forecast,origin")
        for p in resp.points:
            print(f"{p.timestamp.ToJsonString()},{p.series_id},{p.forecast!r},{p.origin.ToJsonString()}")
    else:
        named = f" ({resp.alias})" if resp.alias else ""
        print(f"model {resp.model_id} v{resp.model_version}{named}, from {resp.origin.ToJsonString()}")
        for p in resp.points:
            print(f"{p.timestamp.ToJsonString()}  {p.series_id:<12} {p.forecast:.4f}")
    return 0


def _aliases(c: TrainingClient, a: argparse.Namespace) -> int:
    found = c.list_aliases(a.tenant, a.model_type)
    if _is_json(a):
        print(_json(found))
        return 0
    for al in found:
        last = al.moves[0] if al.moves else None
        why = f"  moved by {last.moved_by}: {last.reason}" if last and last.reason else ""
        print(f"{al.alias:<16} {pb.ModelType.Name(al.model_type).lower():<8} v{al.model_version:<4} {al.model_id}{why}")
    return 0


def _jobs_parsers(sub: Any) -> None:
    jobs = sub.add_parser("jobs", parents=[OUTPUT], help="training jobs").add_subparsers(dest="cmd", required=True)
    cr = jobs.add_parser("create", parents=[OUTPUT], help="create a job from a JSON file (- for stdin)")
    cr.add_argument("--config", required=True, help="the guide's POST /ai/training/jobs body, or a TrainingConfig")
    cr.add_argument("--tenant")
    cr.add_argument("--model-type", choices=["forecast", "anomaly"])
    cr.add_argument("--priority", choices=["critical", "high", "normal", "low"])
    cr.add_argument("--metadata", action="append", metavar="KEY=VALUE")
    cr.add_argument("--request-id")
    cr.add_argument("--follow", action="store_true", help="then follow it like `jobs watch` (the exit code says how it ended)")
    cr.set_defaults(func=_create)
    ls = jobs.add_parser("list", parents=[OUTPUT], help="list jobs, newest first")
    ls.add_argument("--tenant")
    ls.add_argument("--status", choices=["PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"], type=str.upper)
    ls.add_argument("--model-type", choices=["forecast", "anomaly"])
    ls.add_argument("--page-size", type=int, default=50)
    ls.add_argument("--all", action="store_true", help="follow next_page_token to the end")
    ls.add_argument("--schedule", default="", help="only the jobs of this schedule")
    ls.set_defaults(func=_list)
    for name, help_, func in [
        ("get", "show a job", _show(lambda c, a: c.get_job(a.job_id))),
        (
            "watch",
            "follow a job: a progress bar per step, the metric, the log; exit code 0/3/4 for completed/failed/cancelled",
            lambda c, a: _follow(c, a, a.job_id),
        ),
        ("metrics", "show a job's metrics", _show(lambda c, a: c.get_metrics(a.job_id))),
        ("cancel", "cancel a PENDING or RUNNING job", _show(lambda c, a: c.cancel_job(a.job_id))),
        ("retry", "queue a FAILED or CANCELLED job again", _show(lambda c, a: c.retry_job(a.job_id))),
    ]:
        one = jobs.add_parser(name, parents=[OUTPUT], help=help_)
        one.add_argument("job_id")
        one.set_defaults(func=func)
    pl = jobs.add_parser("plot", parents=[OUTPUT], help="write a completed job's validation window as a PNG")
    pl.add_argument("job_id")
    pl.add_argument("path", nargs="?", help="default: JOB_ID.png")
    pl.set_defaults(func=_plot_job)
    lg = jobs.add_parser("logs", parents=[OUTPUT], help="print log lines, following them until the job is final")
    lg.add_argument("job_id")
    lg.add_argument("--no-follow", action="store_true", help="print what is stored and stop")
    lg.add_argument("--after", type=int, default=0, help="only lines after this sequence number")
    lg.set_defaults(func=_logs)
    up = jobs.add_parser("update", parents=[OUTPUT], help="change the priority of a PENDING job")
    up.add_argument("job_id")
    up.add_argument("--priority", required=True, choices=["critical", "high", "normal", "low"])
    up.set_defaults(func=_show(lambda c, a: c.update_job(a.job_id, priority=a.priority)))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aihub", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, parents=[OUTPUT])
    p.add_argument("--target", default=None, help=f"server address (default: AIHUB_TARGET or {DEFAULT_TARGET})")
    sub = p.add_subparsers(dest="group", required=True)

    data = sub.add_parser("data", parents=[OUTPUT], help="feature data").add_subparsers(dest="cmd", required=True)
    imp = data.add_parser("import", parents=[OUTPUT], help="import a CSV or Parquet file with a timestamp column")
    imp.add_argument("--tenant", default="", help="default: the API key's tenant")
    imp.add_argument("--table", default="load_forecasting")
    imp.add_argument("--format", choices=["csv", "parquet"], default=None, help="default: from the file")
    imp.add_argument(
        "--duplicates",
        choices=["refuse", "first", "last", "mean"],
        default="",
        help="a repeated timestamp: refuse (default), first, last, mean",
    )
    imp.add_argument("file")
    imp.set_defaults(func=_import)

    _jobs_parsers(sub)
    _model_parsers(sub)
    _forecast_parser(sub)
    _admin_parsers(sub)
    _operations_parsers(sub)
    cfg = sub.add_parser("config", parents=[OUTPUT], help="training configurations").add_subparsers(dest="cmd", required=True)
    va = cfg.add_parser("validate", parents=[OUTPUT], help="check a config JSON file")
    va.add_argument("file")
    va.set_defaults(func=_validate)
    sub.add_parser("clusters", parents=[OUTPUT], help="list Ray clusters").set_defaults(func=_show(lambda c, a: c.list_clusters()))
    sub.add_parser("health", parents=[OUTPUT], help="database, Ray and queue health").set_defaults(func=_show(lambda c, a: c.health()))
    return p


def _key_create(c: TrainingClient, a: argparse.Namespace) -> int:
    expires = None
    if a.expires_in is not None:
        if a.expires_in <= 0:
            print("aihub: --expires-in must be more than 0 days", file=sys.stderr)
            return 2
        expires = datetime.now(UTC) + timedelta(days=a.expires_in)
    made = c.create_key(a.tenant or "", admin=a.admin, name=a.name, expires_at=expires)
    if _is_json(a):
        out: dict[str, Any] = {"key": made.key, "key_id": made.key_id, "tenant_id": made.tenant_id}
        if made.admin:
            out = {"key": made.key, "key_id": made.key_id, "tenant_id": "", "admin": True}
        print(json.dumps(out))
    else:
        print(f"key {made.key_id} for {'every tenant (admin)' if made.admin else 'tenant ' + made.tenant_id}:\n{made.key}")
        print("(the key is shown only now; keep it secret)", file=sys.stderr)
    return 0


def _quota_set(c: TrainingClient, a: argparse.Namespace) -> Message:
    return c.update_quota(
        a.tenant,
        max_queued_jobs=a.max_queued_jobs,
        max_running_jobs=a.max_running_jobs,
        max_priority=a.max_priority,
        max_import_bytes=a.max_import_bytes,
        keep_versions=a.keep_versions,
        min_schedule_interval_seconds=a.min_schedule_interval_seconds,
        max_scheduled_jobs_per_day=a.max_scheduled_jobs_per_day,
        max_open_streams=a.max_open_streams,
    )


def _validate(c: TrainingClient, a: argparse.Namespace) -> int:
    body = _read_json(a.file)
    resp = c.validate_config(body.get("config", body))
    if _is_json(a):
        print(_json(resp))
    else:
        for v in resp.violations:
            print(f"{v.field}: {v.description}")
        print("valid" if resp.valid else f"{len(resp.violations)} problem(s)")
    return 0 if resp.valid else 1


def _models(c: TrainingClient, a: argparse.Namespace) -> int:
    found = c.list_models(a.tenant, a.model_type, include_deleted=a.include_deleted)
    if _is_json(a):
        print(_json(found))
        return 0
    for v in found:
        gone = "  (deleted)" if v.HasField("deleted_at") else ""
        print(
            f"{v.model_id}  {pb.ModelType.Name(v.model_type).lower():<8} v{v.version:<4} {v.algorithm:<16} job {v.job_id}"
            f"  mae={v.metrics.get('mae', float('nan')):.4g}{gone}"
        )
    return 0


def _import(c: TrainingClient, a: argparse.Namespace) -> int:
    resp = c.import_data(a.tenant, a.table, a.file, format=a.format, duplicates=a.duplicates)
    if _is_json(a):
        print(_json(resp))
    else:
        merged = f"; {resp.duplicates_merged} rows repeating a timestamp merged ({resp.duplicates})" if resp.duplicates_merged else ""
        print(f"imported {resp.rows_imported} rows into features.{resp.table} ({', '.join(resp.columns)}){merged}")
    return 0


Command = Callable[[TrainingClient, argparse.Namespace], int]


def _show(call: Callable[[TrainingClient, argparse.Namespace], Any]) -> Command:
    """A command that prints the service's answer as JSON."""

    def command(c: TrainingClient, a: argparse.Namespace) -> int:
        print(_json(call(c, a)))
        return 0

    return command


def run(c: TrainingClient, a: argparse.Namespace) -> int:
    """Each command's parser names its function (set_defaults(func=...))."""
    return cast(Command, a.func)(c, a)


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    target = a.target or os.environ.get("AIHUB_TARGET") or DEFAULT_TARGET
    try:
        with TrainingClient(target, api_key=os.environ.get("AIHUB_API_KEY") or None) as c:
            code = run(c, a)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at exit
        return code
    except AIHubError as exc:
        if _is_json(a):  # the guide's error shape, for scripts
            details = {**exc.details, **({"violations": [{"field": f, "error": d} for f, d in exc.violations]} if exc.violations else {})}
            print(json.dumps({"error": exc.reason or exc.code.name, "message": exc.message, "details": details}), file=sys.stderr)
        else:
            print(f"aihub: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        # The reader went away (`aihub ... | head`): not an input error. Nothing more is
        # written (Python would complain again at exit), and the exit code is a pipe's.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE
    except (ValueError, json_format.ParseError, OSError) as exc:
        print(json.dumps({"error": "InvalidInput", "message": str(exc)}) if _is_json(a) else f"aihub: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
