"""The value rules a job config is declared with, each carrying the guide-shaped reason it
gives when a value does not fit, and the one mapping of pydantic's errors to violations.

A field of :mod:`trainers.spec.model` reads ``random_seed: Annotated[int, Whole(0, 2**31 - 1)] = 42``:
what it accepts, what it refuses and the words it refuses with are stated there, once. Every
rule checks the raw value itself (strictly: a boolean is not a number, 4.0 is not a whole
number, a string is not a list) and returns it in the model's form (tuples for lists).
"""

from __future__ import annotations

import math
import re
import types
import typing
from collections.abc import Callable, Collection, Iterable
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from trainers.errors import Violation, shown

NAME_RULE = "lower-case letters, digits and _"
IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")  # a column or table name (it reaches SQL)


def refuse(reason: str) -> PydanticCustomError:
    """The error a field's validator raises: ``reason`` is the violation's description as is
    (passed as context, so braces in it are not read as a template)."""
    return PydanticCustomError("aihub", "{reason}", {"reason": reason})


def Checked(check: Callable[[Any], Any], *, nullable: bool = False) -> BeforeValidator:  # noqa: N802 - a validator
    """A value read by ``check`` (which returns it in the model's form or raises ValueError(reason));
    the rules below are made of it."""

    def run(value: Any) -> Any:
        if nullable and value is None:
            return None
        try:
            return check(value)
        except ValueError as exc:  # the checks below raise ValueError(reason)
            raise refuse(str(exc)) from None

    return BeforeValidator(run)


# A field that must be given, whose rule words the refusal itself: ``x: Annotated[int, Whole(1, 20)] = REQUIRED``
# (its rules run right to left, so ``Annotated[str, Name(), Unset]`` reads "" as not given first).
REQUIRED: Any = Field(None, validate_default=True)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def Whole(low: int, high: int | None = None, *, unit: str = "", nullable: bool = False) -> BeforeValidator:  # noqa: N802 - a validator
    """A whole number in ``low..high`` (``>= low`` without a high)."""
    of = f" of {unit}" if unit else ""
    reason = f"must be a whole number{of} from {low} to {high}" if high is not None else f"must be a whole number{of} >= {low}"

    def check(value: Any) -> int:
        if not is_whole(value) or value < low or (high is not None and value > high):
            raise ValueError(reason)
        return int(value)

    return Checked(check, nullable=nullable)


def Number(  # noqa: N802 - a validator
    reason: str = "must be a number",
    *,
    above: float | None = None,
    below: float | None = None,
    low: float | None = None,
    high: float | None = None,
    nullable: bool = False,
) -> Any:
    """A finite number; ``above`` / ``below`` exclude their bound, ``low`` / ``high`` include theirs."""

    def check(value: Any) -> Any:
        if not is_number(value):
            raise ValueError(reason)
        outside = (above is not None and value <= above) or (below is not None and value >= below)
        if outside or (low is not None and value < low) or (high is not None and value > high):
            raise ValueError(reason)
        return value  # as given: a field typed int | float keeps 0 as 0 (its JSON, and the hash, unchanged)

    return Checked(check, nullable=nullable)


def OneOf(options: Collection[str] | Callable[[], Collection[str]], *, required: str = "") -> BeforeValidator:  # noqa: N802
    """One of ``options`` (or of what calling it gives, for a registry read when checked);
    ``required``: the reason for a missing or empty value ("{options}" lists them)."""

    def check(value: Any) -> str:
        known = options() if callable(options) else options
        listed = ", ".join(known)
        if not value and required:  # null, "", or any other empty value
            raise ValueError(required.replace("{options}", listed))
        if not isinstance(value, str) or value not in known:
            raise ValueError(f"{shown(value)} is not one of {listed}")
        return value

    return Checked(check)


