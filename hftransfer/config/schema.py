"""Turn plain dicts (YAML, CLI overrides) into typed dataclasses, failing loudly.

Dataclasses are the schema; this module is the one place that checks values against them,
so an unknown key or a wrongly typed value stops the run before any model loads.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import inspect
import itertools
import math
import textwrap
import types
from collections.abc import Callable
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from hftransfer.errors import UserError

T = TypeVar("T")


class ConfigError(UserError):
    """A recipe or override that does not fit the schema."""


_UNKNOWN_KEY_HINTS: list[Callable[[str, str, type], str]] = []
"""What an unknown key probably meant; `config.aliases` registers its hint (TrainingArguments names, close keys)
here, so this module imports nothing above it."""


def register_unknown_key_hint(hint: Callable[[str, str, type], str]) -> None:
    _UNKNOWN_KEY_HINTS[:] = [hint]


def _unknown_key(full: str, key: str, cls: type) -> ConfigError:
    hint = _UNKNOWN_KEY_HINTS[0](full, key, cls) if _UNKNOWN_KEY_HINTS else ""
    return ConfigError(f"Unknown config key '{full}'.{hint}")


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def type_label(tp: Any) -> str:
    """A type as a recipe writer reads it: `int | null`, `'cls' | 'mean'`, `list[str]`, `mapping`."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join("null" if a is type(None) else type_label(a) for a in args)
    if origin in (list, tuple):
        return f"list[{type_label(args[0])}]" if args else "list"
    if origin is dict:
        return "mapping"
    if tp is Any:
        return "any"
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def schema_fields(cls: type) -> dict[str, Any]:
    """Field name -> type of a schema class: a dataclass, or a class that lists its fields (`schema_fields()`)."""
    if hasattr(cls, "schema_fields"):
        return cls.schema_fields()
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def is_schema(tp: Any) -> bool:
    return isinstance(tp, type) and (dataclasses.is_dataclass(tp) or hasattr(tp, "schema_fields"))


def _coerce(value: Any, tp: Any, path: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, path)
            except ConfigError:
                continue
        raise ConfigError(f"'{path}' expects {_type_name(tp)}, got {value!r}.")
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise ConfigError(f"'{path}' must be one of {_type_name(tp)}, got {value!r}.")
    if origin in (list, tuple):
        (item_type, *_) = get_args(tp) or (Any,)
        if isinstance(value, str) and item_type is str:
            value = [value]  # `text_columns=sentence` on the command line means a one-item list
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"'{path}' expects a list, got {value!r}.")
        return [_coerce(v, item_type, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"'{path}' expects a mapping, got {value!r}.")
        return dict(value)
    if is_schema(tp):
        return from_dict(tp, value, path)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"'{path}' expects true or false, got {value!r}.")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"'{path}' expects an integer, got {value!r}.")
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML reads `1e-4` (no dot) as a string
            with contextlib.suppress(ValueError):
                number = float(value)
        if number is None:
            raise ConfigError(f"'{path}' expects a number, got {value!r}.")
        if not math.isfinite(number):
            raise ConfigError(f"'{path}' expects a finite number, got {value!r}.")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"'{path}' expects a string, got {value!r}.")
    raise ConfigError(f"'{path}' has an unsupported schema type {tp!r}.")


def from_dict(cls: type[T], data: Any, path: str = "") -> T:
    """Build dataclass `cls` from `data`, rejecting unknown keys with the closest valid one."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"'{path or cls.__name__}' expects a mapping of keys, got {data!r}.")
    fields = schema_fields(cls)
    kwargs = {}
    for key, value in data.items():
        full = f"{path}.{key}" if path else str(key)
        if key not in fields:
            raise _unknown_key(full, str(key), cls)
        kwargs[key] = _coerce(value, fields[key], full)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"'{path or cls.__name__}': {err}") from err


def to_dict(obj: Any) -> Any:
    """The plain-data view of a config, suitable for YAML/JSON."""
    if is_schema(type(obj)):
        return {name: to_dict(getattr(obj, name)) for name in schema_fields(type(obj))}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def set_dotted(tree: dict, dotted_key: str, value: Any, schema: type | None = None) -> None:
    """Set `a.b.c=value` inside nested dicts, checking each key against `schema` as it goes."""
    parts = dotted_key.split(".")
    node, cls, walked = tree, schema, []
    for part in parts[:-1]:
        walked.append(part)
        cls = _child_schema(cls, part, ".".join(walked))
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    _child_schema(cls, parts[-1], dotted_key)
    node[parts[-1]] = value


def _child_schema(cls: type | None, key: str, full: str) -> type | None:
    if cls is None:
        return None
    fields = schema_fields(cls)
    if key not in fields:
        raise _unknown_key(full, key, cls)
    hint = fields[key]
    return next((c for c in [hint, *get_args(hint)] if is_schema(c)), None)


def field_help(cls: type) -> dict[str, str]:
    """Field name -> the first line of the docstring written under it (the recipe's help text); `{}` when the
    source cannot be read. A class may give its own (`field_help()`)."""
    if hasattr(cls, "field_help"):
        return cls.field_help()
    helps: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, after in itertools.pairwise(body):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                helps[node.target.id] = " ".join(after.value.value.split("\n\n")[0].split())
    return helps


def schema_defaults(cls: type) -> dict[str, Any]:
    """Field name -> default value (plain data), from a default-built instance."""
    return to_dict(cls())


__all__ = [
    "ConfigError",
    "field_help",
    "from_dict",
    "is_schema",
    "schema_defaults",
    "schema_fields",
    "set_dotted",
    "to_dict",
    "type_label",
]
