"""Optimizer and schedule shared by both loops, so they take identical steps."""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import get_scheduler

from hftransfer.config.recipe import TrainConfig
from hftransfer.errors import UserError
from hftransfer.strategies.base import Strategy


def build_optimizer(strategy: Strategy, model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the strategy's parameter groups; fused kernels (one pass over all params) where torch has them."""
    groups = strategy.parameter_groups(model, config.learning_rate, config.weight_decay)
    if not groups:
        raise UserError(
            f"The {strategy.name} strategy left no trainable parameters in this model; check strategy.{strategy.name}."
        )
    device = next(p.device for g in groups for p in g["params"])
    fused = device.type in ("cpu", "cuda")
    return torch.optim.AdamW(groups, lr=config.learning_rate, fused=fused)


def warmup_steps(config: TrainConfig, total_steps: int) -> int:
    return math.ceil(config.warmup_ratio * total_steps)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int):
    return get_scheduler(
        config.lr_scheduler,
        optimizer,
        num_warmup_steps=warmup_steps(config, total_steps),
        num_training_steps=total_steps,
    )
