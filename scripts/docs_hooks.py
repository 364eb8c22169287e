"""mkdocs hooks (mkdocs.yml ``hooks:``): the configuration reference is generated from
``server/settings.py`` when the docs are built, so the table cannot drift from the code.

``<!-- settings-table -->`` in a page becomes a table of every setting: its environment
variable, its default and its field description. ``<!-- readme -->`` (the home page) becomes
README.md, so the two never say different things. ``<!-- config-reference -->`` becomes every
field of the job config and every algorithm's hyperparameters, from the protos and the
algorithms' own declarations."""

from __future__ import annotations

import json
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


CONFIG = "<!-- config-reference -->"


def _type(schema: dict[str, Any], schemas: dict[str, Any]) -> str:
    if "allOf" in schema:
        schema = schema["allOf"][0]
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        target = schemas[name]
        return f"one of {', '.join(v for v in target['enum'] if v == v.lower())}" if "enum" in target else "object"
    kind = schema.get("type", "any")
    if kind == "array":
        return f"list of {_type(schema.get('items', {}), schemas)}"
    return " or ".join(kind) if isinstance(kind, list) else str(kind)


def _config_rows(name: str, prefix: str, schemas: dict[str, Any]) -> list[str]:
    rows = []
    for field_name, schema in schemas[name]["properties"].items():
        path = prefix + field_name
        said = schema.get("description", "").replace("|", "\\|").replace("<", "&lt;")
        rows.append(f"| `{path}` | {_type(schema, schemas)} | {said} |")
        ref = (schema.get("allOf") or [schema])[0].get("$ref", "")
        nested = ref.rsplit("/", 1)[-1] if ref else ""
        if nested and "properties" in schemas.get(nested, {}):
            rows += _config_rows(nested, path + ".", schemas)
    return rows


def _range(param: Any) -> str:
    low, high = param.minimum, param.maximum
    parts = []
    if low is not None:
        parts.append(f"{'>' if param.exclusive_minimum else '>='} {low:g}")
    if high is not None:
        parts.append(f"<= {high:g}")
    if param.also:
        parts.append("or " + ", ".join(map(str, param.also)))
    if param.choices:
        parts.append("or " + ", ".join(param.choices))
    if param.nullable:
        parts.append("or null")
    return " ".join(parts)


def config_reference() -> str:
    """Every field of the job config (from the protos' comments, through the OpenAPI
    description), then every algorithm's hyperparameters (as the algorithms declare them)."""
    import importlib

    from trainers import algorithms

    spec = json.loads((ROOT / "client" / "_gen" / "openapi.json").read_text())
    schemas = spec["components"]["schemas"]
    out = ["| field | type | what it is, its default and limits |", "|---|---|---|", *_config_rows("TrainingConfig", "", schemas), ""]
    out += ["## Hyperparameters", "", "Given in `hyperparameters`; anything else is refused, naming the algorithm's own.", ""]
    for name in algorithms.ALL:
        algorithm = algorithms.get(name)
        defaults = getattr(importlib.import_module(type(algorithm).__module__), "DEFAULTS", {})
        out += [
            f"### `{name}` ({algorithm.library})",
            "",
            "| hyperparameter | type | allowed | default | meaning |",
            "|---|---|---|---|---|",
        ]
        for param_name, param in algorithm.params.items():
            default = f"`{defaults[param_name]}`" if param_name in defaults else "the library's"
            kind = f"{param.kind.__name__} (or a fraction in (0, 1])" if param.float_too else param.kind.__name__
            out.append(f"| `{param_name}` | {kind} | {_range(param)} | {default} | {param.help} |")
        out.append("")
    return "\n".join(out)


def readme() -> str:
    text = (ROOT / "README.md").read_text()
    return text.replace("](docs/", "](")


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    if CONFIG in markdown:
        markdown = markdown.replace(CONFIG, config_reference())
    if README in markdown:
        markdown = markdown.replace(README, readme())
    return markdown.replace(MARKER, settings_table()) if MARKER in markdown else markdown
