"""Read back a finished output folder: model, tokenizer, recipe and label mapping."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from hftransfer.config import RunConfig, load_config
from hftransfer.data.labels import LabelMap

RECIPE_FILE = "config.yaml"
RESULTS_FILE = "results.json"
LABELS_FILE = "labels.json"


@dataclass
class SavedRun:
    folder: Path
    config: RunConfig
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    labels: LabelMap


def load_run(folder: str | Path) -> SavedRun:
    folder = Path(folder)
    recipe = folder / RECIPE_FILE
    if not recipe.is_file():
        raise FileNotFoundError(f"{folder} is not an hftransfer output folder (no {RECIPE_FILE}).")
    config = load_config(recipe)
    model = AutoModelForSequenceClassification.from_pretrained(folder, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    labels_file = folder / LABELS_FILE
    if labels_file.is_file():
        saved = json.loads(labels_file.read_text())
        labels = LabelMap(names=tuple(saved["names"]), raw_values=tuple(saved["raw_values"]))
    else:
        labels = LabelMap.from_model_config(model.config.id2label)
    return SavedRun(folder, config, model.eval(), tokenizer, labels)
