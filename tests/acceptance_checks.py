"""Reads the names of the walkthrough's checks (its CHECKS list) without importing it."""

from __future__ import annotations

import ast
from pathlib import Path


def check_names(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "CHECKS" for t in node.targets):
            return [elt.id for elt in node.value.elts]
    raise ValueError(f"no CHECKS list in {path}")
