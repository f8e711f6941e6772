"""Strategy names -> implementations, and the `strategy:` section of a recipe."""

from __future__ import annotations

from dataclasses import dataclass, field

from hftransfer.schema import ConfigError
from hftransfer.strategies.base import Strategy
from hftransfer.strategies.distill import DistillConfig, DistillStrategy
from hftransfer.strategies.frozen import FrozenConfig, FrozenFineTuning
from hftransfer.strategies.full import FullConfig, FullFineTuning
from hftransfer.strategies.lora import LoraConfig, LoraFineTuning

STRATEGIES: dict[str, type[Strategy]] = {FullFineTuning.name: FullFineTuning}
STRATEGIES[DistillStrategy.name] = DistillStrategy
STRATEGIES[FrozenFineTuning.name] = FrozenFineTuning
STRATEGIES[LoraFineTuning.name] = LoraFineTuning


@dataclass
class StrategyConfig:
    name: str = "full"
    """One of the registered strategies (see `hftransfer.strategies.STRATEGIES`)."""
    full: FullConfig = field(default_factory=FullConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    frozen: FrozenConfig = field(default_factory=FrozenConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)

    def __post_init__(self) -> None:
        if self.name not in STRATEGIES:
            raise ConfigError(f"strategy.name '{self.name}' is unknown; choose one of {sorted(STRATEGIES)}.")
        if self.name == DistillStrategy.name:
            self.distill.require_teacher()


def build_strategy(config: StrategyConfig) -> Strategy:
    return STRATEGIES[config.name](getattr(config, config.name, None))
