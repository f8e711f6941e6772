"""Turn one recipe, `--strategies` and `--variant`s into one run config per run, checked before anything trains.

Each run is the recipe with `strategy.name=<s>`, the strategy's compare defaults (`Strategy.compare_defaults`),
the user's overrides for every run, the user's `<s>:key=value` overrides for that run only, a variant's overrides
(`--variant NAME:key=value,...` and `NAME:key=value`), then what the strategy's `compare_plan` adds (e.g. distill's
teacher: the comparison's own full run). Without variants all runs share the data, seed and every other key and
write into `<report>/runs/<s>`; a variant is a named set of overrides (`runs/<name>`, or `runs/<name>/<s>` when
variants and strategies make a grid), and `{run:NAME}` in one of its values is another run's output folder.
"""

from __future__ import annotations

import re
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
    """Names of the runs this one reads (distill: the `full` run as teacher; a variant's `{run:NAME}`)."""
    notes: list[str] = field(default_factory=list)
    name: str = ""
    """The run's name in the report: the strategy, the variant, or `<variant>/<strategy>`."""
    variant: str | None = None
    overrides: list[str] = field(default_factory=list)
    """The overrides given for this run alone (the variant's and its strategy's)."""

    def __post_init__(self) -> None:
        self.name = self.name or self.strategy


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


@dataclass(frozen=True)
class Variant:
    """A named set of overrides that becomes its own run (or, with --strategies, one run per strategy)."""

    name: str
    overrides: tuple[str, ...] = ()


_VARIANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_NEXT_KEY = re.compile(r",(?=\s*[A-Za-z_][\w.]*=)")  # a comma that starts the next `key=` (not one inside a value)
_RUN_REF = re.compile(r"\{run:([^{}]+)\}")


def parse_variant(text: str) -> Variant:
    """`NAME:key=value,key=value` (or `NAME:` / `NAME` for the recipe as it is) -> Variant. A comma separates two
    overrides only where the next `key=` starts, so list values like `data.text_columns=[a,b]` stay whole."""
    name, _, rest = text.partition(":")
    name = name.strip()
    if not _VARIANT_NAME.match(name):
        raise CompareError(
            f"--variant '{text}': give NAME:key=value,key=value, where NAME is letters, digits, '.', '_' or '-'."
        )
    if name in strategy_names():
        raise CompareError(f"--variant '{name}' is a strategy's name; name the variant otherwise (e.g. '{name}-run').")
    overrides = tuple(item.strip() for item in _NEXT_KEY.split(rest) if item.strip())
    bad = [item for item in overrides if "=" not in item]
    if bad:
        raise CompareError(f"--variant '{name}': '{bad[0]}' is not key=value.")
    return Variant(name, overrides)


def split_overrides(
    overrides: Sequence[str], strategies: Sequence[str], variants: Sequence[str] = ()
) -> tuple[list[str], dict[str, list[str]]]:
    """Separate `key=value` (every run) from `<strategy or variant>:key=value` (that strategy's or variant's runs)."""
    common: list[str] = []
    specific: dict[str, list[str]] = {s: [] for s in [*strategies, *variants]}
    for item in overrides:
        key = item.partition("=")[0]
        if ":" not in key:
            common.append(item)
            continue
        name, _, rest = item.partition(":")
        if name not in strategy_names() and name not in variants:
            known = ", ".join([*strategy_names(), *variants])
            kind = "strategy or variant" if variants else "strategy"
            raise CompareError(f"Override '{item}' names {kind} '{name}'; valid: {known}.")
        if name not in specific:
            raise CompareError(f"Override '{item}' is for '{name}', which is not in --strategies {list(strategies)}.")
        specific[name].append(rest)
    return common, specific


