"""Checks of `evaluate --file` and `predict --file` inputs that need only the file and the run's recipe, so a bad
file is reported (file, line, what the run expects) before the model loads."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from hftransfer.config.files import read_user_text
from hftransfer.data.sources import DataError

if TYPE_CHECKING:
    from hftransfer.config.recipe import RunConfig


def expected_columns(config: RunConfig) -> tuple[list[str], str]:
    """The input columns a run reads and its label column."""
    from hftransfer.models.tasks import IMAGE

    data = config.data
    inputs = [data.images.column or "image"] if config.task == IMAGE else list(data.text_columns)
    return inputs, data.label_column


def check_evaluate_file(output_dir: str, path: str) -> None:
    """`evaluate OUTPUT --file PATH`: a readable file with the columns the run reads, before its model loads."""
    from hftransfer.artifacts.saved import read_recipe
    from hftransfer.data.files import check_data_file
    from hftransfer.data.sources import single_file_split

    facts = check_data_file(path, "--file")
    config = read_recipe(output_dir)  # the saved recipe only: no model loads
    if facts is not None and facts.columns:
        inputs, label = expected_columns(config)
        needed = [*inputs, label]
        missing = [c for c in needed if c not in facts.columns]
        if missing:
            raise DataError(
                f"--file {path} lacks the column{'s' if len(missing) > 1 else ''} {missing}: this run reads {needed} "
                f"(inputs, then label) and the file has {facts.columns}; rename the file's columns."
            )
    single_file_split(path, config.data)  # rows without a label, and what the file checks left to datasets


def check_predict_file(path: str) -> None:
    """`predict OUTPUT --file PATH`: an existing UTF-8 file whose `{...}` lines are valid JSON (before any model)."""
    text = read_user_text(path, f"--file {path}", "a text file (one text per line) or JSONL records", DataError)
    for _ in parse_input_lines(text.splitlines(), f"--file {path}"):
        pass


def parse_input_lines(lines: Iterable[str], where: str) -> Iterator[str | dict]:
    """Texts, or JSON records for lines starting with `{`; a broken record names its line."""
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\n")
        if not line.strip():
            continue
        if not line.lstrip().startswith("{"):
            yield line
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(
                f"{where} line {number} starts with '{{' but is not valid JSON ({err.msg}); fix the record, "
                "or give plain texts one per line."
            ) from err
        yield record
