"""Fine-tuning strategies, importable without the runner: `build_strategy(cfg).prepare(model)`.

Each strategy is a package (`full`, `frozen`, `lora`, `distill`) holding a light config, registered with
`hftransfer.config.register_strategy`, and its `Strategy` subclass (`base.Strategy`: `prepare`, `loss`,
`parameter_groups`, `on_step`, `save` and the hooks that reports, cards and compare read).
"""

from hftransfer.config.strategies import StrategyConfig, register_strategy
from hftransfer.strategies.base import Strategy
from hftransfer.strategies.registry import build_strategy, strategy_class, strategy_names

__all__ = ["Strategy", "StrategyConfig", "build_strategy", "register_strategy", "strategy_class", "strategy_names"]
