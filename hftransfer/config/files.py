"""Read a recipe file, failing in one line that names the file (and the YAML line) instead of a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from hftransfer.config.schema import ConfigError


def read_recipe_tree(path: str | Path) -> dict[str, Any]:
    """The recipe's mapping of keys; a missing file, folder, non-UTF-8 bytes, bad YAML or a non-mapping: ConfigError."""
    file = Path(path)
    if file.is_dir():
        raise ConfigError(f"Recipe {path} is a folder; give a YAML file.")
    if not file.is_file():
        raise ConfigError(f"Recipe {path} does not exist.")
    raw = file.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ConfigError(f"Recipe {path}: line {line} is not UTF-8 text; re-save the file as UTF-8.") from err
    try:
        tree = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "somewhere"
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ConfigError(f"Recipe {path}: YAML syntax error at {where} ({problem}); fix that line.") from err
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: a recipe is a mapping of keys, got {type(tree).__name__}.")
    return tree
