"""Forward passes without gradients: eval logits for datasets and raw inputs, shared by loops and CLI."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from datasets import Dataset
from torch import nn

from hftransfer.data.loaders import eval_loader


@torch.inference_mode()
def dataset_logits(
    model: nn.Module,
    dataset: Dataset,
    collate_fn: Callable,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> np.ndarray:
    """Logits for every row of `dataset`, in row order (batches run length-sorted for speed)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    loader = eval_loader(dataset, collate_fn, batch_size)
    chunks = []
    for batch in loader:
        inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            chunks.append(model(**inputs).logits.float().cpu())
    model.train(was_training)
    logits = torch.cat(chunks).numpy()
    restored = np.empty_like(logits)
    restored[np.asarray(loader.row_order)] = logits
    return restored
