"""Settings of LoRA / DoRA / IA3 fine-tuning (`strategy.lora`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from hftransfer.config.schema import ConfigError


@dataclass
class LoraConfig:
    method: Literal["lora", "ia3"] = "lora"
    """`lora` (with `use_dora` for DoRA) or `ia3`; the other fields below apply to LoRA/DoRA."""
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.1
    target_modules: list[str] | None = None
    """Module names (suffixes) to adapt; empty = per-family default (query/value for BERT-style models)."""
    bias: Literal["none", "all", "lora_only"] = "none"
    use_dora: bool = False
    modules_to_save: list[str] | None = None
    """Modules trained in full and saved with the adapter; empty = the classification head."""

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ConfigError(f"strategy.lora.r must be at least 1, got {self.r}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"strategy.lora.dropout must be in [0, 1), got {self.dropout}.")
        if self.target_modules is not None and not self.target_modules:
            raise ConfigError("strategy.lora.target_modules is an empty list; leave it out for the default.")
