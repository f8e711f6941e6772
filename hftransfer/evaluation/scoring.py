"""Score a saved run on labelled data (`evaluate`) and label new texts or images (`predict`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
from datasets import Dataset

from hftransfer.artifacts.saved import SavedRun
from hftransfer.data import DynamicPaddingCollator, tokenize_split
from hftransfer.data.sources import DataError
from hftransfer.evaluation.inference import dataset_logits
from hftransfer.evaluation.metrics import classification_metrics, softmax
from hftransfer.models.tasks import IMAGE, get_task


def encode_run_split(run: SavedRun, split: str = "validation", file: str | None = None) -> Dataset:
    """Model-ready rows of a split of the run's recipe data, or of another labelled file, encoded as the run was."""
    data_config = run.config.data
    task = get_task(run.config.task)
    if file is not None:
        raw = task.load_file(file, data_config)
        name = file
    else:
        splits = task.load_splits(data_config, need_train=split == "train" or split == "validation")
        if split not in splits:
            raise DataError(f"No '{split}' split in the recipe's data; it has {sorted(splits)}.")
        raw, name = splits[split], split
    return task.encode_split(raw, run.labels, data_config, name, run.tokenizer)


def evaluate_run(run: SavedRun, split: str = "validation", file: str | None = None, batch_size: int = 64) -> dict:
    """Metrics of the saved model on a split of its recipe's data, or on another labelled file."""
    encoded = encode_run_split(run, split, file)
    collator = get_task(run.config.task).make_collator(run.tokenizer, run.config.data)
    logits = dataset_logits(run.model, encoded, collator, batch_size)
    return classification_metrics(encoded["labels"], logits, label_names=run.labels.names)


def predict_records(run: SavedRun, records: Iterable[str | dict], batch_size: int = 64) -> Iterator[dict]:
    """Label new inputs: plain strings, or dicts holding the recipe's text columns (sentence pairs).

    Yields one JSON-ready record per input: the inputs, the label, its id and every class's probability.
    Image runs take image paths and folders (or dicts with an `image` path) instead.
    """
    if run.config.task == IMAGE:
        yield from predict_images(run, records, batch_size)
        return
    columns = run.config.data.text_columns
    rows = [r if isinstance(r, dict) else {columns[0]: r} for r in records]
    if not rows:
        return
    for column in columns:
        bad = [i for i, row in enumerate(rows) if not isinstance(row.get(column), str)]
        if bad:
            raise DataError(f"Inputs {bad[:5]} have no text in '{column}'; this model reads the columns {columns}.")
    table = Dataset.from_dict({c: [row[c] for row in rows] for c in columns})
    encoded = tokenize_split(table, run.tokenizer, run.config.data, "predict")
    probabilities = softmax(dataset_logits(run.model, encoded, DynamicPaddingCollator(run.tokenizer), batch_size))
    for row, probs in zip(rows, probabilities, strict=True):
        best = int(np.argmax(probs))
        yield {
            **{c: row[c] for c in columns},
            "label": run.labels.names[best],
            "label_id": best,
            "scores": {name: float(p) for name, p in zip(run.labels.names, probs, strict=True)},
        }


def predict_images(run: SavedRun, records: Iterable[str | dict], batch_size: int = 64) -> Iterator[dict]:
    """Label image files (folders expand to the images inside them), in the order given."""
    from hftransfer.data.images import IMAGE_COLUMN, ImageCollator, expand_image_paths, image_table

    given = [r[IMAGE_COLUMN] if isinstance(r, dict) and IMAGE_COLUMN in r else r for r in records]
    bad = [i for i, item in enumerate(given) if not isinstance(item, str)]
    if bad:
        raise DataError(f'Inputs {bad[:5]} are not image paths; give files, folders or {{"image": path}} records.')
    paths = expand_image_paths(given)
    if not paths:
        return
    logits = dataset_logits(run.model, image_table(paths), ImageCollator(run.tokenizer), batch_size)
    for path, probs in zip(paths, softmax(logits), strict=True):
        best = int(np.argmax(probs))
        yield {
            IMAGE_COLUMN: path,
            "label": run.labels.names[best],
            "label_id": best,
            "scores": {name: float(p) for name, p in zip(run.labels.names, probs, strict=True)},
        }
