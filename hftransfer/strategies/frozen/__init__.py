"""Layer-frozen fine-tuning: a linear probe or a frozen bottom, gradual unfreezing, layer-wise LR decay."""

from hftransfer.config.strategies import register_strategy
from hftransfer.strategies.frozen.config import FrozenConfig

register_strategy("frozen", FrozenConfig, "hftransfer.strategies.frozen.strategy:FrozenFineTuning")

__all__ = ["FrozenConfig"]
