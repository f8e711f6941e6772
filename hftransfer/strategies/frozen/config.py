"""Settings of layer-frozen fine-tuning (`strategy.frozen`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from hftransfer.config.schema import ConfigError


@dataclass
class FrozenConfig:
    mode: Literal["blocks", "head_only"] = "blocks"
    """`head_only`: train only what sits outside embeddings and blocks (classifier, pooler); `blocks`: see below."""
    frozen_blocks: int | None = None
    """mode=blocks: freeze the embeddings and the bottom N blocks; -N freezes all but the top N; empty = half."""
    layerwise_lr_decay: float = 1.0
    """lr = train.learning_rate * factor**depth; depth 0 = head, 1 = top block, ..., L+1 = embeddings. 1 = off."""
    unfreeze_every: int = 0
    """Gradual unfreezing: every this many `unfreeze_unit`s the topmost frozen group starts training
    (blocks top-down, embeddings last); 0 = off."""
    unfreeze_unit: Literal["epochs", "steps"] = "epochs"
    cache_features: bool = True
    """Compute what the frozen part outputs once per distinct text input and reuse it in later epochs, with
    gradual unfreezing off and one process. head_only: the backbone's output (when every backbone weight is
    frozen, e.g. with model.pooling=mean); blocks: the token states after the last frozen block (BERT-family
    layouts), so later epochs run only the trainable top blocks. Costs hidden_size floats per token in RAM."""

    def __post_init__(self) -> None:
        if not 0.0 < self.layerwise_lr_decay <= 1.0:
            raise ConfigError(
                f"strategy.frozen.layerwise_lr_decay must be in (0, 1] (1 = off), got {self.layerwise_lr_decay}."
            )
        if self.unfreeze_every < 0:
            raise ConfigError(f"strategy.frozen.unfreeze_every must be 0 (off) or more, got {self.unfreeze_every}.")
        if self.mode == "head_only" and self.frozen_blocks is not None:
            raise ConfigError("strategy.frozen.frozen_blocks applies to mode=blocks; head_only freezes every block.")
