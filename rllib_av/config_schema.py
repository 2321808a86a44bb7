"""Typed, validated run configs: dataclasses in, one clear error line out.

Each config section is a dataclass owned by the package that uses it. Fields
carry their constraints in ``field(metadata=...)``:

    lr: float = field(default=3e-4, metadata=bounds(gt=0))
    traffic: str = field(default="light", metadata=choices("none", "light"))
    carla_root: Optional[str] = field(default=None, metadata=existing_path())

``from_dict`` walks the YAML mapping against those dataclasses and raises
``ConfigError`` naming the dotted key, the value and what is allowed, for the
first problem it meets: unknown keys, wrong types, out-of-range values,
missing files. Cross-field rules live in a section's ``check()`` method.

``load_yaml`` is the one YAML reader for run configs (files and ``--set``
values), ``dump_yaml`` its writer: PyYAML follows YAML 1.1, which reads
``1e-4`` as a string; these read it as the number every user of learning rates
means.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from typing import IO, Any, Dict, Literal, Mapping, Optional, Type, TypeVar, Union

import yaml

T = TypeVar("T")


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader whose floats follow YAML 1.2: an exponent needs no dot and no
    sign (``1e-4``, ``3E5``); YAML 1.1's forms still read as before."""


class _ConfigDumper(yaml.SafeDumper):
    """Quotes the strings ``_ConfigLoader`` would read as numbers (a run named
    "1e5"), so what is written reads back the same."""


for _cls in (_ConfigLoader, _ConfigDumper):
    _cls.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
        list("-+0123456789."),
    )


def load_yaml(source: Union[str, IO[str]]) -> Any:
    """Parse run-config YAML (a string or an open file); raises yaml.YAMLError."""
    return yaml.load(source, Loader=_ConfigLoader)


def dump_yaml(data: Any, stream: IO[str]) -> None:
    """Write ``data`` as run-config YAML that ``load_yaml`` reads back unchanged."""
    yaml.dump(data, stream, Dumper=_ConfigDumper, sort_keys=False)


class ConfigError(ValueError):
    """A user's config mistake; its message is the one line the user sees."""


def bounds(*, ge=None, gt=None, le=None, lt=None) -> Dict[str, Any]:
    """Field metadata: numeric range."""
    return {"bounds": {k: v for k, v in dict(ge=ge, gt=gt, le=le, lt=lt).items() if v is not None}}


def choices(*allowed: str) -> Dict[str, Any]:
    """Field metadata: value must be one of ``allowed``."""
    return {"choices": tuple(allowed)}


def existing_path() -> Dict[str, Any]:
    """Field metadata: value (when set) must name an existing file or folder."""
    return {"existing_path": True}


_OPS = {
    "ge": (lambda v, b: v >= b, ">="),
    "gt": (lambda v, b: v > b, ">"),
    "le": (lambda v, b: v <= b, "<="),
    "lt": (lambda v, b: v < b, "<"),
}


def _describe(tp) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if origin is dict:
        k, v = typing.get_args(tp)
        return f"a mapping of {_describe(k)} to {_describe(v)}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a finite number", bool: "true or false", str: "a string",
            type(None): "null"}.get(tp, getattr(tp, "__name__", str(tp)))


def _fail(key: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{key}: {value!r} is not allowed; expected {allowed}")


def _convert(tp, value: Any, key: str) -> Any:
    """Return ``value`` as type ``tp`` or raise ConfigError. No silent coercion
    except int -> float (YAML writes 1 for 1.0) and a whole float -> int
    (``total_env_steps: 1e6``)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, key)
            except ConfigError:
                pass
        raise _fail(key, value, _describe(tp))
    if origin is Literal:
        if value in typing.get_args(tp) and type(value) is not bool:
            return value
        raise _fail(key, value, _describe(tp))
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _fail(key, value, _describe(tp))
        item = typing.get_args(tp)[0]
        out = [_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _fail(key, value, _describe(tp))
        kt, vt = typing.get_args(tp)
        return {_convert(kt, k, key): _convert(vt, v, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _fail(key, value, "true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer() and abs(value) <= 2 ** 53:
            return int(value)
        raise _fail(key, value, "an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = float(value)
            if math.isfinite(value):
                return value
        raise _fail(key, value, _describe(float))
    if tp is str:
        if isinstance(value, str):
            return value
        raise _fail(key, value, "a string")
    raise TypeError(f"config schema: unsupported field type {tp!r} at {key}")


def _check_metadata(meta: Mapping[str, Any], value: Any, key: str) -> None:
    if value is None:
        return
    for op, bound in meta.get("bounds", {}).items():
        ok, sym = _OPS[op]
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if not ok(v, bound):
                raise _fail(key, value, f"a value {sym} {bound}")
    if "choices" in meta and value not in meta["choices"]:
        raise _fail(key, value, "one of " + ", ".join(meta["choices"]))
    if meta.get("existing_path") and not os.path.exists(os.path.expanduser(value)):
        raise ConfigError(f"{key}: {value!r} does not exist; expected an existing path")


def from_dict(cls: Type[T], data: Any, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a (YAML) mapping, validating every key."""
    where = prefix or "config"
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise _fail(where, data, "a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        k = unknown[0]
        raise ConfigError(
            f"{prefix + '.' if prefix else ''}{k}: unknown key; allowed keys here: "
            + ", ".join(sorted(fields))
        )
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name in data:
            value = _convert(hints[name], data[name], key)
            _check_metadata(f.metadata, value, key)
            kwargs[name] = value
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{key}: missing; this key is required")
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if check is not None:
        check()
    return obj


def to_dict(obj: Any) -> Dict[str, Any]:
    """The inverse of ``from_dict`` (for writing the resolved config to a run dir)."""
    return dataclasses.asdict(obj)


def override(data: Dict[str, Any], dotted: str) -> None:
    """Apply one ``a.b.c=value`` command-line override (value parsed as YAML)."""
    if "=" not in dotted:
        raise ConfigError(f"--set {dotted!r}: expected KEY=VALUE, e.g. training.gamma=0.98")
    key, raw = dotted.split("=", 1)
    node = data
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {p!r} is not a section")
    try:
        node[parts[-1]] = load_yaml(raw)
    except yaml.YAMLError:
        raise ConfigError(f"--set {key}: {raw!r} is not a valid YAML value")
