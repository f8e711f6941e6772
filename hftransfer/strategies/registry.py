"""Build the strategy a recipe names: the registered implementation, imported only now."""

from __future__ import annotations

from hftransfer.config.strategies import StrategyConfig, registered_strategies, strategy_spec
from hftransfer.strategies.base import Strategy


def strategy_class(name: str) -> type[Strategy]:
    """The `Strategy` subclass registered as `name` (a ConfigError lists the known ones)."""
    return strategy_spec(name).strategy_class()


def strategy_names() -> list[str]:
    return sorted(registered_strategies())


def build_strategy(config: StrategyConfig) -> Strategy:
    return strategy_class(config.name)(config.selected)
