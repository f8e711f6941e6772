"""Read back a finished output folder: model, tokenizer (or image processor), recipe and label mapping."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel

from hftransfer.config.recipe import RunConfig, load_config
from hftransfer.data.labels import LabelMap
from hftransfer.models.tasks import get_task, resolve_task
from hftransfer.strategies.lora.strategy import is_adapter_folder, load_adapter_classifier

RECIPE_FILE = "config.yaml"
RESULTS_FILE = "results.json"
LABELS_FILE = "labels.json"


@dataclass
class SavedRun:
    folder: Path
    config: RunConfig
    model: PreTrainedModel
    tokenizer: Any
    """The tokenizer, or the image processor of an image-classification run."""
    labels: LabelMap


def load_run(folder: str | Path) -> SavedRun:
    folder = Path(folder)
    recipe = folder / RECIPE_FILE
    if not recipe.is_file():
        raise FileNotFoundError(f"{folder} is not an hftransfer output folder (no {RECIPE_FILE}).")
    config = resolve_task(load_config(recipe))
    task = get_task(config.task)
    tokenizer = task.load_saved_processor(folder)
    labels_file = folder / LABELS_FILE
    saved = json.loads(labels_file.read_text()) if labels_file.is_file() else None
    labels = LabelMap(names=tuple(saved["names"]), raw_values=tuple(saved["raw_values"])) if saved else None
    if is_adapter_folder(folder):  # LoRA/IA3 run: base model from the recipe, adapter from the folder
        if labels is None:
            raise FileNotFoundError(f"{folder} holds an adapter but no {LABELS_FILE} to size its classifier.")
        model = load_adapter_classifier(folder, config.model, labels, task=config.task)
    else:
        model = task.load_saved_model(folder, config.model)
    labels = labels or LabelMap.from_model_config(model.config.id2label)
    return SavedRun(folder, config, model.eval(), tokenizer, labels)
