"""Teacher logits computed once and stored as a dataset column, so epochs cost only the student's passes.

Valid because the teacher runs in eval mode (no dropout): the same row always gives the same logits.
When inputs change between epochs (augmentation), run the teacher live instead.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from datasets import Dataset, List, Value
from torch import nn

from hftransfer.evaluation.inference import dataset_logits

TEACHER_LOGITS = "teacher_logits"


def with_teacher_logits(dataset: Dataset, logits: np.ndarray) -> Dataset:
    """`dataset` plus a fixed-size float32 `teacher_logits` column (row i gets logits[i])."""
    if len(logits) != len(dataset):
        raise ValueError(f"{len(logits)} teacher logits for {len(dataset)} rows.")
    if TEACHER_LOGITS in dataset.column_names:
        dataset = dataset.remove_columns(TEACHER_LOGITS)
    feature = List(Value("float32"), length=int(logits.shape[1]))
    return dataset.add_column(TEACHER_LOGITS, np.asarray(logits, dtype=np.float32).tolist(), feature=feature)


def cache_teacher_logits(
    teacher: nn.Module,
    dataset: Dataset,
    collate_fn: Callable,
    batch_size: int,
    device: torch.device | str | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> Dataset:
    logits = dataset_logits(
        teacher, dataset, collate_fn, batch_size, device=device, autocast_dtype=autocast_dtype, desc="teacher logits"
    )
    return with_teacher_logits(dataset, logits)
