"""Data loaders for training and evaluation, shared by both loops."""

from __future__ import annotations

from collections.abc import Callable

import torch
from datasets import Dataset
from torch.utils.data import BatchSampler, DataLoader, Sampler
from transformers.trainer_pt_utils import LengthGroupedSampler

from hftransfer.config.recipe import DataConfig
from hftransfer.data.sampling import LengthBucketedBatchSampler, RandomBatchSampler, ShardedBatches, WeightedRows


def train_batch_sampler(dataset: Dataset, config: DataConfig, batch_size: int, seed: int) -> Sampler[list[int]]:
    if "length" not in dataset.column_names:  # images: every input has the same size, nothing to bucket
        return RandomBatchSampler(len(dataset), batch_size, seed=seed)
    if config.batching == "length_bucketed":
        return LengthBucketedBatchSampler(dataset["length"], batch_size, seed=seed)
    if config.batching == "length_grouped":
        sampler = LengthGroupedSampler(batch_size, lengths=dataset["length"])
        return BatchSampler(sampler, batch_size, drop_last=False)
    return RandomBatchSampler(len(dataset), batch_size, seed=seed)


def train_loader(
    dataset: Dataset,
    config: DataConfig,
    batch_size: int,
    seed: int,
    collate_fn: Callable,
    num_workers: int = 0,
    *,
    num_processes: int = 1,
    process_index: int = 0,
    accumulation: int = 1,
) -> DataLoader:
    """Training batches for both loops; its own generator keeps the global RNG (dropout) untouched by iteration.

    Under several processes each one gets its own share of every epoch (`ShardedBatches`: every row once, a
    `loss_weight` per row); the loops then must not let Accelerate shard this loader again.
    """
    sampler = train_batch_sampler(dataset, config, batch_size, seed)
    rows = dataset
    if num_processes > 1:
        sampler = ShardedBatches(sampler, len(dataset), num_processes, process_index, accumulation)
        rows = WeightedRows(dataset, sampler.loss_weights())
    return DataLoader(
        rows,
        batch_sampler=sampler,
        collate_fn=collate_fn,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
    )


def eval_loader(dataset: Dataset, collate_fn: Callable, batch_size: int, num_workers: int = 0) -> DataLoader:
    """Batches of similar length (little padding), in a fixed order; `eval_order` restores row order."""
    lengths = dataset["length"] if "length" in dataset.column_names else None
    order = sorted(range(len(dataset)), key=lengths.__getitem__) if lengths is not None else list(range(len(dataset)))
    # A real BatchSampler (it has `batch_size`) lets Accelerate shard it evenly across processes and lets
    # `gather_for_metrics` drop the padding samples it adds to the last round.
    batches = BatchSampler(order, batch_size, drop_last=False)
    # Its own generator: evaluating never draws from the global RNG, so it cannot change training's dropout masks.
    loader = DataLoader(
        dataset, batch_sampler=batches, collate_fn=collate_fn, num_workers=num_workers, generator=torch.Generator()
    )
    loader.row_order = order  # type: ignore[attr-defined]
    return loader
