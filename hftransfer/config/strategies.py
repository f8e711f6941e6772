"""The `strategy:` section of a recipe, and the registry that fills it.

A strategy is a plug-in: its package registers a light config dataclass and the dotted name of its
implementation (`register_strategy`, peft's `register_peft_method` habit). The built-in ones are known by
package name and imported on first use (transformers' lazy auto-mapping habit), so reading a recipe imports
only those config dataclasses, never a strategy's code; the implementation is imported when a run builds it.
A recipe holds one section per registered strategy (`strategy.lora.r`), so every key is checked before any
model loads, whichever strategy `strategy.name` picks.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from hftransfer.config.schema import ConfigError

BUILTIN_STRATEGIES = {
    "full": "hftransfer.strategies.full",
    "frozen": "hftransfer.strategies.frozen",
    "lora": "hftransfer.strategies.lora",
    "distill": "hftransfer.strategies.distill",
}
"""Strategy name -> the package that registers it when imported."""


@dataclass(frozen=True)
class StrategySpec:
    name: str
    config_class: type
    implementation: str
    """`module:Class` of the `hftransfer.strategies.base.Strategy` subclass, imported when a run builds it."""

    def strategy_class(self) -> type:
        module, _, attribute = self.implementation.partition(":")
        return getattr(importlib.import_module(module), attribute)


_REGISTRY: dict[str, StrategySpec] = {}


def register_strategy(name: str, config_class: type, implementation: str) -> None:
    """Make `strategy.name=<name>` and the recipe section `strategy.<name>` (fields of `config_class`) known."""
    if name in ("name",) or not name.isidentifier():
        raise ValueError(f"'{name}' cannot name a strategy (it must be an identifier other than 'name').")
    _REGISTRY[name] = StrategySpec(name, config_class, implementation)


def registered_strategies() -> dict[str, StrategySpec]:
    """Every registered strategy, the built-in ones first (imported here on first use)."""
    for name, package in BUILTIN_STRATEGIES.items():
        if name not in _REGISTRY:
            importlib.import_module(package)
    return dict(_REGISTRY)


def strategy_spec(name: str) -> StrategySpec:
    specs = registered_strategies()
    if name not in specs:
        raise ConfigError(f"strategy.name '{name}' is unknown; choose one of {sorted(specs)}.")
    return specs[name]


class StrategyConfig:
    """`name` picks the strategy; `<strategy>` holds each registered strategy's settings (`config.lora.r`).

    Built like a dataclass by the schema (`schema_fields`), so recipes and overrides are checked key by key.
    """

    def __init__(self, name: str = "full", **sections: Any) -> None:
        specs = registered_strategies()
        unknown = sorted(set(sections) - set(specs))
        if unknown:
            raise ConfigError(f"strategy.{unknown[0]} is not a registered strategy; they are {sorted(specs)}.")
        self.name = name
        self.sections = {n: sections.get(n) or spec.config_class() for n, spec in specs.items()}
        selected = strategy_spec(name).config_class
        check = getattr(self.sections[name], "check_selected", None)  # checks only the chosen strategy needs
        if check is not None and isinstance(self.sections[name], selected):
            check()

    @classmethod
    def schema_fields(cls) -> dict[str, Any]:
        return {"name": str, **{n: spec.config_class for n, spec in registered_strategies().items()}}

    @property
    def selected(self) -> Any:
        """The chosen strategy's settings."""
        return self.sections[self.name]

    def __getattr__(self, item: str) -> Any:
        sections = self.__dict__.get("sections")
        if sections is None or item not in sections:
            raise AttributeError(item)
        return sections[item]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StrategyConfig) and (self.name, self.sections) == (other.name, other.sections)

    def __repr__(self) -> str:
        return f"StrategyConfig(name={self.name!r}, {self.selected!r})"
