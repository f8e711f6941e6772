"""Read a recipe file, failing in one line that names the file (and the YAML line) instead of a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from hftransfer.config.schema import ConfigError


def read_user_text(path: str | Path, name: str, give: str, error: type[Exception]) -> str:
    """A text file the user named, decoded as UTF-8; a folder, a missing file or other bytes raise `error`
    with `name` (how the message calls the file) and `give` (what to give instead)."""
    file = Path(path)
    if file.is_dir():
        raise error(f"{name} is a folder; give {give}.")
    if not file.is_file():
        raise error(f"{name} does not exist.")
    raw = file.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise error(f"{name}: line {line} is not UTF-8 text; re-save the file as UTF-8.") from err


def read_recipe_tree(path: str | Path) -> dict[str, Any]:
    """The recipe's mapping of keys; a missing file, folder, non-UTF-8 bytes, bad YAML or a non-mapping: ConfigError."""
    text = read_user_text(path, f"Recipe {path}", "a YAML file", ConfigError)
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
