"""Run-config sections: their base and one clear error line.

Each config section is a pydantic dataclass owned by the package that uses it,
derived from ``ConfigSection``; its fields carry their constraints and choices
the pydantic way, and the string right below a field is its description (in
the JSON Schema too):

    lr: StrictFloat = Field(3e-4, gt=0)
    traffic: Literal["none", "light"] = "light"

``from_dict`` validates a YAML mapping against a section and turns pydantic's
first error into one ``ConfigError`` line naming the dotted key, the value and
what is allowed: unknown keys (with the keys allowed there), wrong types,
out-of-range values, missing files, cross-field rules.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Dict, Literal, Type, TypeVar, Union

from pydantic import (ConfigDict, TypeAdapter, ValidationError, ValidationInfo,
                      field_validator)
from pydantic.dataclasses import dataclass

T = TypeVar("T")


class ConfigError(ValueError):
    """A user's config mistake; its message is the one line the user sees."""


@dataclass(config=ConfigDict(extra="forbid", allow_inf_nan=False,
                             use_attribute_docstrings=True))
class ConfigSection:
    """Base of every run-config section (a pydantic dataclass): unknown keys and
    inf/nan are refused, field docstrings are descriptions. Leaves are
    pydantic's strict types (``StrictInt``, ``StrictFloat``, which also takes
    an int, ``StrictBool``, ``StrictStr``, ``Literal`` choices), so "3", 1.5 or
    true are not an integer. Cross-field rules are
    ``model_validator(mode="after")`` methods that raise ConfigError."""

    @field_validator("*", mode="before")
    @classmethod
    def _whole_numbers_as_integers(cls, value: Any, info: ValidationInfo) -> Any:
        """YAML writes ``total_env_steps: 1e6`` as a float: for an integer key
        (or a list of them) a whole one is that integer."""
        if _holds_int(cls.__pydantic_fields__[info.field_name].annotation):
            if isinstance(value, list):
                return [_whole_as_int(v) for v in value]
            return _whole_as_int(value)
        return value


def _holds_int(tp: Any) -> bool:
    return tp is int or any(_holds_int(a) for a in typing.get_args(tp))


def _whole_as_int(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2 ** 53:
        return int(value)
    return value


def from_dict(cls: Type[T], data: Any, prefix: str = "") -> T:
    """Build section ``cls`` from a (YAML) mapping; the first problem is one
    ConfigError line naming the dotted key, the value and what is allowed."""
    try:
        return TypeAdapter(cls).validate_python({} if data is None else data)
    except ValidationError as e:
        raise ConfigError(_one_line(cls, data, e.errors()[0], prefix)) from None


_BOUNDS = {"greater_than_equal": ("ge", ">="), "greater_than": ("gt", ">"),
           "less_than_equal": ("le", "<="), "less_than": ("lt", "<")}


def _one_line(cls: type, data: Any, error: Dict[str, Any], prefix: str) -> str:
    kind, value = error["type"], error["input"]
    rule = error.get("ctx", {}).get("error")
    if isinstance(rule, ConfigError):  # a cross-field rule names its keys itself
        return str(rule)
    key, tp, section, in_list, value_there = _locate(cls, data, error["loc"], prefix)
    if _is_union(_strip(tp)):
        return _not_allowed(key, value_there, _describe(tp, bounds=True))
    if kind == "unexpected_keyword_argument":
        return (f"{key}: unknown key; allowed keys here: "
                + ", ".join(sorted(section.__pydantic_fields__)))
    if kind in ("missing", "missing_argument"):
        return f"{key}: missing; this key is required"
    if kind in _BOUNDS:
        name, symbol = _BOUNDS[kind]
        if in_list is not None:  # a bound holds for every item: the list is the value
            key, value = in_list
        return _not_allowed(key, value, f"a value {symbol} {_number(error['ctx'][name])}")
    if kind.endswith("_type") or kind in ("literal_error", "finite_number"):
        return _not_allowed(key, value, _describe(tp))
    # A leaf's own check (PydanticCustomError): its message says what is wrong.
    return f"{key}: {value!r} {error['msg']}"


def _not_allowed(key: str, value: Any, allowed: str) -> str:
    return f"{key}: {value!r} is not allowed; expected {allowed}"


def _number(bound: Any) -> Any:
    return int(bound) if isinstance(bound, float) and bound.is_integer() else bound


def _locate(cls: type, data: Any, loc: tuple, prefix: str) -> tuple:
    """(dotted key, its type, the innermost section, (key, value) of the list
    when it is a list item, the value there) that pydantic's ``loc`` points at
    in ``data``. It stops at a union (a number or a list of them): pydantic
    reports each member's complaint, the user needs the value judged whole."""
    key, tp, section, in_list = prefix, cls, cls, None
    for part in loc:
        tp, in_list = _strip(tp), None
        if _is_union(tp):
            break
        fields = getattr(tp, "__pydantic_fields__", None)
        if fields is not None and isinstance(part, str):
            section, key = tp, f"{key}.{part}" if key else part
            tp = fields[part].annotation if part in fields else None
            data = data.get(part) if isinstance(data, dict) else None
        elif isinstance(part, int) and typing.get_origin(tp) in (list, tuple):
            in_list = (key, data)
            key, tp = f"{key}[{part}]", typing.get_args(tp)[0]
            data = data[part] if isinstance(data, (list, tuple)) else None
        elif isinstance(part, str) and typing.get_origin(tp) is dict:
            key, tp = f"{key}.{part}", typing.get_args(tp)[1]
            data = data.get(part) if isinstance(data, dict) else None
    return key or "config", tp, section, in_list, data


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _strip(tp: Any) -> Any:
    """``X`` of ``Annotated[X, ...]`` and of ``Optional[X]``."""
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (Union, types.UnionType) and len(args) == 1:
        return _strip(args[0])
    return tp


def _describe(tp: Any, bounds: bool = False) -> str:
    """What a value of type ``tp`` may be, in a user's words; with ``bounds``,
    a number's ``Field`` bounds too (a union's members carry their own)."""
    limits = []
    while typing.get_origin(tp) is Annotated:
        tp, *metadata = typing.get_args(tp)
        for meta in metadata:
            for rule in getattr(meta, "metadata", [meta]):
                limits += [f"{symbol} {_number(getattr(rule, name))}"
                           for name, symbol in _BOUNDS.values() if hasattr(rule, name)]
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a, bounds) for a in typing.get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        return f"a list of {_describe(typing.get_args(tp)[0], bounds)}"
    if origin is dict:
        k, v = typing.get_args(tp)
        return f"a mapping of {_describe(k, bounds)} to {_describe(v, bounds)}"
    if hasattr(tp, "__pydantic_fields__"):
        return "a mapping"
    name = {int: "an integer", float: "a finite number", bool: "true or false", str: "a string",
            type(None): "null"}.get(tp, getattr(tp, "__name__", str(tp)))
    return f"{name} {' and '.join(limits)}" if bounds and limits else name
