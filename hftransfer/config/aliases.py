"""Hugging Face habits in recipes: `TrainingArguments` names as aliases of hftransfer's keys, the
`train.trainer_args` pass-through for the rest, and "did you mean" hints for keys that fit nowhere.

An alias is read at the top level (`num_train_epochs: 3`) or under `train:` (`train.num_train_epochs=3`) and
lands on its canonical key (`train.epochs`), so a saved recipe only ever holds canonical keys. Nothing here
imports transformers unless a recipe sets `train.trainer_args` or a key is unknown (the hint looks it up).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from collections.abc import Callable
from typing import Any

from hftransfer.config.schema import ConfigError, is_schema, register_unknown_key_hint, schema_fields

ALIASES: dict[str, str] = {
    "per_device_train_batch_size": "train.batch_size",
    "per_device_eval_batch_size": "train.eval_batch_size",
    "num_train_epochs": "train.epochs",
    "max_steps": "train.max_steps",
    "learning_rate": "train.learning_rate",
    "lr_scheduler_type": "train.lr_scheduler",
    "weight_decay": "train.weight_decay",
    "warmup_ratio": "train.warmup_ratio",
    "gradient_accumulation_steps": "train.gradient_accumulation_steps",
    "max_grad_norm": "train.max_grad_norm",
    "seed": "train.seed",
    "bf16": "train.precision",
    "fp16": "train.precision",
    "logging_steps": "train.logging_steps",
    "eval_strategy": "train.eval_steps",
    "eval_steps": "train.eval_steps",
    "save_steps": "train.save_steps",
    "save_total_limit": "train.save_total_limit",
    "load_best_model_at_end": "train.load_best_at_end",
    "metric_for_best_model": "train.best_metric",
    "resume_from_checkpoint": "train.resume_from",
    "output_dir": "train.output_dir",
    "overwrite_output_dir": "train.overwrite_output_dir",
    "dataloader_num_workers": "train.num_workers",
    "report_to": "train.report_to",
    "push_to_hub": "hub.push",
    "hub_model_id": "hub.repo_id",
    "hub_private_repo": "hub.private",
    "hub_revision": "hub.revision",
}
"""`TrainingArguments` name -> hftransfer's key for the same setting."""

MANAGED: dict[str, str] = {
    "warmup_steps": "set train.warmup_ratio (a share of the training steps)",
    "save_strategy": "set train.save_steps (empty: only the final model is written) and train.load_best_at_end",
    "greater_is_better": "it follows train.best_metric (loss is minimised, the others maximised)",
    "optim": "both loops train with hftransfer's AdamW over the strategy's parameter groups",
    "optim_args": "both loops train with hftransfer's AdamW over the strategy's parameter groups",
    "adam_beta1": "both loops train with hftransfer's AdamW over the strategy's parameter groups",
    "adam_beta2": "both loops train with hftransfer's AdamW over the strategy's parameter groups",
    "adam_epsilon": "both loops train with hftransfer's AdamW over the strategy's parameter groups",
    "optim_target_modules": "the strategy decides what trains",
    "data_seed": "batches come from data.batching and train.seed",
    "dataloader_drop_last": "batches come from data.batching and train.seed",
    "train_sampling_strategy": "batches come from data.batching and train.seed",
    "remove_unused_columns": "the data pipeline relies on its value",
    "label_names": "the data pipeline relies on its value",
    "use_cpu": "a GPU is used when there is one; hide it with CUDA_VISIBLE_DEVICES= to train on CPU",
    "hub_token": "the token comes from `hf auth login` or HF_TOKEN, never from a recipe",
}
"""`TrainingArguments` names hftransfer sets itself (or that its loops would ignore): refused with the reason."""

ACCELERATE_HONOURS = (
    "activation_checkpointing",
    "activation_checkpointing_kwargs",
    "gradient_checkpointing",
    "gradient_checkpointing_kwargs",
    "label_smoothing_factor",
)
"""`train.trainer_args` that the Accelerate loop applies too (the same way as the Trainer loop)."""

_MISSING = object()


@functools.cache
def training_argument_names() -> tuple[str, ...]:
    """Every field of the installed `transformers.TrainingArguments` (imports transformers)."""
    from transformers import TrainingArguments

    return tuple(f.name for f in dataclasses.fields(TrainingArguments) if f.init)


def _precision(dtype: str) -> Callable[[Any, str], Any]:
    def convert(on: Any, where: str) -> Any:
        if not isinstance(on, bool):
            raise ConfigError(f"'{where}' expects true or false, got {on!r}.")
        return dtype if on else _Weak(dtype)

    return convert


@dataclasses.dataclass(frozen=True)
class _Weak:
    """`bf16: false`: fp32 unless another key chose a precision; contradicts only `precision: bf16`."""

    refused: str


