"""JSON read into dataclasses, every field checked against its annotation.

The shape of a JSON document is declared once, as dataclasses whose fields are annotated with
``int``, ``float``, ``str``, ``bool``, ``dict[str, X]`` (its keys read as the first argument: a
``str`` or a checked one), ``list[X]``, ``X | None``, another such dataclass, ``Any``, or
``Annotated[X, Check(...)]`` for a constraint beyond the type (a sha256, a non-negative size,
one of a few names). ``read(cls, data)`` builds the dataclass or raises
``ShapeError`` saying where (``graphs.score.file``) what was expected and what was found: an
unknown or missing field, a wrong type, a failed check. A document that reads is one every later
``entry.field`` can trust.
"""

from __future__ import annotations

import functools
import reprlib
import types
import typing
from dataclasses import MISSING, dataclass, fields, is_dataclass
from typing import Annotated, Any, Callable, Union

_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "an object",
          list: "a list", type(None): "null"}
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60


@dataclass(frozen=True)
class Check:
    """A constraint on a value of the annotated type:
    ``Annotated[int, Check("a positive integer", lambda v: v > 0)]``."""

    description: str
    test: Callable[[Any], bool]


def one_of(names) -> Check:
    """The value is one of ``names``."""
    names = tuple(names)
    return Check(f"one of {list(names)}", lambda value: value in names)


class ShapeError(ValueError):
    """A JSON value is not of its declared shape (the message says where and why)."""


def read(cls, data, where: str = "", document: str = "the document"):
    """``cls`` (a dataclass) from the JSON object ``data``; ``where``: the object's path, for
    messages (``document`` names the whole, at the top)."""
    label = where or document
    if not isinstance(data, dict):
        raise ShapeError(f"{label} must be an object, got {_REPR.repr(data)}")
    declared, hints = _declared(cls)
    unknown = sorted(set(data) - {f.name for f in declared})
    if unknown:
        raise ShapeError(f"{label} has unknown fields {unknown}")
    missing = [f.name for f in declared
               if f.name not in data and f.default is MISSING and f.default_factory is MISSING]
    if missing:
        raise ShapeError(f"{label} lacks {missing}")
    return cls(**{name: _read(hints[name], value, f"{where}.{name}" if where else name)
                  for name, value in data.items()})


@functools.cache
def _declared(cls) -> tuple[list, dict]:
    """(the init fields, their evaluated annotations) of a dataclass: evaluated once."""
    return [f for f in fields(cls) if f.init], typing.get_type_hints(cls, include_extras=True)


def _read(annotation, value, where: str):
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin is Annotated:
        value = _read(args[0], value, where)
        for check in args[1:]:
            if not check.test(value):
                raise ShapeError(f"{where} must be {check.description}, got {_REPR.repr(value)}")
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in args:
            if option is not type(None):
                try:
                    return _read(option, value, where)
                except ShapeError:
                    continue
        raise ShapeError(f"{where} must be {describe(annotation)}, got {_REPR.repr(value)}")
    if is_dataclass(annotation):
        return read(annotation, value, where)
    kind = origin or annotation
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind not in _NAMES:
        raise TypeError(f"typed_json cannot read the annotation {annotation!r}")  # a declaration's mistake
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ShapeError(f"{where} must be {describe(annotation)}, got {_REPR.repr(value)}")
    if kind is dict and args:
        return {_read(args[0], key, f"{where}'s key {key!r}"): _read(args[1], item, f"{where}.{key}")
                for key, item in value.items()}
    if kind is list and args:
        return [_read(args[0], item, f"{where}[{i}]") for i, item in enumerate(value)]
    return value


def describe(annotation) -> str:
    """An annotation in words ("an integer or null")."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        return " and ".join(check.description for check in args[1:])
    if origin in (Union, types.UnionType):
        return " or ".join(describe(option) for option in args)
    if is_dataclass(annotation):
        return "an object"
    if origin is list and args:
        return f"a list (each {describe(args[0])})"
    if origin is dict and args:
        return f"an object (each value {describe(args[1])})"
    return _NAMES.get(origin or annotation, repr(annotation))
