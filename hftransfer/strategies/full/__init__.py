"""Full fine-tuning: every weight trains."""

from hftransfer.config.strategies import register_strategy
from hftransfer.strategies.full.config import FullConfig

register_strategy("full", FullConfig, "hftransfer.strategies.full.strategy:FullFineTuning")

__all__ = ["FullConfig"]