def _eval_strategy(value: Any, where: str) -> Any:
    if value == "epoch":
        return None
    if value == "steps":
        return _MISSING  # train.eval_steps must come from elsewhere; checked once every key is in
    raise ConfigError(
        f"'{where}: {value}' is not supported: runs evaluate every epoch (eval_strategy=epoch, train.eval_steps "
        "empty) or every N steps (train.eval_steps=N)."
    )


def _best_metric(value: Any, where: str) -> Any:
    return value[len("eval_") :] if isinstance(value, str) and value.startswith("eval_") else value


def _resume(value: Any, where: str) -> Any:
    return {True: "latest", False: None}.get(value, value) if isinstance(value, bool) else value


def _report_to(value: Any, where: str) -> Any:
    return [] if value in ("none", None, ["none"]) else value


CONVERT: dict[str, Callable[[Any, str], Any]] = {
    "bf16": _precision("bf16"),
    "fp16": _precision("fp16"),
    "eval_strategy": _eval_strategy,
    "metric_for_best_model": _best_metric,
    "resume_from_checkpoint": _resume,
    "report_to": _report_to,
}
"""HF value -> hftransfer value, where they differ (`bf16: true` -> `train.precision: bf16`)."""


def alias_target(dotted_key: str, schema: type) -> str | None:
    """The canonical key an alias stands for (`num_train_epochs` or `train.num_train_epochs`), else None."""
    parts = dotted_key.split(".")
    if len(parts) == 1 and parts[0] not in schema_fields(schema):
        return ALIASES.get(parts[0])
    if len(parts) == 2 and parts[0] == "train":
        train_fields = schema_fields(_section(schema, "train"))
        if parts[1] not in train_fields:
            return ALIASES.get(parts[1])
    return None


def _section(schema: type, name: str) -> type:
    return schema_fields(schema)[name]


