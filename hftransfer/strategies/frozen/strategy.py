"""Layer-frozen fine-tuning: linear probe or frozen bottom, with gradual unfreezing and layer-wise LR decay.

Frozen modules get `requires_grad=False` (no backward pass through them, no DDP gradient buckets) and
stay in eval mode during training, so their dropout is off and their outputs are deterministic.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from hftransfer.config.schema import ConfigError
from hftransfer.models.layers import LayerGroups, find_layer_groups
from hftransfer.strategies.base import NO_DECAY_MARKERS, Strategy, require_strategy_step
from hftransfer.strategies.frozen.config import FrozenConfig
from hftransfer.strategies.frozen.feature_cache import FeatureCache, FrozenPrefixCache

logger = logging.getLogger("hftransfer")



def _keep_eval(module: nn.Module, _args) -> None:
    """Forward pre-hook: whatever `model.train()` did, a frozen module runs in eval mode."""
    if module.training:
        module.eval()


class FrozenFineTuning(Strategy):
    name = "frozen"
    summary = "layer-frozen fine-tuning (the lower layers kept their pretrained weights)"
    config: FrozenConfig

    def __init__(self, config: FrozenConfig | None = None) -> None:
        super().__init__(config or FrozenConfig())
        self.groups: LayerGroups | None = None
        self.frozen: list[nn.Module] = []  # currently frozen groups, bottom first
        self._initially_frozen = 0
        self._hooks: dict[int, torch.utils.hooks.RemovableHandle] = {}
        self.cache: FeatureCache | FrozenPrefixCache | None = None

    def num_frozen_blocks(self, num_blocks: int) -> int:
        if self.config.mode == "head_only":
            return num_blocks
        wanted = self.config.frozen_blocks
        n = num_blocks // 2 if wanted is None else (num_blocks + wanted if wanted < 0 else wanted)
        if not 0 <= n <= num_blocks:
            raise ConfigError(
                f"strategy.frozen.frozen_blocks={wanted} does not fit a model with {num_blocks} blocks; "
                f"use a value from {-num_blocks} to {num_blocks}."
            )
        return n

    def prepare(self, model: nn.Module) -> nn.Module:
        if self.config.unfreeze_every and self.runtime.world_size > 1:
            raise ConfigError(
                "strategy.frozen.unfreeze_every does not work with several processes (DDP registers the trainable "
                "parameters once); train on one device or set unfreeze_every=0."
            )
        self.groups = groups = find_layer_groups(model)
        n = self.num_frozen_blocks(len(groups.blocks))
        for param in model.parameters():
            param.requires_grad_(True)
        self.frozen = [*groups.embeddings, *groups.blocks[:n]]
        self._initially_frozen = len(self.frozen)
        for module in self.frozen:
            module.requires_grad_(False)
            self._hooks[id(module)] = module.register_forward_pre_hook(_keep_eval)
        logger.info("Frozen: embeddings and %d of %d blocks", n, len(groups.blocks))
        if self.config.unfreeze_every:
            require_strategy_step(model, self.name, "which unfreezes blocks on schedule in its per-step hook")
        backbone = getattr(model, "base_model", None)
        frozen_backbone = backbone is not None and not any(p.requires_grad for p in backbone.parameters())
        if not self.config.cache_features or self.config.unfreeze_every or n == 0:
            return model
        if self.runtime.world_size > 1:
            logger.info("Not caching features under DDP (the trainable part must run through DDP's forward)")
        elif self.config.mode == "head_only" and frozen_backbone:
            self.cache = FeatureCache(model)
        elif self.config.mode == "head_only":
            logger.info("Not caching features: the head trains weights inside the backbone (its pooler)")
        elif groups.embeddings == [getattr(backbone, "embeddings", None)]:
            self.cache = FrozenPrefixCache(model, groups.blocks[:n])
        else:
            logger.info(
                "Not caching the frozen blocks' output: %s has no plain embeddings module", type(model).__name__
            )
        return model

    def logits(self, model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(**inputs).logits if self.cache is None else self.cache.logits(model, inputs)

    def parameter_groups(self, model: nn.Module, learning_rate: float, weight_decay: float) -> list[dict]:
        """Groups by (depth, decay); params that gradual unfreezing will train later are included already
        (AdamW skips parameters without gradients, so they stay untouched until then)."""
        assert self.groups is not None, "prepare() first"
        later = {id(p) for m in self.frozen for p in m.parameters()} if self.config.unfreeze_every else set()
        depths = self.groups.depths()
        buckets: dict[tuple[int, bool], list[nn.Parameter]] = {}
        for name, param in model.named_parameters():
            if param.requires_grad or id(param) in later:
                decays = not any(m in name for m in NO_DECAY_MARKERS)
                buckets.setdefault((depths.get(id(param), 0), decays), []).append(param)
        return [
            {
                "params": params,
                "lr": learning_rate * self.config.layerwise_lr_decay**depth,
                "weight_decay": weight_decay if decays else 0.0,
            }
            for (depth, decays), params in sorted(buckets.items())
        ]

    def on_step(self, model: nn.Module, step: int, steps_per_epoch: int) -> None:
        """Unfreeze groups until `step // period` of them train again; idempotent, so resuming works."""
        every = self.config.unfreeze_every
        if not every or not self.frozen:
            return
        period = every * (steps_per_epoch if self.config.unfreeze_unit == "epochs" else 1)
        target = min(step // max(period, 1), self._initially_frozen)
        while self._initially_frozen - len(self.frozen) < target:
            module = self.frozen.pop()
            module.requires_grad_(True)
            self._hooks.pop(id(module)).remove()
            module.train(model.training)
            logger.info("Step %d: unfroze %s (%d groups still frozen)", step, type(module).__name__, len(self.frozen))
