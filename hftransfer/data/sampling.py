"""Batch samplers that keep padding (wasted compute) near zero while staying shuffled."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class LengthBucketedBatchSampler(Sampler[list[int]]):
    """Shuffle, sort the whole epoch by length, cut into batches, shuffle the batches.

    Ties in length are broken by the shuffle, so batch membership changes every epoch, while
    each batch holds sequences of (nearly) one length: on SST-2 almost no pad tokens are
    computed, against ~10% for `LengthGroupedSampler`'s 50-batch megabatches and ~85% for
    padding to 128. The order depends only on (seed, epoch), which exact resume relies on.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, drop_last: bool = False) -> None:
        self.lengths = torch.as_tensor(list(lengths), dtype=torch.long)
        self.batch_size = batch_size
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.lengths)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        shuffled = torch.randperm(len(self.lengths), generator=generator)
        order = shuffled[torch.sort(self.lengths[shuffled], stable=True).indices]
        batches = list(torch.split(order, self.batch_size))
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        for i in torch.randperm(len(batches), generator=generator).tolist():
            yield batches[i].tolist()


class RandomBatchSampler(Sampler[list[int]]):
    """Plain shuffled batches, seeded by (seed, epoch) like the bucketed sampler."""

    def __init__(self, size: int, batch_size: int, seed: int = 0, drop_last: bool = False) -> None:
        self.size, self.batch_size, self.seed, self.drop_last = size, batch_size, seed, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = self.size
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.size, generator=generator)
        for batch in torch.split(order, self.batch_size):
            if self.drop_last and len(batch) < self.batch_size:
                return
            yield batch.tolist()


def pad_share(batches: Sequence[Sequence[int]], lengths: Sequence[int]) -> float:
    """Share of computed tokens that are padding when each batch is padded to its longest item."""
    computed = real = 0
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        computed += longest * len(batch)
        real += sum(lengths[i] for i in batch)
    return 1.0 - real / computed if computed else 0.0
