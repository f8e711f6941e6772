"""What data preparation hands to a strategy and a loop: encoded splits, the label map, and notes."""

from __future__ import annotations

from dataclasses import dataclass, field

from datasets import Dataset

from hftransfer.data.labels import LabelMap


@dataclass
class PreparedData:
    train: Dataset
    validation: Dataset
    test: Dataset | None
    labels: LabelMap
    notes: dict = field(default_factory=dict)
    """Facts about the data for results.json (e.g. unreadable images skipped per split)."""
