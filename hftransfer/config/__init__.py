"""Recipes: the typed schema a YAML file and `key.sub=value` overrides fill in, and where things are found.

`recipe` holds the sections (model, data, strategy, train, hub), `strategies` the registry behind the
`strategy:` section, `schema` the checker that turns plain dicts into them, `locations` the `pkg:` paths.
"""

from hftransfer.config.recipe import (
    DataConfig,
    HubConfig,
    ImageDataConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    load_config,
    save_config,
)
from hftransfer.config.schema import ConfigError
from hftransfer.config.strategies import StrategyConfig, register_strategy

__all__ = [
    "ConfigError",
    "DataConfig",
    "HubConfig",
    "ImageDataConfig",
    "ModelConfig",
    "RunConfig",
    "StrategyConfig",
    "TrainConfig",
    "load_config",
    "register_strategy",
    "save_config",
]
