"""Turn one recipe and `--strategies` into one run config per strategy, checked before anything trains.

Each run is the recipe with `strategy.name=<s>`, compare's per-strategy defaults (`STRATEGY_DEFAULTS`),
the user's overrides for every run, then the user's `<s>:key=value` overrides for that run only. All runs
share the data, seed and every other key, and write into `<report>/runs/<s>`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hftransfer.config.recipe import RunConfig, load_config
from hftransfer.config.schema import to_dict
from hftransfer.errors import UserError
from hftransfer.strategies import strategy_names

DEFAULT_STRATEGIES = ("full", "frozen", "lora", "distill")
RUNS_DIR = "runs"

STRATEGY_DEFAULTS: dict[str, tuple[str, ...]] = {
    # LoRA needs a far higher learning rate than full fine-tuning (recipes/text-sst2-minilm-lora.yaml: 2e-3;
    # 5e-4 ends ~10 points lower after one epoch). Applied only when the recipe is not itself a LoRA recipe.
    "lora": ("train.learning_rate=2e-3",),
    # compare times every run's inference itself, interleaved; the distill-only teacher/student timing is redundant.
    "distill": ("strategy.distill.measure_latency=false",),
}
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
    """One checked config per strategy (bad keys fail here, before any training); `full` runs before `distill`."""
    runs_dir = Path(report_dir) / RUNS_DIR
    common, specific = split_overrides(overrides, strategies)
    recipe_strategy = load_config(recipe, common).strategy.name
    plans = []
    for name in strategies:
        defaults = list(STRATEGY_DEFAULTS.get(name, ())) if name != recipe_strategy else []
        user = [*common, *specific[name]]
        forced = [
            f"strategy.name={name}",
            f"train.output_dir={runs_dir / name}",
            "train.overwrite_output_dir=true",  # reached only for runs that never finished (see runner)
            "hub.push=false",
        ]
        depends_on: list[str] = []
        notes: list[str] = []
        if name == "distill":
            settings, depends_on, notes = _distill_settings(recipe, user, specific[name], strategies, runs_dir)
            forced += settings
        config = load_config(recipe, [*defaults, *user, *forced])
        plans.append(RunPlan(name, config, runs_dir / name, depends_on, notes))
    if "distill" in strategies and "full" in strategies:  # the teacher trains first
        plans.sort(key=lambda p: p.strategy == "distill")
    return plans


def _distill_settings(
    recipe: str | Path | None, user: list[str], distill_only: list[str], strategies: Sequence[str], runs_dir: Path
) -> tuple[list[str], list[str], list[str]]:
    """(overrides, dependencies, notes) for the distill run: unless the recipe names a teacher, the teacher is
    this comparison's `full` run and the student is cut from it (every other block, DistilBERT-style)."""
    wanted = load_config(recipe, user)  # the recipe as the user left it (any strategy name)
    if wanted.strategy.distill.teacher:
        return [], [], [f"distill: teacher {wanted.strategy.distill.teacher} (named by the recipe or overrides)"]
    if "full" not in strategies:
        raise CompareError(
            "distill needs a teacher: add 'full' to --strategies (compare then distils its full run), or name one "
            "with distill:strategy.distill.teacher=<output folder or Hub id>."
        )
    teacher = runs_dir / "full"
    settings = [f"strategy.distill.teacher={teacher}"]
    if any(item.partition("=")[0].strip() == "model.name_or_path" for item in distill_only):
        return settings, ["full"], [f"distill: teacher = the full run; student {wanted.model.name_or_path}"]
    layers = wanted.strategy.distill.student_layers or _every_other_block(wanted)
    settings += [f"model.name_or_path={teacher}", f"strategy.distill.student_layers={list(layers)}"]
    note = f"distill: teacher = the full run; student = its blocks {list(layers)} with its embeddings and head"
    return settings, ["full"], [note]


def _every_other_block(config: RunConfig) -> list[int]:
    from transformers import AutoConfig

    from hftransfer.config.locations import resolve_location

    model = config.model
    pretrained = AutoConfig.from_pretrained(
        resolve_location(model.name_or_path), revision=model.revision, trust_remote_code=model.trust_remote_code
    )
    depth = getattr(pretrained, "num_hidden_layers", None)
    if not isinstance(depth, int) or depth < 1:
        raise CompareError(
            f"Cannot cut a distill student from a '{pretrained.model_type}' model (no transformer blocks). Set "
            "distill:model.name_or_path=<a smaller student> or distill:strategy.distill.student_layers=[...]."
        )
    return list(range(0, depth, 2))


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
