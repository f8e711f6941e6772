"""Invariants of the length-bucketed batch sampler (exact resume and the throughput claims rest on them)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.utils.data import BatchSampler
from transformers.trainer_pt_utils import LengthGroupedSampler

from hftransfer.config.locations import resolve_location
from hftransfer.data.sampling import LengthBucketedBatchSampler, pad_share


def sst2_lengths() -> list[int]:
    """Word counts of the packaged SST-2 sample (+2 for [CLS]/[SEP]): its real length profile, no tokenizer needed."""
    rows = resolve_location("pkg:hftransfer/demo_data/sst2/train.tsv")
    lines = Path(rows).read_text(encoding="utf-8").splitlines()[1:]
    return [len(line.split("\t")[0].split()) + 2 for line in lines]


def test_every_index_exactly_once_per_epoch():
    lengths = sst2_lengths()[:1000]
    sampler = LengthBucketedBatchSampler(lengths, 32, seed=3)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler) == 32
        assert sorted(i for b in batches for i in b) == list(range(1000))
        assert all(len(b) == 32 for b in batches if len(b) != 1000 % 32)


def test_drop_last_drops_only_the_short_batch():
    sampler = LengthBucketedBatchSampler(sst2_lengths()[:1000], 32, seed=0, drop_last=True)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 31 and all(len(b) == 32 for b in batches)


def test_order_depends_only_on_seed_and_epoch():
    lengths = sst2_lengths()[:500]
    a, b = LengthBucketedBatchSampler(lengths, 16, seed=7), LengthBucketedBatchSampler(lengths, 16, seed=7)
    a.set_epoch(2), b.set_epoch(2)
    torch.manual_seed(0)
    first = list(a)
    torch.manual_seed(1)  # the global RNG must not matter
    assert list(b) == first
    b.set_epoch(3)
    assert list(b) != first
    assert {tuple(x) for x in b} != {tuple(x) for x in first}  # membership changes, not just the order


def test_wastes_fewer_pad_tokens_than_length_grouped_sampler():
    lengths = sst2_lengths()
    ours = list(LengthBucketedBatchSampler(lengths, 32, seed=0))
    torch.manual_seed(0)
    theirs = list(BatchSampler(LengthGroupedSampler(32, lengths=lengths), 32, drop_last=False))
    assert pad_share(ours, lengths) < 0.5 * pad_share(theirs, lengths)
    assert pad_share(ours, lengths) < 0.05


def _shares(lengths: list[int], batch_size: int, processes: int, accumulation: int, epoch: int = 0, seed: int = 3):
    """Every process's batches of one epoch as `ShardedBatches` yields them: (rows, weight) per batch."""
    from hftransfer.data.sampling import ShardedBatches

    shares = []
    for rank in range(processes):
        sharded = ShardedBatches(
            LengthBucketedBatchSampler(lengths, batch_size, seed=seed), len(lengths), processes, rank, accumulation
        )
        sharded.set_epoch(epoch)
        weights = sharded.loss_weights()
        batches = list(sharded)
        assert len(batches) == len(sharded)  # the loop may count on len(): it is what the loader delivers
        n = len(lengths)
        shares.append([([i % n for i in batch], weights[batch[0] // n]) for batch in batches])
    return shares


@pytest.mark.parametrize("rows", [1, 7, 90, 96, 100, 300])
@pytest.mark.parametrize("batch_size", [3, 8])
@pytest.mark.parametrize("processes", [2, 3])
@pytest.mark.parametrize("accumulation", [1, 2])
def test_sharded_batches_train_every_row_once_under_any_process_count(rows, batch_size, processes, accumulation):
    """Accelerate's BatchSamplerShard skips a round when the short batch is not last (pitfalls 16); ours cannot:
    every row is trained exactly once per epoch, every process takes the same number of steps, and the loss
    weights make P processes equal to one process accumulating P batches per round."""
    lengths = [5 + (i * 7919) % 23 for i in range(rows)]
    for epoch in range(3):  # the short batch moves with the epoch's shuffle
        shares = _shares(lengths, batch_size, processes, accumulation, epoch)
        rounds = {len(share) for share in shares}
        assert rounds == {math.ceil(math.ceil(rows / batch_size) / processes)}
        real = [row for share in shares for batch, weight in share if weight > 0 for row in batch]
        assert sorted(real) == list(range(rows))
        # Per optimizer step (a group of `accumulation` rounds), the weights over all processes average the group's
        # real batches: sum of weights == batches per process in the group * processes.
        steps = math.ceil(len(shares[0]) / accumulation)
        for step in range(steps):
            group = slice(step * accumulation, (step + 1) * accumulation)
            in_group = [weight for share in shares for _, weight in share[group]]
            assert sum(in_group) == pytest.approx(len(shares[0][group]) * processes)
            assert len({w for w in in_group if w > 0}) == 1  # real batches of one group weigh the same


def test_short_batch_on_process_one_keeps_its_round():
    """The case the hostile run found: 300 rows, batch 8, 2 processes: 19 steps in every epoch on both."""
    lengths = [5 + (i * 7919) % 23 for i in range(300)]
    seen_short_on_one = False
    for epoch in range(4):
        shares = _shares(lengths, 8, 2, 1, epoch, seed=0)
        assert [len(s) for s in shares] == [19, 19]
        seen_short_on_one |= any(len(batch) < 8 and weight > 0 for batch, weight in shares[1])
    assert seen_short_on_one  # the position that lost a round under BatchSamplerShard was exercised
