"""Text inputs: column checks, cached tokenization, and dynamic padding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from datasets import Dataset, DatasetDict
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from hftransfer.config.recipe import DataConfig
from hftransfer.data.labels import LabelMap, require_columns, require_two_classes
from hftransfer.data.prepared import PreparedData
from hftransfer.data.sources import DataError, load_splits
from hftransfer.errors import UserError


def check_text_columns(split: Dataset, config: DataConfig, split_name: str) -> None:
    require_columns(split, config.text_columns, split_name, "data.text_columns")
    for column in config.text_columns:
        dtype = getattr(split.features[column], "dtype", None)
        if dtype not in ("string", "large_string"):
            raise DataError(
                f"Column '{column}' ({split_name}) holds {dtype or split.features[column]}, not text. "
                "Point data.text_columns at string columns."
            )
        missing = split.data.column(column).null_count
        if missing:
            raise DataError(f"Column '{column}' ({split_name}) has {missing} empty (null) rows; drop or fill them.")


def encode_texts(
    tokenizer: PreTrainedTokenizerBase, columns: Sequence[Sequence[str]], config: DataConfig
) -> dict[str, list]:
    """Tokenize one or two parallel lists of texts (joined when the config says so), unpadded."""
    if config.join_text_columns_with is not None and len(columns) > 1:
        columns = [[config.join_text_columns_with.join(parts) for parts in zip(*columns, strict=True)]]
    max_length = min(config.max_length, tokenizer.model_max_length)
    encoded = tokenizer(*columns, truncation=True, max_length=max_length)
    encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
    return dict(encoded)


def tokenize_split(split: Dataset, tokenizer: PreTrainedTokenizerBase, config: DataConfig, name: str) -> Dataset:
    """Tokenize once; `datasets` caches the result on disk keyed by data, tokenizer and settings."""
    check_text_columns(split, config, name)
    text_columns = list(config.text_columns)

    def encode(batch: dict[str, list]) -> dict[str, list]:
        return encode_texts(tokenizer, [batch[c] for c in text_columns], config)

    drop = [c for c in split.column_names if c != "labels"]
    return split.map(encode, batched=True, remove_columns=drop, desc=f"Tokenizing {name}")


class DynamicPaddingCollator:
    """Pad each batch to its own longest sequence; drop the bookkeeping `length` column.

    Columns the tokenizer does not know (e.g. cached `teacher_logits`, one fixed-size float vector per
    row) are stacked as they are instead of going through padding.
    """

    _PADDED = ("labels", "label", "label_ids")

    def __init__(self, tokenizer: PreTrainedTokenizerBase, pad_to_multiple_of: int | None = None) -> None:
        self._pad = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of)
        self._inputs = set(tokenizer.model_input_names) | set(self._PADDED)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        extra = [k for k in features[0] if k not in self._inputs and k != "length"] if features else []
        padded = dict(self._pad([{k: v for k, v in f.items() if k in self._inputs} for f in features]))
        for key in extra:
            padded[key] = torch.as_tensor([f[key] for f in features])
        return padded


def prepare_text_data(
    config: DataConfig, tokenizer: PreTrainedTokenizerBase, raw: DatasetDict | None = None
) -> PreparedData:
    """Load (unless `raw` splits are given), check, label and tokenize every split, before any training."""
    splits = load_splits(config) if raw is None else raw
    labels = require_two_classes(LabelMap.discover(splits["train"], config.label_column, config.label_names), "Train")
    encoded = {
        name: tokenize_split(labels.encode(split, config.label_column, name), tokenizer, config, name)
        for name, split in splits.items()
    }
    return PreparedData(encoded["train"], encoded["validation"], encoded.get("test"), labels, raw=splits)


# Sample texts that tell tokenizers apart: casing, accents, digits, punctuation, rare words.
TOKENIZER_PROBES = (
    "Hello World! It's a GREAT film, isn't it?",
    "Café naïve résumé — 12,345.67 % #hashtag @user",
    "unbelievably overhyped antidisestablishmentarianism",
)


def tokenizer_difference(
    student: PreTrainedTokenizerBase, other: PreTrainedTokenizerBase | None, name: str, max_length: int
) -> str | None:
    """None when `other` (e.g. a teacher's) reads the student's token ids as they are, else what differs."""
    if other is None:
        raise UserError(
            f"'{name}' has no tokenizer files, so its tokenization cannot be checked against the student's. "
            "Save its tokenizer in its folder (hftransfer output folders have it)."
        )
    if student.get_vocab() != other.get_vocab():
        return "different vocabularies"
    if any(student(text)["input_ids"] != other(text)["input_ids"] for text in TOKENIZER_PROBES):
        return "different normalization (casing/accents)"
    if min(max_length, other.model_max_length) < min(max_length, student.model_max_length):
        return f"the teacher reads at most {other.model_max_length} tokens"
    return None
