"""Forward passes without gradients: per-row logits or features for datasets, shared by loops and CLI."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from torch import nn

from hftransfer.console import progress
from hftransfer.data.loaders import eval_loader


@torch.inference_mode()
def dataset_outputs(
    model: nn.Module,
    dataset: Dataset,
    collate_fn: Callable,
    read: Callable[[Any, dict[str, torch.Tensor]], torch.Tensor],
    batch_size: int = 64,
    device: torch.device | str | None = None,
    autocast_dtype: torch.dtype | None = None,
    desc: str | None = None,
) -> np.ndarray:
    """`read(model output, batch inputs)` for every row of `dataset`, in row order (batches run length-sorted);
    `desc` names a progress bar (`hftransfer.console.progress`: a terminal, many batches, the main process)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    loader = eval_loader(dataset, collate_fn, batch_size)
    chunks = []
    for batch in progress(loader, desc=desc) if desc else loader:
        inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            chunks.append(read(model(**inputs), inputs).float().cpu())
    model.train(was_training)
    values = torch.cat(chunks).numpy()
    restored = np.empty_like(values)
    restored[np.asarray(loader.row_order)] = values
    return restored


def dataset_logits(
    model: nn.Module,
    dataset: Dataset,
    collate_fn: Callable,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    autocast_dtype: torch.dtype | None = None,
    desc: str | None = None,
) -> np.ndarray:
    """Logits for every row of `dataset`, in row order (`desc`: a progress bar's name)."""
    return dataset_outputs(
        model, dataset, collate_fn, lambda output, _inputs: output.logits, batch_size, device, autocast_dtype, desc
    )
