"""The generated stubs are current, buf lint is clean, the client's surface is pinned."""

from __future__ import annotations

import ast
import filecmp
import os
import re
import subprocess
import sys
from pathlib import Path

import client
from tests.conftest import ROOT

BUF = Path(sys.executable).parent / "buf"


def test_stubs_match_protos(tmp_path):
    out = tmp_path / "_gen"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_protos.py"), str(out)], check=True, capture_output=True)
    committed = ROOT / "client" / "_gen"
    fresh = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert fresh == sorted(p.relative_to(committed) for p in committed.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    stale = [str(p) for p in fresh if not filecmp.cmp(out / p, committed / p, shallow=False)]
    assert not stale, f"client/_gen is stale: run `make protos` ({stale})"


def test_buf_lint_is_clean():
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--link-only"], check=True)
    result = subprocess.run([str(BUF), "lint"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_client_public_surface():
    assert sorted(client.__all__) == [
        "AIHubError", "AlreadyExistsError", "AsyncTrainingClient", "AuthenticationError", "ConfigValidationError", "DataLoadError",
        "InvalidStateError", "NotFoundError", "PermissionDeniedError", "QuotaExceededError", "ResourceError",
        "TrainingClient", "UnavailableError", "pb", "pb_grpc",
    ]  # fmt: skip


def test_layers_do_not_cross():
    """trainers/ and storage/ import nothing of ours (storage) or only themselves (trainers);
    no protobuf outside client/ and server/."""
    for package, forbidden in [
        ("trainers", ("from server", "import server", "from storage", "from client", "google.protobuf", "import grpc")),
        ("storage", ("from server", "from trainers", "from client", "google.protobuf", "import grpc")),
    ]:
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            hits = [f for f in forbidden if f in text]
            assert not hits, f"{path.relative_to(ROOT)} crosses a layer: {hits}"


# What each package may import of ours (docs/ARCHITECTURE.md has the same table), and which
# outside libraries only one layer may use.
OURS = ("client", "server", "storage", "trainers")
LAYERS = {
    "client": ("client",),
    "server.api": ("server", "storage", "trainers", "client._gen"),
    "server.execution": (
        "server.execution",
        "server.isolation",
        "server.lifecycle",
        "server.observability",
        "server.private",
        "storage",
        "trainers",
    ),
    "server": ("server", "storage", "trainers", "client._gen"),  # __main__, settings, observability, demo data
    "storage": ("storage",),
    "trainers": ("trainers",),
}
ONLY_IN = {
    "sqlalchemy": ("storage",),
    "asyncpg": ("storage",),
    "alembic": ("storage",),
    "google.protobuf": ("client", "server.api"),
    "grpc": ("client", "server.api"),
    "grpc_health": ("server.api",),
    "grpc_reflection": ("server.api",),
    "grpc_status": ("client", "server.api"),
}


def _layer(module: str) -> str:
    return max((layer for layer in LAYERS if module == layer or module.startswith(layer + ".")), key=len)


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from pkg import mod" imports pkg.mod; "from mod import name" imports from mod.
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return found


def _modules() -> list[tuple[str, Path]]:
    out = []
    for package in OURS:
        for path in (ROOT / package).rglob("*.py"):
            rel = path.relative_to(ROOT).with_suffix("")
            if "_gen" in rel.parts or "migrations" in rel.parts:
                continue
            out.append((".".join(rel.parts).removesuffix(".__init__"), path))
    return out


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_each_package_imports_only_what_its_layer_allows():
    problems = []
    for module, path in _modules():
        layer = _layer(module)
        for line, name in _imports(path):
            if _within(name, OURS) and not _within(name, LAYERS[layer]):
                problems.append(f"{path.relative_to(ROOT)}:{line} ({layer}) imports {name}")
            for lib, allowed in ONLY_IN.items():
                if _within(name, (lib,)) and not any(_within(module, (a,)) for a in allowed):
                    problems.append(f"{path.relative_to(ROOT)}:{line} ({layer}) imports {name}, which only {', '.join(allowed)} may use")
    assert not problems, "\n".join(problems)


SQL = re.compile(
    r"^\s*(SELECT\s.*\bFROM\b|INSERT\s+INTO\b|UPDATE\s+\w+\s+(AS\s+\w+\s+)?SET\b|DELETE\s+FROM\b|CREATE\s+(TABLE|INDEX)\b)", re.S
)


def test_no_sql_outside_storage():
    """Only storage/ writes SQL: elsewhere no SQL text, no text()/select() statement builders."""
    problems = []
    for module, path in _modules():
        if _within(module, ("storage",)):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.match(node.value):
                problems.append(f"{path.relative_to(ROOT)}:{node.lineno}: SQL text {node.value[:40]!r}")
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
                if name in ("text", "select", "insert", "update", "delete") and isinstance(func, ast.Attribute | ast.Name):
                    owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
                    if owner in ("sa", "sqlalchemy", "") and name in ("text", "select"):
                        problems.append(f"{path.relative_to(ROOT)}:{node.lineno}: {owner + '.' if owner else ''}{name}(...)")
    assert not problems, "\n".join(problems)


def test_one_database_path_sqlalchemy_only_describes_the_tables():
    """Run time talks to PostgreSQL through asyncpg and storage.db's named SQL alone:
    SQLAlchemy is imported only by storage/tables.py (the tables, for Alembic) and, for
    parsing a database URL (make_url), by storage.db and storage.embedded."""
    users = {}
    for module, path in _modules():
        names = sorted({name for _, name in _imports(path) if _within(name, ("sqlalchemy",))})
        if names:
            users[module] = names
    url_only = ["sqlalchemy.engine.make_url"]
    assert users == {"storage.tables": users.get("storage.tables"), "storage.db": url_only, "storage.embedded": url_only}, users
    assert users["storage.tables"]


def test_import_linter_keeps_every_layer_contract():
    """The same layer rules as import-linter contracts ([tool.importlinter], make lint)."""
    linter = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run([str(linter)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "7 kept, 0 broken" in done.stdout, done.stdout[-2000:]


def test_the_layer_checks_see_a_crossing():
    # The checks themselves: a made-up module of each kind is caught.
    assert not _within("server.api.app", LAYERS[_layer("server.execution.tasks")])
    assert _layer("server.execution.tasks") == "server.execution" and _layer("server.seed") == "server"
    assert SQL.match("UPDATE training_jobs SET status = 'X'") and not SQL.match("Update the job's state")


def test_only_the_entry_point_knows_the_wiring():
    """The servicers get their collaborators explicitly; nothing but server/__main__.py
    imports the wiring (no service locator, no import cycle hidden behind TYPE_CHECKING)."""
    users = sorted(module for module, path in _modules() for _, name in _imports(path) if _within(name, ("server.api.app",)))
    assert users == ["server.__main__"]


def _docs_hooks():
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "scripts" / "docs_hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_setting_is_in_the_configuration_reference():
    """docs/configuration.md's table is generated from the settings' descriptions when the
    docs are built: every setting has one, and a row in the table the page shows."""
    from server.settings import Settings

    hooks = _docs_hooks()
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert hooks.MARKER in page
    shown = hooks.on_page_markdown(page)
    missing = [name for name, field in Settings.model_fields.items() if f"| `{hooks.variables(field, name)[0]}` |" not in shown]
    assert not missing, f"settings without a row in the configuration reference: {missing}"
    assert "| `AIHUB_DRAIN_SECONDS` | `30` | On SIGTERM" in shown  # the variable, its default, its description
    assert all(field.description for field in Settings.model_fields.values())


def test_the_job_config_reference_lists_every_field_and_hyperparameter():
    """docs/config-reference.md is generated from the protos and the algorithms' declarations."""
    from client import pb
    from trainers import algorithms

    hooks = _docs_hooks()
    shown = hooks.on_page_markdown((ROOT / "docs" / "config-reference.md").read_text())
    for field in pb.TrainingConfig.DESCRIPTOR.fields:
        assert f"| `{field.name}` |" in shown, field.name
    for field in pb.RayConfig.DESCRIPTOR.fields:
        assert f"| `ray_config.{field.name}` |" in shown, field.name
    for name in algorithms.ALL:
        assert f"### `{name}`" in shown
        for param in algorithms.get(name).params:
            assert f"| `{param}` |" in shown, (name, param)
    assert "| `learning_rate` | float | > 0 <= 1 | `0.1` |" in shown  # lgbm's range and default


def test_the_docs_home_page_is_the_readme():
    hooks = _docs_hooks()
    home = hooks.on_page_markdown((ROOT / "docs" / "index.md").read_text())
    assert home.startswith("# AI Hub Training") and "](docs/" not in home and "](getting-started.md)" in home


def test_the_readme_stays_short():
    words = len((ROOT / "README.md").read_text().split())
    assert words <= 1200, f"README.md has {words} words; reference material goes to docs/"


def test_the_api_never_runs_the_queues_unscoped_statements():
    """storage.queue works on any tenant's job by id (the dispatcher's claim, a Ray task's
    own job); request handlers reach tenant data only through the scoped repositories."""
    users = sorted(
        module
        for module, path in _modules()
        if _within(module, ("server.api",))
        for _, name in _imports(path)
        if _within(name, ("storage.queue",))
    )
    assert users == []
