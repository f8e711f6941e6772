"""Fine-tuning strategies, importable without the runner: `build_strategy(cfg).prepare(model)`."""

from hftransfer.strategies.base import Strategy
from hftransfer.strategies.full import FullConfig, FullFineTuning
from hftransfer.strategies.registry import STRATEGIES, StrategyConfig, build_strategy

__all__ = ["STRATEGIES", "FullConfig", "FullFineTuning", "Strategy", "StrategyConfig", "build_strategy"]
