"""Frozen features of a checkpoint on a data set: what `hftransfer rank` and `hftransfer shift` measure on.

Rows are read by the training pipeline's own loaders (a recipe's split, one labelled file, an image folder),
so columns, labels and TSV quirks behave as in `hftransfer train`; a `.txt` file (one text per line) is
accepted too, for unlabelled text. Text features are the attention-masked mean of the last hidden states
(a checkpoint's BERT pooler may be untrained, see `pooling.py`), or with `layers="mean"` the average of that
mean over every hidden state (embedding output and each block): fine-tuning trains every block, and a
checkpoint whose last block was specialised for its pretraining task can hold better features below it
(README, "Choose before you train"). Image features are exactly what the checkpoint's classification head
reads (the pooled output of ResNet/ConvNeXt, the [CLS] state of ViT).
Forward passes run batched, in eval mode, without gradients.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from datasets import Dataset
from torch import nn

from hftransfer.artifacts.saved import is_adapter_folder, is_run_folder, read_recipe
from hftransfer.config.locations import resolve_location
from hftransfer.config.recipe import DataConfig, ModelConfig, load_config
from hftransfer.data.labels import LabelMap, require_columns, require_two_classes
from hftransfer.data.sources import DataError
from hftransfer.errors import UserError
from hftransfer.models.loading import ModelError
from hftransfer.models.tasks import checkpoint_task, get_task

if TYPE_CHECKING:
    pass

RECIPE_SUFFIXES = (".yaml", ".yml")
LAYER_CHOICES = ("last", "mean")
"""Which hidden states text features pool: the last block's, or the mean over all of them."""


@dataclass(frozen=True)
class DataSpec:
    """Where rows come from, as the user named them on the command line."""

    location: str
    """A YAML recipe (its data section), a csv/tsv/json/jsonl/parquet file, a `.txt` file, or an image folder."""
    split: str = "train"
    """Recipes only: which of the recipe's splits (train, validation, test)."""
    text_columns: Sequence[str] | None = None
    """Overrides the recipe's (or the default `sentence`) text columns."""
    label_column: str | None = None
    max_rows: int | None = None
    """Keep a random sample of this many rows (seed `seed`)."""
    seed: int = 0

    @property
    def is_recipe(self) -> bool:
        return self.location.endswith(RECIPE_SUFFIXES)

    def option(self, key: str) -> str:
        """How the user sets a data key for this spec: a recipe key or a command-line flag."""
        flag = {"text_columns": "--text-columns", "label_column": "--label-column"}[key]
        return f"data.{key} in the recipe (or {flag})" if self.is_recipe else flag


def data_config(spec: DataSpec) -> tuple[DataConfig, str | None]:
    """The data settings that read `spec`, and the task a recipe declares (None for plain files)."""
    declared = None
    if spec.is_recipe:
        config = load_config(resolve_location(spec.location))
        data, declared = config.data, (None if config.task == "auto" else config.task)
    else:
        data = DataConfig()
    changes = {}
    if spec.text_columns:
        changes["text_columns"] = list(spec.text_columns)
    if spec.label_column:
        changes["label_column"] = spec.label_column
    return dataclasses.replace(data, **changes), declared


def checkpoint_task_of(name: str) -> str:
    """Text or image: the candidate's modality. An hftransfer LoRA/IA3 run is read through its recipe (its features
    come from the adapter merged into its base, `loadable_checkpoint`); a bare adapter folder is refused."""
    location = resolve_location(name)
    if is_adapter_folder(location):
        if is_run_folder(location):
            return read_recipe(location).task
        raise ModelError(
            f"'{name}' holds a LoRA/IA3 adapter without an hftransfer recipe, not a whole model. Merge it into its "
            "base model first and pass that folder."
        )
    return checkpoint_task(name)


