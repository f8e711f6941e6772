"""Inference latency of several models on the same batches, measured interleaved so load drift hits all alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from datasets import Dataset
from torch import nn


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sample_batches(dataset: Dataset, collate_fn: Callable, batch_size: int, count: int) -> list[dict]:
    """`count` batches of `batch_size` rows taken in order (wrapping around a small dataset)."""
    columns = [c for c in ("input_ids", "token_type_ids", "attention_mask", "image") if c in dataset.column_names]
    rows = dataset.select_columns(columns)
    batches = []
    for b in range(count):
        indices = [(b * batch_size + i) % len(rows) for i in range(batch_size)]
        batches.append(collate_fn([rows[i] for i in indices]))
    return batches


@torch.inference_mode()
def compare_latency(
    models: dict[str, nn.Module],
    batches: list[dict] | dict[str, list[dict]],
    device: torch.device | str,
    warmup: int = 2,
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Median milliseconds per forward pass for each model over `batches`, models alternating batch by batch.

    `batches` is one list for all models, or one per model name (models with different tokenizers), of equal length.
    """
    device = torch.device(device)
    per_model = batches if isinstance(batches, dict) else dict.fromkeys(models, batches)
    moved = {
        name: [{k: v.to(device) for k, v in batch.items() if k != "labels"} for batch in per_model[name]]
        for name in models
    }
    times: dict[str, list[float]] = {name: [] for name in models}
    states = {name: model.training for name, model in models.items()}
    for model in models.values():
        model.eval()
    rounds = len(next(iter(moved.values())))
    warm = min(warmup, rounds)
    try:
        for step, i in enumerate([*range(warm), *range(rounds)]):
            for name, model in models.items():
                with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                    _sync(device)
                    started = time.perf_counter()
                    model(**moved[name][i])
                    _sync(device)
                if step >= warm:
                    times[name].append(1000 * (time.perf_counter() - started))
    finally:
        for name, model in models.items():
            model.train(states[name])
    return {name: statistics.median(values) for name, values in times.items()}
