"""The Python front door for research code: `finetune(model, train, eval, strategy=..., **options) -> Run`.

It runs the pipeline the CLI runs (same strategies, loops, metrics and output folder), on what a notebook already
holds: a Hub id, a folder or a loaded `PreTrainedModel` (with its tokenizer or image processor), and data as a
`datasets.Dataset`/`DatasetDict`, a pandas DataFrame, a list of dicts, or file paths. Options are recipe keys as
keyword arguments: `epochs=2`, `learning_rate=3e-5`, `text_columns=["text"]`, a strategy's own keys (`r=4` for
LoRA), or dotted keys (`**{"model.revision": "main"}`) where a name is in two sections.
"""

from __future__ import annotations

import dataclasses
import difflib
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict
from torch import nn
from transformers import PreTrainedModel

from hftransfer.artifacts.saved import SavedRun
from hftransfer.config import ConfigError, RunConfig, StrategyConfig, save_config
from hftransfer.config.aliases import alias_target, resolve_recipe_aliases
from hftransfer.config.schema import from_dict, schema_fields, set_dotted
from hftransfer.config.strategies import registered_strategies
from hftransfer.data.labels import LabelMap
from hftransfer.evaluation.scoring import predict_records
from hftransfer.strategies.base import Strategy
from hftransfer.training.pipeline import Given, run_pipeline

SECTIONS = ("model", "data", "train", "hub", "domain")
Data = Dataset | DatasetDict | Mapping | Iterable | str | Path | Any
"""A split as research code holds it: Dataset, DatasetDict, pandas DataFrame, list of dicts, or a file/folder."""


@dataclass
class Run:
    """A finished fine-tuning run: the trained model, its processor and labels, the metrics, the resolved config."""

    model: nn.Module
    processor: Any
    config: RunConfig
    results: dict
    """What `results.json` holds: `eval` (validation metrics), `test` when a test split was given, timings, counts."""
    labels: LabelMap
    output_dir: Path | None
    """The output folder, when `output_dir` was given (else nothing was kept on disk)."""
    splits: DatasetDict | None = None
    """The in-memory splits it trained on (what `save_recipe` writes beside the recipe)."""

    @property
    def metrics(self) -> dict:
        return self.results["eval"]

    def predict(self, inputs: str | Iterable[str | dict], batch_size: int = 64) -> list[dict]:
        """Labels and class probabilities for texts (or image paths for image models), as `hftransfer predict`."""
        records = [inputs] if isinstance(inputs, str) else list(inputs)
        saved = SavedRun(self.output_dir, self.config, self.model.eval(), self.processor, self.labels)
        return list(predict_records(saved, records, batch_size))

    def save_recipe(self, path: str | Path) -> Path:
        """Write the resolved recipe; `hftransfer train PATH` then reproduces the run. In-memory splits are written
        beside it as JSON lines (`<name>-data/<split>.jsonl`) and the recipe points at them; a model passed as an
        object is recorded by its `name_or_path` (the checkpoint it was loaded from)."""
        path = Path(path)
        config = self.config
        if self.splits is not None:
            folder = path.with_name(f"{path.stem}-data")
            folder.mkdir(parents=True, exist_ok=True)
            files = {}
            for name, split in self.splits.items():
                split.to_json(folder / f"{name}.jsonl", lines=True, force_ascii=False)
                files[f"{name}_file"] = str(folder / f"{name}.jsonl")
            config = dataclasses.replace(config, data=dataclasses.replace(config.data, **files))
        save_config(config, path)
        return path


def finetune(
    model: str | Path | PreTrainedModel,
    train: Data,
    eval: Data | None = None,  # the name transformers users expect
    *,
    strategy: str | Strategy | Any = "full",
    processor: Any = None,
    test: Data | None = None,
    output_dir: str | Path | None = None,
    recipe: str | Path | None = None,
    **options: Any,
) -> Run:
    """Fine-tune `model` on `train` (validated on `eval`, else on a held-out share of train) and return the Run.

    `strategy` is a name (`"lora"`), a strategy's settings (`LoraConfig(r=4)`), or a ready `Strategy` (e.g.
    distillation from an in-memory teacher). `processor`: the tokenizer or image processor of an in-memory model
    (loaded from its `name_or_path` when omitted). `recipe`: a YAML recipe the options override. With
    `output_dir` the run writes the same output folder as `hftransfer train`; without, nothing stays on disk.
    """
    tree = _recipe_tree(recipe)
    given = Given(processor=processor)
    if isinstance(model, PreTrainedModel):
        given.model = model
        set_dotted(tree, "model.name_or_path", model.name_or_path or "in-memory model", RunConfig)
    else:
        set_dotted(tree, "model.name_or_path", str(model), RunConfig)
    given.splits = _splits(tree, {"train": train, "validation": eval, "test": test})
    chosen = _strategy(tree, strategy, given)
    _infer_text_columns(tree, given.splits, options)
    for key, value in options.items():
        if alias_target(key, RunConfig):  # TrainingArguments names: num_train_epochs=2, bf16=True, ...
            tree[key] = _plain(value)
        else:
            set_dotted(tree, _dotted(key, chosen), _plain(value), RunConfig)
    tree = resolve_recipe_aliases(tree, RunConfig, source="finetune's options")
    scratch = None if output_dir is not None else Path(tempfile.mkdtemp(prefix="hftransfer-"))
    set_dotted(tree, "train.output_dir", str(output_dir if output_dir is not None else scratch / "run"), RunConfig)
    config = from_dict(RunConfig, tree)
    if given.strategy is not None:
        config = dataclasses.replace(config, strategy=StrategyConfig(chosen, **{chosen: given.strategy.config}))
    try:
        finished = run_pipeline(config, given)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    resolved = finished.run.config
    if scratch is not None:  # the scratch folder is gone: record the default output folder instead
        resolved = dataclasses.replace(resolved, train=dataclasses.replace(resolved.train, output_dir="outputs/run"))
    return Run(
        model=finished.model,
        processor=finished.run.processor,
        config=resolved,
        results=finished.results,
        labels=finished.run.data.labels,
        output_dir=Path(output_dir) if output_dir is not None else None,
        splits=given.splits,
    )


