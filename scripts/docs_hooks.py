"""mkdocs hooks (mkdocs.yml ``hooks:``): the configuration reference is generated from
``server/settings.py`` when the docs are built, so the table cannot drift from the code.

``<!-- settings-table -->`` in a page becomes a table of every setting: its environment
variable, its default and its field description. ``<!-- readme -->`` (the home page) becomes
README.md, so the two never say different things."""

from __future__ import annotations

from pathlib import Path
from typing import Any

MARKER = "<!-- settings-table -->"
README = "<!-- readme -->"  # the home page is the README, its links made relative to docs/
ROOT = Path(__file__).resolve().parent.parent


def _default(value: Any) -> str:
    if value is None or value == "":
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    if isinstance(value, Path):
        return f"`{value.as_posix()}`"
    return f"`{value}`"


def variables(field: Any, name: str) -> list[str]:
    """The environment variables a setting is read from (the first is the documented one)."""
    return list(getattr(field.validation_alias, "choices", None) or [f"AIHUB_{name.upper()}"])


def settings_table() -> str:
    from server.settings import Settings

    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        if not field.description:
            raise ValueError(f"setting {name} has no description: say what it does in server/settings.py")
        meaning = field.description.replace("|", "\\|")
        rows.append(f"| `{variables(field, name)[0]}` | {_default(field.default)} | {meaning} |")
    return "\n".join(rows) + "\n"


def readme() -> str:
    text = (ROOT / "README.md").read_text()
    return text.replace("](docs/", "](")


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    if README in markdown:
        markdown = markdown.replace(README, readme())
    return markdown.replace(MARKER, settings_table()) if MARKER in markdown else markdown