def Name(what: str = "column", *, required: str | None = None, nullable: bool = False) -> BeforeValidator:  # noqa: N802 - a validator
    """A column or table name: a checked identifier (it reaches SQL)."""

    def check(value: Any) -> str:
        if not value and required is not None:  # null, "", or any other empty value
            raise ValueError(required)
        if not isinstance(value, str) or not IDENT.match(value):
            raise ValueError(f"{shown(value)} is not a {what} name ({NAME_RULE})")
        return value

    return Checked(check, nullable=nullable)


def Text(limit: int, *, required: bool = False, nullable: bool = False) -> BeforeValidator:  # noqa: N802 - a validator
    """Printable text of at most ``limit`` characters."""

    def check(value: Any) -> str:
        if (value is None or value == "") and required:
            raise ValueError("is required")
        if not isinstance(value, str) or len(value) > limit or not value.isprintable():
            raise ValueError(f"must be printable text of at most {limit} characters")
        return value

    return Checked(check, nullable=nullable)


def ListOf(*, reason: str = "must be a list", empty: str | None = None, nullable: bool = False) -> BeforeValidator:
    """A list, a tuple in the model (each item's problem at ``field[i]``); ``empty``: the
    reason a missing or empty list is refused with."""

    def check(value: Any) -> Any:
        if not value and empty is not None:  # null, [], or any other empty value
            raise ValueError(empty)
        if not isinstance(value, list | tuple):
            raise ValueError(reason)
        return tuple(value)

    return Checked(check, nullable=nullable)


# What the guide treats as not given: null or "" for a text (a proto string left empty),
# null or {} for a section (a proto message set but left empty).
Unset = BeforeValidator(lambda value: None if value is None or value == "" else value)
NoSection = BeforeValidator(lambda value: None if value is None or value == {} else value)
NoneIfEmpty = BeforeValidator(lambda value: value or None)  # any empty value (null, "", 0, [], {}) is not given


def flag(value: Any) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


Flag = Checked(flag)


class Section(BaseModel):
    """One object of the config: unknown fields refused, frozen once read."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# --- pydantic's errors as the guide's violations ----------------------------------------------------
def path_of(loc: Iterable[int | str]) -> str:
    """A location as the guide writes field paths: ``features[6]``, ``hyperparameters.learning_rate``
    (a caller's key cut to 60 characters)."""
    out = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for a dict key's own error
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{str(part)[:60]}" if out else str(part))
    return out


def _section_at(root: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model class a location falls in (for an unknown field's list of known ones)."""
    model: type[BaseModel] | None = root
    for part in loc:
        if model is None or isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        model = _model_in(field.annotation) if field is not None else None
    return model


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, Annotated):
        for arg in typing.get_args(annotation):
            if (found := _model_in(arg)) is not None:
                return found
    return None


def violations_of(exc: ValidationError, root: type[BaseModel]) -> list[Violation]:
    """Each of pydantic's errors as a violation at its guide path, in the model's field order.
    The types above give their own reasons; pydantic's own errors are worded here."""
    out = []
    for error in exc.errors(include_url=False, include_input=False):
        loc, kind = tuple(error["loc"]), error["type"]
        if kind == "aihub":
            reason = str((error.get("ctx") or {}).get("reason", error["msg"]))
        elif kind == "extra_forbidden":
            section = _section_at(root, loc[:-1])
            known = ", ".join(section.model_fields) if section is not None else ""
            where = path_of(loc[:-1]) or "the config"
            out.append(Violation(path_of(loc), f"is not a field of {where} ({known})"))
            continue
        elif kind == "missing":
            reason = "is required"
        elif kind in ("model_type", "model_attributes_type", "dict_type"):
            reason = "must be an object"
        elif kind in ("list_type", "tuple_type"):
            reason = "must be a list"
        elif kind == "bool_type":
            reason = "must be true or false"
        elif kind == "string_type":
            reason = "must be text"
        else:  # a type above always words its own refusal; this is pydantic's, lower-cased
            reason = error["msg"][:1].lower() + error["msg"][1:]
        out.append(Violation(path_of(loc), reason))
    return out
