"""JSON parsed strictly and read into dataclasses, every field checked against its annotation.

``parse(data)`` is the one JSON parser of what an engine directory holds: UTF-8 text, one JSON
value, nothing JSON does not define (NaN, Infinity, a number that overflows a double), no key
twice in an object, no string that is not Unicode text (a lone surrogate escaped as ``\ud800``,
which no file name can encode), integers of at most ``MAX_INT_DIGITS`` digits and at most
``MAX_DEPTH`` levels of nesting (whatever the interpreter's own limits); a ``ParseError`` saying
what is wrong otherwise, never another exception.

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
import json
import math
import reprlib
import types
import typing
from dataclasses import MISSING, dataclass, fields, is_dataclass
from typing import Annotated, Any, Callable, Union

_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "an object",
          list: "a list", type(None): "null"}
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
# Arrays and objects nested in one another (a manifest nests 5 deep): deeper documents are refused
# before anything recurses through them (json's own parser raises RecursionError near 1000, copying
# or writing one back well before).
MAX_DEPTH = 32
# The digits of an integer (CPython's default limit on int(str), whose ValueError json.loads raises;
# fixed here so that a raised sys.set_int_max_str_digits does not make parsing quadratic).
MAX_INT_DIGITS = 4300


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


class ParseError(ValueError):
    """Bytes that are not a JSON document ``parse`` reads (the message says why)."""


def parse(data: bytes):
    """The JSON value in ``data`` (UTF-8), parsed strictly (see the module docstring), or a ``ParseError``."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ParseError(f"not UTF-8 text ({err})") from None
    try:
        value = json.loads(text, object_pairs_hook=_object, parse_constant=_constant, parse_float=_number,
                           parse_int=_integer)
    except RecursionError:
        raise ParseError(f"nested deeper than {MAX_DEPTH} levels") from None
    except ParseError:
        raise
    except ValueError as err:  # json.JSONDecodeError, and whatever int() or float() refuses
        raise ParseError(f"not JSON ({err})") from None
    _check_value(value)
    return value


def _object(pairs: list) -> dict:
    found = {}
    for key, value in pairs:
        if key in found:
            raise ParseError(f"the key {_REPR.repr(key)} appears twice in one object")
        found[key] = value
    return found


def _constant(name: str):
    raise ParseError(f"{name} is not a JSON number")


def _number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ParseError(f"the number {_REPR.repr(text)} overflows a double")
    return value


def _integer(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise ParseError(f"an integer of {digits} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _check_value(value) -> None:
    """A ``ParseError`` if ``value`` nests arrays and objects more than ``MAX_DEPTH`` deep or holds
    a string (or key) that is not Unicode text (iterative: no recursion on what is checked)."""
    stack = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            _check_text(node)
        elif isinstance(node, (dict, list)):
            if depth + 1 > MAX_DEPTH:
                raise ParseError(f"nested deeper than {MAX_DEPTH} levels")
            for key in node if isinstance(node, dict) else ():
                _check_text(key)
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ParseError(f"the string {_REPR.repr(text)} is not Unicode text (a lone surrogate)") from None


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
        options = [option for option in args if option is not type(None)]
        if len(options) == 1 and is_dataclass(options[0]):  # an optional object: say what is wrong inside it
            return read(options[0], value, where)
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
        try:
            return float(value)
        except OverflowError:  # an integer beyond a double (10**400)
            raise ShapeError(f"{where} must be a number a double holds, got {_REPR.repr(value)}") from None
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