def _recipe_tree(recipe: str | Path | None) -> dict:
    if recipe is None:
        return {}
    from hftransfer.config.files import read_recipe_tree

    return resolve_recipe_aliases(read_recipe_tree(recipe), RunConfig, source=str(recipe))


def _splits(tree: dict, given: dict[str, Data | None]) -> DatasetDict | None:
    """In-memory splits as a DatasetDict; file and folder paths go into the recipe instead (None when all are)."""
    splits: dict[str, Dataset] = {}
    for name, data in given.items():
        if data is None:
            continue
        if isinstance(data, str | Path):
            kind = "dir" if Path(data).is_dir() else "file"
            set_dotted(tree, f"data.{name}_{kind}", str(data), RunConfig)
        elif isinstance(data, DatasetDict):
            splits.update(data)
        else:
            splits[name] = as_dataset(data, name)
    if splits and "train" not in splits:
        raise ConfigError("train: give the training rows in memory too when eval or test are in memory.")
    return DatasetDict(splits) if splits else None


def as_dataset(data: Any, name: str = "train") -> Dataset:
    """A `datasets.Dataset` from a Dataset, a pandas DataFrame, a list of dicts or a dict of columns."""
    if isinstance(data, Dataset):
        return data
    if type(data).__name__ == "DataFrame" and hasattr(data, "to_dict"):
        return Dataset.from_pandas(data, preserve_index=False)
    if isinstance(data, Mapping):
        return Dataset.from_dict(dict(data))
    rows = list(data) if isinstance(data, Iterable) else []
    if rows and all(isinstance(row, Mapping) for row in rows):
        return Dataset.from_list(rows)
    raise ConfigError(
        f"{name}: give a datasets.Dataset, a pandas DataFrame, a list of dicts, a dict of columns or a file path "
        f"(got {type(data).__name__})."
    )


def _strategy(tree: dict, strategy: str | Strategy | Any, given: Given) -> str:
    """The strategy's registered name, recorded in the recipe; a ready Strategy travels in `given`."""
    specs = registered_strategies()
    if isinstance(strategy, str):
        name = strategy
    elif isinstance(strategy, Strategy):
        name, given.strategy = strategy.name, strategy
        tree.setdefault("strategy", {})[name] = _section(strategy.config)
    else:
        name = next((n for n, spec in specs.items() if isinstance(strategy, spec.config_class)), None)
        if name is None:
            raise ConfigError(f"strategy: give a name {sorted(specs)}, a strategy's settings or a Strategy.")
        tree.setdefault("strategy", {})[name] = _section(strategy)
    if name not in specs:
        raise ConfigError(f"strategy '{name}' is unknown; choose one of {sorted(specs)}.")
    set_dotted(tree, "strategy.name", name, RunConfig)
    return name


def _section(settings: Any) -> dict:
    from hftransfer.config.schema import to_dict

    return to_dict(settings)


def _dotted(key: str, strategy: str) -> str:
    """A keyword option's recipe key: as given when dotted, else the one section (or the strategy) that has it."""
    if "." in key:
        return key
    sections = schema_fields(RunConfig)
    owners = [f"{s}.{key}" for s in SECTIONS if key in schema_fields(sections[s])]
    strategy_class = registered_strategies()[strategy].config_class
    if not owners and key in schema_fields(strategy_class):
        owners = [f"strategy.{strategy}.{key}"]
    if len(owners) == 1:
        return owners[0]
    if owners:
        raise ConfigError(f"'{key}' is in {owners}; pass it dotted, e.g. **{{'{owners[0]}': ...}}.")
    known = [f for s in SECTIONS for f in schema_fields(sections[s])] + list(schema_fields(strategy_class))
    close = difflib.get_close_matches(key, known, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else " `hftransfer config RECIPE` lists every key."
    raise ConfigError(f"Unknown option '{key}'.{hint}")


def _infer_text_columns(tree: dict, splits: DatasetDict | None, options: dict) -> None:
    """In-memory text rows without `text_columns`: the one string column besides the label, when unambiguous."""
    if splits is None or "text_columns" in options or "text_columns" in tree.get("data", {}):
        return
    train = splits["train"]
    label = options.get("label_column", tree.get("data", {}).get("label_column", "label"))
    default = schema_fields(RunConfig)["data"]().text_columns
    if all(c in train.column_names for c in default):
        return
    strings = ("string", "large_string")
    texts = [c for c, f in train.features.items() if c != label and getattr(f, "dtype", None) in strings]
    if len(texts) == 1:
        set_dotted(tree, "data.text_columns", texts, RunConfig)


def _plain(value: Any) -> Any:
    """Option values as a recipe holds them (paths as strings, tuples as lists)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value
