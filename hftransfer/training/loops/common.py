"""What both loops share: the result they return, how a strategy's extra modules train with the model, how a
batch's loss weight is applied, and the one evaluation both run."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from hftransfer.data.sampling import WeightedRows
from hftransfer.evaluation.metrics import classification_metrics, scalar_metrics
from hftransfer.strategies.base import Strategy


@dataclass
class LoopResult:
    model: nn.Module
    train_runtime_s: float
    train_samples: int
    global_steps: int
    losses: list[float] = field(default_factory=list)
    log_history: list[dict] = field(default_factory=list)
    epoch_train_s: list[float] = field(default_factory=list)
    """Wall time of each epoch's training steps (an end-of-epoch evaluation excluded): with cached features
    or teacher logits, epochs after the first are the ones that show the steady-state speed."""

    @property
    def train_samples_per_second(self) -> float:
        return self.train_samples / self.train_runtime_s if self.train_runtime_s > 0 else 0.0


class WithTrainableModules(nn.Module):
    """The model and a strategy's extra trainable modules as one module, so that a loop prepares (DDP, FSDP,
    device), clips, checkpoints and restores them together. Its forward is the model's, or with `loss_of` the
    strategy's whole loss: DDP then sees the extra modules used inside its forward, as its gradient
    all-reduce requires (used outside, their gradients break its bookkeeping)."""

    def __init__(self, model: nn.Module, extras: dict[str, nn.Module]) -> None:
        super().__init__()
        self.model = model
        self.extras = nn.ModuleDict(extras)

    def forward(self, *args, loss_of: Callable | None = None, **kwargs):
        if loss_of is not None:
            return loss_of(self.model, *args, **kwargs)
        return self.model(*args, **kwargs)


def with_trainable_modules(model: nn.Module, strategy: Strategy) -> nn.Module:
    extras = strategy.trainable_modules()
    return WithTrainableModules(model, extras) if extras else model


def enable_activation_checkpointing(model: nn.Module, trainer_args: dict) -> None:
    """`train.trainer_args.gradient_checkpointing` (or `activation_checkpointing`, with its `*_kwargs`), applied
    to the model by both loops the same way (Trainer's own call cannot reach a model wrapped with extra modules)."""
    if not (trainer_args.get("activation_checkpointing") or trainer_args.get("gradient_checkpointing")):
        return
    given = trainer_args.get("activation_checkpointing_kwargs") or trainer_args.get("gradient_checkpointing_kwargs")
    kwargs = dict(given or {})
    every_n_layers, offload = kwargs.pop("every_n_layers", 1), kwargs.pop("offload", False)
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is None:  # models outside transformers' PreTrainedModel that keep the older name
        enable = model.gradient_checkpointing_enable
        enable(gradient_checkpointing_kwargs=kwargs or None)
        return
    enable(activation_checkpointing_kwargs=kwargs or None, every_n_layers=every_n_layers, offload=offload)


CHECKPOINTING_ARGS = (
    "activation_checkpointing",
    "activation_checkpointing_kwargs",
    "gradient_checkpointing",
    "gradient_checkpointing_kwargs",
)
"""Applied by `enable_activation_checkpointing` in both loops, so never handed to `TrainingArguments`."""


def trained_model(module: nn.Module) -> nn.Module:
    """The model itself, out of `WithTrainableModules` (what the strategy saves)."""
    return module.model if isinstance(module, WithTrainableModules) else module


def weighted_loss(strategy: Strategy, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The strategy's loss, times the batch's loss weight when the batches were sharded across processes."""
    weight = batch.pop(WeightedRows.WEIGHT, None)
    if isinstance(getattr(model, "module", model), WithTrainableModules):  # bare or wrapped by DDP
        loss, _ = model(batch, loss_of=strategy.loss)
    else:
        loss, _ = strategy.loss(model, batch)
    return loss if weight is None else loss * weight[0].to(loss.dtype)


@torch.no_grad()
def evaluate(
    strategy: Strategy,
    model: nn.Module,
    batches: Iterable[dict],
    label_names: list[str],
    gather: Callable = lambda pair: pair,
) -> dict[str, float]:
    """Validation metrics and loss of both loops: the task loss (cross-entropy on the labels) whatever the strategy
    trains with, so `best_metric=loss` and early stopping pick the same checkpoint in either loop. `gather`
    collects every process's rows (`accelerator.gather_for_metrics`, which drops the padding it added)."""
    was_training = model.training
    model.eval()
    all_logits, all_labels = [], []
    for batch in batches:
        logits = strategy.logits(model, {k: v for k, v in batch.items() if k != "labels"})
        logits, labels = gather((logits.float(), batch["labels"]))
        all_logits.append(logits.cpu())
        all_labels.append(labels.cpu())
    model.train(was_training)
    logits, labels = torch.cat(all_logits), torch.cat(all_labels)
    metrics = scalar_metrics(classification_metrics(labels.numpy(), logits.numpy(), label_names=label_names))
    metrics["loss"] = F.cross_entropy(logits, labels).item()
    return metrics
