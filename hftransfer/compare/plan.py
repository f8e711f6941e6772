"""Turn one recipe and `--strategies` into one run config per strategy, checked before anything trains.

Each run is the recipe with `strategy.name=<s>`, the strategy's compare defaults (`Strategy.compare_defaults`),
the user's overrides for every run, the user's `<s>:key=value` overrides for that run only, then what the
strategy's `compare_plan` adds (e.g. distill's teacher: the comparison's own full run). All runs share the
data, seed and every other key, and write into `<report>/runs/<s>`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hftransfer.config.recipe import RunConfig, load_config
from hftransfer.config.schema import ConfigError, to_dict
from hftransfer.config.strategies import registered_strategies
from hftransfer.errors import UserError
from hftransfer.strategies import strategy_class, strategy_names

DEFAULT_STRATEGIES = tuple(registered_strategies())  # every registered strategy, built-ins first
RUNS_DIR = "runs"

# Keys that may differ between a finished run and the plan without making the run stale.
_IGNORED_KEYS = ("train.overwrite_output_dir", "train.resume_from", "hub.")


class CompareError(UserError):
    """A comparison that cannot run as asked."""


@dataclass
class RunPlan:
    strategy: str
    config: RunConfig
    output_dir: Path
    depends_on: list[str] = field(default_factory=list)
    """Strategies whose runs this one reads (distill: the `full` run as teacher)."""
    notes: list[str] = field(default_factory=list)


def parse_strategies(text: str) -> list[str]:
    """`full,lora` -> ['full', 'lora'], in the order given; an unknown name fails with the valid ones."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise CompareError(f"--strategies is empty; give a comma-separated subset of {strategy_names()}.")
    unknown = [n for n in names if n not in strategy_names()]
    if unknown:
        raise CompareError(
            f"Unknown strategy {', '.join(repr(n) for n in unknown)} in --strategies; "
            f"valid: {', '.join(strategy_names())}."
        )
    return list(dict.fromkeys(names))


def split_overrides(overrides: Sequence[str], strategies: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Separate `key=value` (every run) from `<strategy>:key=value` (that strategy's run only)."""
    common: list[str] = []
    specific: dict[str, list[str]] = {s: [] for s in strategies}
    for item in overrides:
        key = item.partition("=")[0]
        if ":" not in key:
            common.append(item)
            continue
        name, _, rest = item.partition(":")
        if name not in strategy_names():
            raise CompareError(f"Override '{item}' names strategy '{name}'; valid: {', '.join(strategy_names())}.")
        if name not in specific:
            raise CompareError(f"Override '{item}' is for '{name}', which is not in --strategies {list(strategies)}.")
        specific[name].append(rest)
    return common, specific


def plan_runs(
    recipe: str | Path | None, strategies: Sequence[str], overrides: Sequence[str], report_dir: str | Path
) -> list[RunPlan]:
    """One checked config per strategy (bad keys fail here, before any training); a run after those it reads."""
    runs_dir = Path(report_dir) / RUNS_DIR
    common, specific = split_overrides(overrides, strategies)
    recipe_strategy = load_config(recipe, common).strategy.name
    plans = []
    for name in strategies:
        strategy = strategy_class(name)
        defaults = list(strategy.compare_defaults) if name != recipe_strategy else []
        user = [*common, *specific[name]]
        forced = [
            f"strategy.name={name}",
            f"train.output_dir={runs_dir / name}",
            "train.overwrite_output_dir=true",  # reached only for runs that never finished (see runner)
            "hub.push=false",
        ]
        try:
            own = strategy.compare_plan(load_config(recipe, user), specific[name], list(strategies), runs_dir)
        except ConfigError as err:
            raise CompareError(str(err)) from None
        config = load_config(recipe, [*defaults, *user, *forced, *own.overrides])
        plans.append(RunPlan(name, config, runs_dir / name, list(own.depends_on), list(own.notes)))
    return _dependencies_first(plans)


def _dependencies_first(plans: list[RunPlan]) -> list[RunPlan]:
    """The given order, except that runs reading another run of this comparison (a student its teacher) train last."""
    names = {plan.strategy for plan in plans}
    return sorted(plans, key=lambda plan: any(d in names for d in plan.depends_on))


def config_differences(saved: RunConfig, planned: RunConfig) -> list[str]:
    """Dotted keys whose values differ between a finished run's recipe and the plan (`task: auto` matches any)."""
    a, b = _flatten(to_dict(saved)), _flatten(to_dict(planned))
    if planned.task == "auto":
        a.pop("task", None), b.pop("task", None)
    keys = sorted(set(a) | set(b))
    return [
        f"{k}: {a.get(k)!r} -> {b.get(k)!r}"
        for k in keys
        if a.get(k) != b.get(k) and not any(k == i or k.startswith(i) for i in _IGNORED_KEYS)
    ]


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
