"""What data preparation hands to a strategy and a loop: encoded splits, the label map, and notes."""

from __future__ import annotations

from dataclasses import dataclass, field

from datasets import Dataset, DatasetDict

from hftransfer.data.labels import LabelMap

AUGMENT_COLUMN = "augment"
"""Marks training rows whose inputs are drawn anew every epoch (image augmentation)."""


@dataclass
class PreparedData:
    train: Dataset
    validation: Dataset
    test: Dataset | None
    labels: LabelMap
    notes: dict = field(default_factory=dict)
    """Facts about the data for results.json (e.g. unreadable images skipped per split)."""
    raw: DatasetDict | None = None
    """The splits before encoding (texts or image references, original label column), row for row: what another
    encoding of the same rows starts from (a distillation teacher with its own tokenizer)."""

    @property
    def train_inputs_vary(self) -> bool:
        """Whether training inputs change between epochs, so nothing computed from them once can be reused."""
        return AUGMENT_COLUMN in self.train.column_names