def plan_runs(
    recipe: str | Path | None,
    strategies: Sequence[str] | None,
    overrides: Sequence[str],
    report_dir: str | Path,
    variants: Sequence[Variant] = (),
) -> list[RunPlan]:
    """One checked config per run (bad keys fail here, before any training); a run after those it reads.

    Without variants there is one run per strategy (`runs/<s>`). With variants and no strategies, one run per
    variant on the recipe's strategy (`runs/<v>`); with both, one run per variant and strategy (`runs/<v>/<s>`,
    named `<v>/<s>`). `{run:NAME}` in an override value is the folder of run NAME of this comparison (in a
    variant x strategy grid, `{run:V}` is variant V's run of the same strategy), which then trains first."""
    runs_dir = Path(report_dir) / RUNS_DIR
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise CompareError(f"--variant names must be unique, got {names}.")
    common, specific = split_overrides(overrides, strategies or [], names)
    recipe_strategy = load_config(recipe, common).strategy.name
    grid = [(v, s) for v in (variants or [None]) for s in (strategies or [None])]
    if strategies is None and not variants:
        raise CompareError("Nothing to compare: give --strategies or at least one --variant.")
    run_names = [_run_name(v, s, bool(variants), strategies is not None) for v, s in grid]
    plans = []
    for (variant, strategy), name in zip(grid, run_names, strict=True):
        own = [*(variant.overrides if variant else ()), *(specific[variant.name] if variant else ())]
        reads: list[str] = []
        own = [*specific.get(strategy, []), *(_resolve_refs(item, name, run_names, runs_dir, reads) for item in own)]
        chosen = strategy or load_config(recipe, [*common, *own]).strategy.name
        home = runs_dir / variant.name if variant is not None and strategies is not None else runs_dir
        context = list(strategies or [chosen])
        plan = _plan(recipe, name, chosen, context, common, own, chosen != recipe_strategy, runs_dir, home)
        plan.variant, plan.depends_on = (variant.name if variant else None), [*plan.depends_on, *reads]
        plans.append(plan)
    return _dependencies_first(plans)


def _run_name(variant: Variant | None, strategy: str | None, variants: bool, grid: bool) -> str:
    if not variants:
        return str(strategy)
    return f"{variant.name}/{strategy}" if grid else variant.name


def _resolve_refs(item: str, name: str, run_names: list[str], runs_dir: Path, reads: list[str]) -> str:
    """`{run:NAME}` -> that run's output folder (NAME appended to `reads`); in a variant x strategy grid
    `{run:V}` is variant V's run of this run's strategy."""

    def folder(match: re.Match) -> str:
        target = match.group(1).strip()
        if "/" in name and "/" not in target:
            target = f"{target}/{name.split('/', 1)[1]}"
        if target not in run_names:
            raise CompareError(
                f"'{item}' ({name}) reads run '{target}', which this comparison does not train; "
                f"its runs: {', '.join(run_names)}."
            )
        if target == name:
            raise CompareError(f"'{item}': run {name} cannot start from its own output.")
        reads.append(target)
        return str(runs_dir / target)

    return _RUN_REF.sub(folder, item)


def _plan(
    recipe: str | Path | None,
    name: str,
    strategy: str,
    strategies: list[str],
    common: list[str],
    own: list[str],
    defaults: bool,
    runs_dir: Path,
    home: Path,
) -> RunPlan:
    """One run's config: the strategy's compare defaults (when `defaults`), every run's overrides, this run's own,
    forced settings, then what the strategy's `compare_plan` adds (reading runs in `home`, the variant's folder)."""
    strategy_cls = strategy_class(strategy)
    user = [*common, *own]
    forced = [
        f"strategy.name={strategy}",
        f"train.output_dir={runs_dir / name}",
        "train.overwrite_output_dir=true",  # reached only for runs that never finished (see runner)
        "hub.push=false",
    ]
    try:
        planned = strategy_cls.compare_plan(load_config(recipe, user), own, strategies, home)
    except ConfigError as err:
        raise CompareError(f"{name}: {err}" if name != strategy else str(err)) from None
    config = load_config(recipe, [*(strategy_cls.compare_defaults if defaults else ()), *user, *forced,
                                  *planned.overrides])  # fmt: skip
    prefix = str(home.relative_to(runs_dir)) + "/" if home != runs_dir else ""
    depends = [f"{prefix}{d}" for d in planned.depends_on]
    return RunPlan(strategy, config, runs_dir / name, depends, list(planned.notes), name=name, overrides=own)


def _dependencies_first(plans: list[RunPlan]) -> list[RunPlan]:
    """The given order, except that a run reading another run of this comparison (a student its teacher, a target
    run its source run) waits until that run is placed; a circle of dependencies is refused."""
    names = {plan.name for plan in plans}
    waiting, ordered, placed = list(plans), [], set()
    while waiting:
        ready = next((p for p in waiting if all(d in placed or d not in names for d in p.depends_on)), None)
        if ready is None:
            raise CompareError(
                f"Runs {[p.name for p in waiting]} read each other's output in a circle; break the circle."
            )
        waiting.remove(ready)
        ordered.append(ready)
        placed.add(ready.name)
    return ordered


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
