"""Score a saved run on labelled data (`evaluate`) and label new texts (`predict`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
from datasets import Dataset

from hftransfer.data import DynamicPaddingCollator, load_splits, tokenize_split
from hftransfer.data.sources import DataError, single_file_split
from hftransfer.inference import dataset_logits
from hftransfer.metrics import classification_metrics, softmax
from hftransfer.saved import SavedRun


def evaluate_run(run: SavedRun, split: str = "validation", file: str | None = None, batch_size: int = 64) -> dict:
    """Metrics of the saved model on a split of its recipe's data, or on another labelled file."""
    data_config = run.config.data
    if file is not None:
        raw = single_file_split(file, data_config)
        name = file
    else:
        splits = load_splits(data_config, need_train=split == "train" or split == "validation")
        if split not in splits:
            raise DataError(f"No '{split}' split in the recipe's data; it has {sorted(splits)}.")
        raw, name = splits[split], split
    encoded = tokenize_split(run.labels.encode(raw, data_config.label_column, name), run.tokenizer, data_config, name)
    logits = dataset_logits(run.model, encoded, DynamicPaddingCollator(run.tokenizer), batch_size)
    return classification_metrics(encoded["labels"], logits, label_names=run.labels.names)


def predict_records(run: SavedRun, records: Iterable[str | dict], batch_size: int = 64) -> Iterator[dict]:
    """Label new inputs: plain strings, or dicts holding the recipe's text columns (sentence pairs).

    Yields one JSON-ready record per input: the inputs, the label, its id and every class's probability.
    """
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
