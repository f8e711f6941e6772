"""Choose how a classifier pools token states: the checkpoint's own way (`cls`) or a masked mean.

Sentence-transformers checkpoints (like the offline MiniLM) were trained for mean pooling; their
BERT pooler was never trained, so a probe through it stays at chance while a mean over the
attention mask gives usable features. Mean pooling is a forward hook on the backbone, so the
Hugging Face classes, `save_pretrained`, peft and merging all keep working; the recipe's
`model.pooling` is re-applied on load. A mean-pooled output folder carries the same code for plain
`transformers` (`hftransfer.models.remote_code`).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from torch import nn

from hftransfer.errors import UserError

Pooling = Literal["cls", "mean"]


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of `hidden` [B, L, H] over positions where `attention_mask` [B, L] is 1."""
    if attention_mask is None:
        return hidden.mean(dim=1)
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def _mean_pool_hook(module: nn.Module, args: tuple, kwargs: dict, output):
    mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
    hidden = output.last_hidden_state
    pooled = masked_mean(hidden, mask)
    if module._hftransfer_pool_into == "pooler_output":  # the head reads the backbone's pooled output
        return dataclasses.replace(output, pooler_output=pooled)
    # The head reads the first token's state (DistilBERT, RoBERTa, ELECTRA, DeBERTa): put the mean there.
    return dataclasses.replace(output, last_hidden_state=torch.cat([pooled.unsqueeze(1), hidden[:, 1:]], dim=1))


def apply_pooling(model: nn.Module, pooling: Pooling) -> nn.Module:
    """Make `model` (a `*ForSequenceClassification`) classify from `pooling`; `cls` leaves it unchanged."""
    if pooling == "cls":
        return model
    if pooling != "mean":
        raise UserError(f"model.pooling must be 'cls' or 'mean', got {pooling!r}.")
    backbone = getattr(model, "base_model", model)
    if backbone is model:
        raise UserError(f"model.pooling=mean needs a classifier on top of a backbone; got {type(model).__name__}.")
    mean_pool(model)
    return model


def is_mean_pooled(model: nn.Module) -> bool:
    """Whether `apply_pooling(model, "mean")` (or a saved folder's own code) made `model` classify from a mean."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft wrapper
    return bool(getattr(getattr(inner, "base_model", inner), "_hftransfer_pool_into", None))


def mean_pool(model: nn.Module) -> None:
    """Make `model`'s head read the masked mean of its backbone's last hidden state, in place (once).

    Self-contained (torch and dataclasses only): `hftransfer.models.remote_code` copies it, with `masked_mean` and
    `_mean_pool_hook`, into the modeling file of a mean-pooled output folder, so `transformers` pools alike.
    """
    backbone = getattr(model, "base_model", model)
    if getattr(backbone, "_hftransfer_pool_into", None):
        return  # already applied
    if getattr(backbone, "pooler", None) is not None:
        # Drop the unused pooler: no dead parameters (DDP would complain), nothing to save for it.
        backbone.pooler = None
        backbone._hftransfer_pool_into = "pooler_output"
    else:
        backbone._hftransfer_pool_into = "first_token"
    backbone.register_forward_hook(_mean_pool_hook, with_kwargs=True)
