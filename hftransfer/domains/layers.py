"""The building blocks of the cross-domain objective, usable from research code: the gradient-reversal layer,
the DANN weight schedule, the L2-SP penalty, a domain classifier and the capture of a classifier's pooled input."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from hftransfer.errors import UserError


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.scale * grad, None


def reverse_gradient(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Identity forward; the backward pass multiplies the gradient by `-scale` (Ganin et al. 2016)."""
    return _ReverseGradient.apply(x, float(scale))


class GradientReversal(nn.Module):
    """`reverse_gradient` as a module; `scale` may change between steps (the DANN schedule sets it)."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reverse_gradient(x, self.scale)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


def dann_weight(progress: float, max_weight: float = 1.0, gamma: float = 10.0) -> float:
    """DANN's schedule: `max_weight * (2 / (1 + exp(-gamma * p)) - 1)` for training progress p in [0, 1]."""
    p = min(max(progress, 0.0), 1.0)
    return max_weight * (2.0 / (1.0 + math.exp(-gamma * p)) - 1.0)


def l2sp_penalty(
    pairs: Iterable[tuple[torch.Tensor, torch.Tensor]], new: Iterable[torch.Tensor], alpha: float, beta: float
) -> torch.Tensor:
    """L2-SP (Li et al. 2018): `alpha/2 * sum ||theta - theta0||^2` over (parameter, starting point) `pairs` plus
    `beta/2 * sum ||theta||^2` over the `new` parameters; its gradient is `alpha * (theta - theta0)` and
    `beta * theta`. Parameters that do not train are skipped."""
    total: torch.Tensor | None = None
    for param, start in pairs:
        if param.requires_grad:
            term = (alpha / 2) * (param.float() - start.float()).pow(2).sum()
            total = term if total is None else total + term
    for param in new:
        if param.requires_grad:
            term = (beta / 2) * param.float().pow(2).sum()
            total = term if total is None else total + term
    return total if total is not None else torch.zeros(())


class DomainClassifier(nn.Module):
    """Two-layer MLP on pooled features -> one logit (target vs not), behind a gradient-reversal layer."""

    def __init__(self, width: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or max(width // 2, 8)
        self.reverse = GradientReversal(0.0)
        self.net = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(self.reverse(features)).squeeze(-1)


def classifier_head(model: nn.Module) -> nn.Module:
    """The module that maps pooled features to logits (`classifier` in BERT/RoBERTa/DistilBERT/ResNet/ViT/
    ConvNeXt, also under a peft wrapper; a timm model's `get_classifier()`); a `UserError` if there is none."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft
    timm_model = getattr(base, "timm_model", None)
    head = timm_model.get_classifier() if timm_model is not None else getattr(base, "classifier", None)
    if not isinstance(head, nn.Module):
        raise UserError(
            f"The domain.* options read the pooled features a classification head takes, but {type(base).__name__} "
            "has no `classifier` head; use a transformers *ForSequenceClassification/*ForImageClassification model."
        )
    return head


def pooled(features: torch.Tensor) -> torch.Tensor:
    """A head's input as one vector per row: RoBERTa-style heads read the sequence (take its first token),
    ResNet's reads [batch, channels, 1, 1] (flattened)."""
    return features[:, 0] if features.dim() == 3 else features.flatten(1)


class FeatureTap:
    """Keeps the input of the last forward through `head` (a forward pre-hook): the pooled representation the
    classifier reads, for text and image models alike."""

    def __init__(self, head: nn.Module) -> None:
        self.last: torch.Tensor | None = None
        self.handle = head.register_forward_pre_hook(self._keep)

    def _keep(self, _module: nn.Module, args: tuple) -> None:
        self.last = args[0]

    def take(self) -> torch.Tensor:
        if self.last is None:
            raise RuntimeError("No forward pass went through the classifier head since the last take().")
        features, self.last = pooled(self.last), None
        return features