def _get(tree: dict, dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _put(tree: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = tree
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[last] = value


def _same(a: Any, b: Any) -> bool:
    def norm(v: Any) -> Any:
        if isinstance(v, str):
            try:
                return float(v)
            except ValueError:
                return v
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
        return v

    if isinstance(a, list) != isinstance(b, list):
        a, b = (a if isinstance(a, list) else [a]), (b if isinstance(b, list) else [b])
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return norm(a) == norm(b)


def _translate(name: str, value: Any, where: str) -> Any:
    convert = CONVERT.get(name)
    return convert(value, where) if convert else value


def resolve_recipe_aliases(tree: dict, schema: type, source: str = "the recipe") -> dict:
    """`tree` (a recipe as read) with every alias moved onto its canonical key; an alias and a key that give
    the same setting different values are an error, whichever was meant."""
    tree = {**tree}
    found: list[tuple[str, str, Any]] = []  # (where it was written, alias name, value)
    for key in [k for k in tree if alias_target(str(k), schema)]:
        found.append((str(key), str(key), tree.pop(key)))
    if isinstance(tree.get("train"), dict):
        tree["train"] = train = {**tree["train"]}
        for key in [k for k in train if alias_target(f"train.{k}", schema)]:
            found.append((f"train.{key}", str(key), train.pop(key)))
    for sub in ("hub",):
        if isinstance(tree.get(sub), dict):
            tree[sub] = {**tree[sub]}
    set_by: dict[str, str] = {}
    translated = [(where, name, _translate(name, value, where), value) for where, name, value in found]
    weak_last = sorted(translated, key=lambda item: isinstance(item[2], _Weak))
    for where, name, value, raw in weak_last:
        target = ALIASES[name]
        current = _get(tree, target)
        if value is _MISSING:
            continue
        if isinstance(value, _Weak):
            if current is _MISSING:
                _put(tree, target, "fp32")
                set_by[target] = f"{where}: {raw}"
            elif current == value.refused:
                raise _conflict(source, target, f"{where}: {raw}", set_by.get(target, f"{target}: {current}"))
            continue
        if current is not _MISSING and not _same(current, value):
            raise _conflict(source, target, f"{where}: {raw}", set_by.get(target, f"{target}: {current}"))
        _put(tree, target, value)
        set_by[target] = f"{where}: {raw}"
    _check_eval_strategy(tree, [(w, n, v) for w, n, v, _ in translated])
    return tree


def _conflict(source: str, target: str, one: str, other: str) -> ConfigError:
    return ConfigError(
        f"{source} sets {target} twice, differently: '{one}' and '{other}'. Keep one ({target} is hftransfer's name)."
    )


def _check_eval_strategy(tree: dict, translated: list[tuple[str, str, Any]]) -> None:
    for where, name, value in translated:
        if name == "eval_strategy" and value is _MISSING and _get(tree, "train.eval_steps") in (None, _MISSING):
            raise ConfigError(f"'{where}: steps' needs eval_steps (train.eval_steps=N) as well.")


def apply_overrides(tree: dict, overrides: list[tuple[str, Any]], schema: type, set_dotted: Callable) -> None:
    """`key=value` overrides in order, an alias landing on its canonical key (a later override wins, as always)."""
    translated = []
    for key, value in overrides:
        target = alias_target(key, schema)
        if target is None:
            set_dotted(tree, key, value, schema)
            continue
        name = key.rpartition(".")[2]
        converted = _translate(name, value, key)
        translated.append((key, name, converted))
        if isinstance(converted, _Weak):
            if _get(tree, target) in (_MISSING, "auto", None, converted.refused):
                set_dotted(tree, target, "fp32", schema)
        elif converted is not _MISSING:
            set_dotted(tree, target, converted, schema)
    _check_eval_strategy(tree, translated)


def check_trainer_args(args: dict[str, Any], loop: str) -> None:
    """`train.trainer_args` against the installed `TrainingArguments`, before any model loads."""
    if not args:
        return
    for name in args:
        if name in ALIASES:
            raise ConfigError(f"train.trainer_args.{name} is hftransfer's {ALIASES[name]}; set that instead.")
        if name in MANAGED:
            raise ConfigError(f"train.trainer_args.{name} cannot be set: {MANAGED[name]}.")
    known = training_argument_names()
    for name in args:
        if name not in known:
            close = difflib.get_close_matches(str(name), known, n=5, cutoff=0.6)
            hint = f" Close names: {', '.join(close)}." if close else ""
            raise ConfigError(f"train.trainer_args.{name} is not an argument of the installed TrainingArguments.{hint}")
    if loop == "accelerate":
        refused = [name for name in args if name not in ACCELERATE_HONOURS]
        if refused:
            raise ConfigError(
                f"train.loop=accelerate does not apply train.trainer_args {', '.join(refused)} (it honours "
                f"{', '.join(ACCELERATE_HONOURS)}); use train.loop=trainer or drop them."
            )
    smoothing = args.get("label_smoothing_factor", 0.0)
    if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) or not 0.0 <= smoothing < 1.0:
        raise ConfigError(f"train.trainer_args.label_smoothing_factor is a number in [0, 1), got {smoothing!r}.")
    for name in ("gradient_checkpointing", "activation_checkpointing"):
        if not isinstance(args.get(name, False), bool):
            raise ConfigError(f"train.trainer_args.{name} expects true or false, got {args[name]!r}.")


def unknown_key_hint(full: str, key: str, cls: type) -> str:
    """What an unknown key probably meant: the section that has it, hftransfer's name for a TrainingArguments
    name, the pass-through for other TrainingArguments names, or the closest valid names."""
    fields = schema_fields(cls)
    section = full.rpartition(".")[0]
    if not section:
        homes = [f"{name}.{key}" for name, tp in fields.items() if is_schema(tp) and key in schema_fields(tp)]
        nested = {f"{name}.{sub}": sub for name, tp in fields.items() if is_schema(tp) for sub in schema_fields(tp)}
        close = difflib.get_close_matches(key, list(nested.values()), n=1, cutoff=0.8)  # `epoch=1`: a near miss
        homes = homes or [full_key for full_key, sub in nested.items() if close and sub == close[0]]
        if homes:
            return f" Did you mean {' or '.join(repr(h) for h in homes)}? Keys live in their section."
    hf_level = section in ("", "train")
    if hf_level:
        if key in MANAGED:
            return f" '{key}' is a TrainingArguments argument hftransfer does not take: {MANAGED[key]}."
        if key in _known_hf_names():
            return f" '{key}' is a TrainingArguments argument: pass it as train.trainer_args.{key}=VALUE."
    candidates = list(fields) + (list(ALIASES) if hf_level else [])
    match = difflib.get_close_matches(key, candidates, n=1, cutoff=0.5)
    if not match:
        return f" Valid keys: {', '.join(sorted(fields))}."
    if match[0] in fields:
        return f" Did you mean '{match[0]}'?"
    return f" Did you mean '{match[0]}' (hftransfer's {ALIASES[match[0]]})?"


def _known_hf_names() -> tuple[str, ...]:
    try:
        return training_argument_names()
    except ImportError:  # a hint is never worth failing over
        return ()


__all__ = [
    "ACCELERATE_HONOURS",
    "ALIASES",
    "MANAGED",
    "alias_target",
    "apply_overrides",
    "check_trainer_args",
    "resolve_recipe_aliases",
    "training_argument_names",
    "unknown_key_hint",
]


register_unknown_key_hint(unknown_key_hint)