@contextmanager
def loadable_checkpoint(name: str) -> Iterator[str]:
    """`name` itself, or for an hftransfer LoRA/IA3 run a temporary folder holding the adapter merged into its base
    (what `hftransfer export RUN --merge` writes), deleted afterwards."""
    location = resolve_location(name)
    if not (is_adapter_folder(location) and is_run_folder(location)):
        yield name
        return
    from hftransfer.artifacts.export import export_run

    with tempfile.TemporaryDirectory(prefix="hftransfer-merged-") as scratch:
        yield str(export_run(location, Path(scratch) / "merged", merge=True))


def common_task(models: Sequence[str], declared: str | None = None) -> str:
    """The one modality every candidate (and the recipe, if it names one) shares."""
    if not models:
        raise UserError("No models given; name at least one checkpoint.")
    found = {name: checkpoint_task_of(name) for name in models}
    kinds = set(found.values())
    if len(kinds) > 1:
        raise UserError(f"The checkpoints mix text and image models ({found}); compare one modality at a time.")
    task = kinds.pop()
    if declared and declared != task:
        raise UserError(f"The recipe says task: {declared}, but the checkpoints are {task} models.")
    return task


def read_rows(spec: DataSpec, data: DataConfig, task: str) -> Dataset:
    """The raw rows of `spec` (text columns or image references, plus the label column when there is one)."""
    if spec.max_rows is not None and spec.max_rows < 1:
        raise UserError(f"--max-rows must be at least 1, got {spec.max_rows}.")
    if spec.is_recipe:
        splits = get_task(task).load_splits(data, need_train=spec.split in ("train", "validation"))
        if spec.split not in splits:
            raise DataError(f"{spec.location} has no '{spec.split}' split; it has {sorted(splits)}.")
        rows = splits[spec.split]
    else:
        rows = get_task(task).read_path(resolve_location(spec.location), data)
    if spec.max_rows is not None and len(rows) > spec.max_rows:
        rows = rows.shuffle(seed=spec.seed).select(range(spec.max_rows))
    return get_task(task).check_feature_rows(rows, data, spec.location, spec.option("text_columns"))


def label_rows(rows: Dataset, data: DataConfig, spec: DataSpec) -> tuple[Dataset, LabelMap]:
    """Rows with integer `labels` (ids discovered as in training) and the label map."""
    require_columns(rows, [data.label_column], spec.location, spec.option("label_column"))
    labels = require_two_classes(LabelMap.discover(rows, data.label_column, data.label_names), spec.location)
    return labels.encode(rows, data.label_column, spec.location), labels


def check_layers_choice(layers: str, task: str) -> None:
    if layers not in LAYER_CHOICES:
        raise UserError(f"Unknown feature layers '{layers}'; choose one of {', '.join(LAYER_CHOICES)}.")
    if layers == "mean" and not get_task(task).averages_layers:
        raise UserError(
            "Layer-mean features average hidden states of one width, which text encoders have; an image model's "
            "stages differ in width. Use the last layer's features (--layers last) for image checkpoints."
        )


def load_feature_model(name: str, task: str, layers: str = "last") -> tuple[nn.Module, Callable]:
    """The checkpoint and a `read(output, inputs) -> [batch, dims]` that pulls the features out of a forward pass."""
    check_layers_choice(layers, task)
    return get_task(task).feature_model(name, layers)


def extract_features(
    name: str,
    rows: Dataset,
    data: DataConfig,
    task: str,
    batch_size: int = 64,
    device: str | None = None,
    layers: str = "last",
) -> np.ndarray:
    """[rows, dims] float32 features of checkpoint `name`, in row order; `layers` as in LAYER_CHOICES."""
    from hftransfer.evaluation.inference import dataset_outputs

    modality = get_task(task)
    with loadable_checkpoint(name) as location:
        processor = modality.load_processor(ModelConfig(name_or_path=location))
        encoded = modality.encode_inputs(rows, data, "features", processor)
        model, read = load_feature_model(location, task, layers)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    collator = modality.collator(processor, data)
    shown = name.rstrip("/").rsplit("/", 1)[-1] or name
    return dataset_outputs(model, encoded, collator, read, batch_size, device, desc=f"features of {shown}")
