"""The strategy interface both training loops call.

A strategy decides what trains (`prepare`), what is minimised (`loss`), how the optimizer
groups parameters (`parameter_groups`), what happens as training advances (`on_step`) and
what gets written (`save`). Loops never special-case a strategy.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from hftransfer.config.recipe import RunConfig
    from hftransfer.data import PreparedData

NO_DECAY_MARKERS = ("bias", "layernorm", "layer_norm", "norm.weight", "LayerNorm")


class Strategy:
    name: ClassVar[str]

    def __init__(self, config: Any = None) -> None:
        self.config = config

    def prepare(self, model: nn.Module) -> nn.Module:
        """Return the model to train (possibly wrapped), with `requires_grad` set as the strategy wants."""
        return model

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean loss over the batch, logits). Labels are popped so the model never computes its own loss."""
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = model(**inputs).logits
        return F.cross_entropy(logits.float(), batch["labels"]), logits

    def parameter_groups(self, model: nn.Module, learning_rate: float, weight_decay: float) -> list[dict]:
        """AdamW groups: trainable weights decay, biases and norms do not."""
        decay, no_decay = [], []
        for name, param in model.named_parameters():
            if param.requires_grad:
                (no_decay if any(m in name for m in NO_DECAY_MARKERS) else decay).append(param)
        groups = [
            {"params": decay, "weight_decay": weight_decay, "lr": learning_rate},
            {"params": no_decay, "weight_decay": 0.0, "lr": learning_rate},
        ]
        return [g for g in groups if g["params"]]

    def on_step(self, model: nn.Module, step: int, steps_per_epoch: int) -> None:
        """Called before every optimizer step (gradual unfreezing hooks in here)."""

    def save(self, model: nn.Module, output_dir: str | Path) -> None:
        model.save_pretrained(output_dir, safe_serialization=True)

    def prepare_data(
        self, model: nn.Module, data: PreparedData, tokenizer: PreTrainedTokenizerBase, config: RunConfig
    ) -> PreparedData:
        """Checks and extra columns that need the data (distillation caches teacher logits here). Default: none."""
        return data

    def extra_results(self, model: nn.Module, metrics: dict, output_dir: Path) -> dict:
        """Strategy-specific entries for results.json (stored under the strategy's name), after `save`."""
        return {}

    @classmethod
    def report_lines(cls, results: dict) -> list[str]:
        """Console report lines for the entries `extra_results` wrote."""
        return []
