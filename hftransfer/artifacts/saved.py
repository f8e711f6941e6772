"""Read back a finished output folder: model, tokenizer (or image processor), recipe and label mapping."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel

from hftransfer.artifacts.layout import ADAPTER_CONFIG_FILE, LABELS_FILE, RECIPE_FILE
from hftransfer.config.recipe import RunConfig, load_config
from hftransfer.data.labels import LabelMap
from hftransfer.models.tasks import get_task, resolve_task
from hftransfer.strategies.base import Strategy
from hftransfer.strategies.registry import strategy_class


@dataclass
class SavedRun:
    folder: Path
    config: RunConfig
    model: PreTrainedModel
    tokenizer: Any
    """The tokenizer, or the image processor of an image-classification run."""
    labels: LabelMap


def is_run_folder(folder: str | Path) -> bool:
    return (Path(folder) / RECIPE_FILE).is_file()


def is_adapter_folder(folder: str | Path) -> bool:
    """A peft adapter (its base model loads separately), an hftransfer LoRA run or a bare adapter."""
    return (Path(folder) / ADAPTER_CONFIG_FILE).is_file()


def read_labels(folder: str | Path) -> LabelMap | None:
    """The label map a run saved (`labels.json`), or None when the folder has none."""
    path = Path(folder) / LABELS_FILE
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    return LabelMap(names=tuple(saved["names"]), raw_values=tuple(saved["raw_values"]))


def write_labels(folder: str | Path, labels: LabelMap) -> None:
    from hftransfer.artifacts.layout import write_json

    write_json(Path(folder) / LABELS_FILE, {"names": list(labels.names), "raw_values": list(labels.raw_values)})


def read_recipe(folder: str | Path) -> RunConfig:
    """The run's saved recipe through the schema, `task: auto` resolved."""
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"Folder {folder} does not exist (relative to {Path.cwd()}); give an output folder.")
    if not is_run_folder(folder):
        raise FileNotFoundError(f"{folder} is not an hftransfer output folder (no {RECIPE_FILE}).")
    return resolve_task(load_config(folder / RECIPE_FILE))


def load_run(folder: str | Path) -> SavedRun:
    """The run's model as its strategy saved it (a whole model, or base + adapter), in eval mode."""
    folder = Path(folder)
    config = read_recipe(folder)
    task = get_task(config.task)
    tokenizer = task.load_saved_processor(folder)
    labels = read_labels(folder)
    strategy = strategy_class(config.strategy.name)
    if strategy.saves_adapter and not is_adapter_folder(folder):
        strategy = Strategy  # an adapter run exported merged (`export --merge`): a whole model now
    if strategy.saves_adapter and labels is None:
        raise FileNotFoundError(f"{folder} holds an adapter but no {LABELS_FILE} to size its classifier.")
    model = strategy.load_saved(folder, config, labels, task)
    labels = labels or LabelMap.from_model_config(model.config.id2label)
    return SavedRun(folder, config, model.eval(), tokenizer, labels)
