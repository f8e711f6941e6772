"""LoRA, DoRA and IA3 adapters through peft, the classification head trained and saved alongside."""

from hftransfer.config.strategies import register_strategy
from hftransfer.strategies.lora.config import LoraConfig

register_strategy("lora", LoraConfig, "hftransfer.strategies.lora.strategy:LoraFineTuning")

__all__ = ["LoraConfig"]
