"""Knowledge distillation: a fine-tuned teacher's soft labels (and hidden states) train a smaller student."""

from hftransfer.config.strategies import register_strategy
from hftransfer.strategies.distill.config import DistillConfig

register_strategy("distill", DistillConfig, "hftransfer.strategies.distill.strategy:DistillStrategy")

__all__ = ["DistillConfig"]
