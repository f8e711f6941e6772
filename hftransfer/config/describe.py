"""`hftransfer config`: a resolved recipe with every key's value, type, default and one-line help."""

from __future__ import annotations

import re
from typing import Any

import yaml

from hftransfer.config.recipe import RunConfig
from hftransfer.config.schema import field_help, is_schema, schema_fields, to_dict, type_label

MAX_KEY_COLUMN = 44


def resolved_yaml(config: RunConfig) -> str:
    """The recipe exactly as a run saves it (`recipe.yaml` in its output folder)."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def describe(config: RunConfig) -> str:
    """YAML that loads back as `config`, each key annotated `# type, default X: help`."""
    rows: list[tuple[str, str]] = []
    _rows(type(config), to_dict(config), to_dict(RunConfig()), 0, rows)
    width = min(max(len(left) for left, _ in rows), MAX_KEY_COLUMN)
    return "\n".join(f"{left:<{width}}  # {note}" if note else left for left, note in rows)


def _rows(cls: type, values: dict, defaults: dict, depth: int, rows: list[tuple[str, str]]) -> None:
    helps = field_help(cls)
    indent = "  " * depth
    for name, tp in schema_fields(cls).items():
        section = next((c for c in [tp, *getattr(tp, "__args__", ())] if is_schema(c)), None)
        value, default = values.get(name), defaults.get(name)
        if section is not None and isinstance(value, dict) and value:
            rows.append((f"{indent}{name}:", _first_sentence(helps.get(name, ""))))
            _rows(section, value, default if isinstance(default, dict) else {}, depth + 1, rows)
            continue
        note = f"{type_label(tp)}, default {_flow(default)}"
        help_line = _first_sentence(helps.get(name, ""))
        rows.append((f"{indent}{name}: {_flow(value)}", f"{note}: {help_line}" if help_line else note))


def _flow(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text.removesuffix("\n...").strip()


def _first_sentence(text: str) -> str:
    return re.split(r"(?<=\.)\s+(?=[A-Z])", text.strip(), maxsplit=1)[0]
