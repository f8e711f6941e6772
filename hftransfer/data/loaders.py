"""Data loaders for training and evaluation, shared by both loops."""

from __future__ import annotations

from collections.abc import Callable

from datasets import Dataset
from torch.utils.data import BatchSampler, DataLoader, Sampler
from transformers.trainer_pt_utils import LengthGroupedSampler

from hftransfer.config import DataConfig
from hftransfer.sampling import LengthBucketedBatchSampler, RandomBatchSampler


def train_batch_sampler(dataset: Dataset, config: DataConfig, batch_size: int, seed: int) -> Sampler[list[int]]:
    if config.batching == "length_bucketed":
        return LengthBucketedBatchSampler(dataset["length"], batch_size, seed=seed)
    if config.batching == "length_grouped":
        sampler = LengthGroupedSampler(batch_size, lengths=dataset["length"])
        return BatchSampler(sampler, batch_size, drop_last=False)
    return RandomBatchSampler(len(dataset), batch_size, seed=seed)


def eval_loader(dataset: Dataset, collate_fn: Callable, batch_size: int, num_workers: int = 0) -> DataLoader:
    """Batches of similar length (little padding), in a fixed order; `eval_order` restores row order."""
    order = sorted(range(len(dataset)), key=dataset["length"].__getitem__) if "length" in dataset.column_names else None
    batches = (
        [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        if order is not None
        else [list(range(i, min(i + batch_size, len(dataset)))) for i in range(0, len(dataset), batch_size)]
    )
    loader = DataLoader(dataset, batch_sampler=batches, collate_fn=collate_fn, num_workers=num_workers)
    loader.row_order = [i for batch in batches for i in batch]  # type: ignore[attr-defined]
    return loader
