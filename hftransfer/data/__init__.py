"""Data pipeline: raw splits -> label ids -> tokenized, length-annotated datasets."""

from __future__ import annotations

from dataclasses import dataclass, field

from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from hftransfer.config import DataConfig
from hftransfer.data.labels import LabelMap
from hftransfer.data.sources import DataError, load_splits
from hftransfer.data.text import DynamicPaddingCollator, encode_texts, tokenize_split


@dataclass
class PreparedData:
    train: Dataset
    validation: Dataset
    test: Dataset | None
    labels: LabelMap
    notes: dict = field(default_factory=dict)
    """Facts about the data for results.json (e.g. unreadable images skipped per split)."""


def prepare_text_data(config: DataConfig, tokenizer: PreTrainedTokenizerBase) -> PreparedData:
    """Load, check, label and tokenize every split; errors surface here, before any training."""
    splits = load_splits(config)
    labels = LabelMap.discover(splits["train"], config.label_column, config.label_names)
    if labels.num_labels < 2:
        raise DataError(f"Train has a single class {list(labels.names)}; classification needs at least two.")
    encoded = {
        name: tokenize_split(labels.encode(split, config.label_column, name), tokenizer, config, name)
        for name, split in splits.items()
    }
    return PreparedData(encoded["train"], encoded["validation"], encoded.get("test"), labels)


__all__ = [
    "DataError",
    "DynamicPaddingCollator",
    "LabelMap",
    "PreparedData",
    "encode_texts",
    "load_splits",
    "prepare_text_data",
    "tokenize_split",
]
