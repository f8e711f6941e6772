"""Score a saved run on labelled data (`evaluate`) and label new texts or images (`predict`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import numpy as np
from datasets import Dataset

from hftransfer.data.sources import DataError
from hftransfer.evaluation.inference import dataset_logits
from hftransfer.evaluation.metrics import classification_metrics, softmax
from hftransfer.models.tasks import get_task

if TYPE_CHECKING:
    from hftransfer.artifacts.saved import SavedRun
    from hftransfer.config.recipe import RunConfig


def split_rows(config: RunConfig, split: str = "validation") -> Dataset:
    """The raw rows of a split of a run's recipe data; an unknown split is a DataError (no model needed)."""
    # A recipe's own validation file needs no train split (a run that trained on a source only has none).
    held_out = split == "validation" and not (config.data.validation_file or config.data.validation_dir)
    splits = get_task(config.task).load_splits(config.data, need_train=split == "train" or held_out)
    if split not in splits:
        raise DataError(f"No '{split}' split in the recipe's data; it has {sorted(splits)}.")
    return splits[split]


def encode_run_split(
    run: SavedRun, split: str = "validation", file: str | None = None, rows: Dataset | None = None
) -> Dataset:
    """Model-ready rows of a split of the run's recipe data (`rows`: that split's raw rows, already read), or of
    another labelled file, encoded as the run was."""
    data_config = run.config.data
    task = get_task(run.config.task)
    if file is not None:
        raw = task.load_file(file, data_config)
        name = file
    else:
        raw, name = (rows if rows is not None else split_rows(run.config, split)), split
    return task.encode_split(raw, run.labels, data_config, name, run.tokenizer)


def evaluate_run(
    run: SavedRun, split: str = "validation", file: str | None = None, batch_size: int = 64, rows: Dataset | None = None
) -> dict:
    """Metrics of the saved model on a split of its recipe's data (`rows`: its raw rows when already read), or on
    another labelled file."""
    encoded = encode_run_split(run, split, file, rows)
    collator = get_task(run.config.task).collator(run.tokenizer, run.config.data)
    logits = dataset_logits(run.model, encoded, collator, batch_size, desc="evaluate")
    return classification_metrics(encoded["labels"], logits, label_names=run.labels.names)


def prediction_inputs(config: RunConfig, records: Iterable[str | dict]) -> tuple[Dataset, list[dict]]:
    """Raw rows for `predict` and what each output line repeats; records lacking the run's inputs are a DataError,
    found from the recipe alone (before the model loads)."""
    return get_task(config.task).prediction_rows(records, config.data)


def predict_records(
    run: SavedRun,
    records: Iterable[str | dict],
    batch_size: int = 64,
    inputs: tuple[Dataset, list[dict]] | None = None,
) -> Iterator[dict]:
    """Label new inputs: texts (plain strings, or dicts holding the recipe's text columns for sentence pairs), or
    for image runs image paths and folders (or dicts with an `image` path).

    Yields one JSON-ready record per input: the input, the label, its id and every class's probability. `inputs`:
    `prediction_inputs` of the records, when the caller checked them before loading the model.
    """
    task = get_task(run.config.task)
    rows, shown = inputs if inputs is not None else prediction_inputs(run.config, records)
    if not len(rows):
        return
    encoded = task.encode_inputs(rows, run.config.data, "predict", run.tokenizer)
    collator = task.collator(run.tokenizer, run.config.data)
    probabilities = softmax(dataset_logits(run.model, encoded, collator, batch_size, desc="predict"))
    for row, probs in zip(shown, probabilities, strict=True):
        best = int(np.argmax(probs))
        yield {
            **row,
            "label": run.labels.names[best],
            "label_id": best,
            "scores": {name: float(p) for name, p in zip(run.labels.names, probs, strict=True)},
        }
