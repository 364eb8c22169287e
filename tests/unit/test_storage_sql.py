"""Named SQL, one way: every job, queue, log, model and cluster statement is a named
module-level constant with a comment saying which index serves it, and every status change
written in SQL is an edge of the transition table."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from storage import clusters, db, jobs, logs, models, queue
from storage.records import TRANSITIONS, JobStatus
from tests.conftest import ROOT

NAMED_MODULES = (jobs, queue, logs, models, clusters)
# A string that is SQL (keywords in capitals, as this project writes them; prose is not).
SQL_START = re.compile(
    r"^\s*(SELECT\s.*\bFROM\b|SELECT\s+pg_|INSERT\s+INTO\b|UPDATE\s+\w+\s+(AS\s+\w+\s+)?SET\b|DELETE\s+FROM\b|WITH\s+\w+\s+AS\b)", re.S
)


def statements() -> list[tuple[str, str]]:
    """(module.NAME, SQL text) of every named statement and SQL fragment."""
    out = []
    for module in NAMED_MODULES:
        for name, value in vars(module).items():
            if not name.isupper():
                continue
            text = value.text if isinstance(value, db.Query) else value if isinstance(value, str) else None
            if text is not None and ("training_jobs" in text or SQL_START.match(text) or "status" in text):
                out.append((f"{module.__name__}.{name}", text))
    return out


def status_changes(sql: str) -> tuple[set[str], str] | None:
    """(source states, target state) of an UPDATE of training_jobs that sets its status."""
    if not re.search(r"UPDATE\s+training_jobs\b", sql):
        return None
    target = re.search(r"\bSET\b\s+status\s*=\s*'(\w+)'", sql)
    if target is None:
        return None
    where = sql[sql.index("WHERE") :]
    # An aggregate sub-select (the fair claim counts each tenant's RUNNING jobs) reads
    # states; it selects no row to change.
    where = re.sub(r"\(SELECT\s+\w+,\s*count\(\*\).*?GROUP BY \w+\)", "", where, flags=re.S)
    sources = set(re.findall(r"\bstatus\s*=\s*'(\w+)'", where))
    for listed in re.findall(r"\bstatus\s+IN\s*\(([^)]*)\)", where):
        sources |= set(re.findall(r"'(\w+)'", listed))
    return sources, target.group(1)


def test_every_status_change_in_sql_is_an_edge_of_the_transition_table():
    found = {}
    for name, sql in statements():
        if (change := status_changes(sql)) is not None:
            found[name] = change
    # The statements that change a job's state, each seen (a regex that found nothing would pass vacuously).
    assert set(found) >= {
        "storage.jobs.CANCEL",
        "storage.jobs.RETRY",
        "storage.queue.CLAIM_TAKE_MANY",
        "storage.queue.COMPLETE",
        "storage.queue.FAIL",
        "storage.queue.REQUEUE_EXPIRED",
        "storage.queue.RELEASE",
        "storage.queue.REQUEUE_DUE_RETRIES",
    }, found
    for name, (sources, target) in found.items():
        assert sources, f"{name} changes the status without naming the states it may change from"
        for source in sources:
            assert JobStatus(target) in TRANSITIONS[JobStatus(source)], f"{name}: {source} -> {target} is not in TRANSITIONS"


def test_new_jobs_start_pending():
    inserts = [(n, s) for n, s in statements() if re.search(r"INSERT\s+INTO\s+training_jobs\b", s)]
    assert [n for n, _ in inserts] == ["storage.jobs.INSERT_JOB"]
    assert "'PENDING'" in inserts[0][1]


def test_the_edge_check_catches_a_wrong_statement():
    # The check itself: a statement writing an edge the table lacks is found.
    sources, target = status_changes("UPDATE training_jobs SET status = 'RUNNING' WHERE id = :id AND status = 'COMPLETED'")
    assert (sources, target) == ({"COMPLETED"}, "RUNNING")
    assert JobStatus.RUNNING not in TRANSITIONS[JobStatus.COMPLETED]


@pytest.mark.parametrize("module", NAMED_MODULES, ids=lambda m: m.__name__)
def test_statements_are_named_with_their_index(module):
    path = Path(module.__file__)
    source = path.read_text()
    tree = ast.parse(source)
    lines = source.splitlines()
    named = 0
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)):
            continue
        call = node.value
        if not (isinstance(call.func, ast.Attribute) and call.func.attr == "sql"):  # db.sql("..."): a named statement
            continue
        named += 1
        name = node.targets[0].id
        comment = []
        i = node.lineno - 2
        while i >= 0 and lines[i].lstrip().startswith("#"):
            comment.insert(0, lines[i])
            i -= 1
        text = " ".join(comment)
        assert comment, f"{path.name}: {name} has no comment saying what it does"
        assert "Index:" in text, f"{path.name}: {name}'s comment does not say which index serves it"
    assert named, f"{path.name} names no statement"
    # Inside functions: no SQL written in place (a statement is a named constant; dynamic
    # ones are composed from named fragments).
    for func in ast.walk(tree):
        if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(func):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL_START.match(node.value):
                pytest.fail(f"{path.name}:{node.lineno}: SQL written inside {func.name}(); name it at module level")
            if isinstance(node, ast.JoinedStr):
                literal = "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
                if SQL_START.match(literal):
                    pytest.fail(f"{path.name}:{node.lineno}: SQL written inside {func.name}(); name it at module level")


def test_log_lines_are_written_only_by_storage_logs():
    writers = [p.name for p in (ROOT / "storage").glob("*.py") if "INSERT INTO job_logs" in p.read_text()]
    assert writers == ["logs.py"]
