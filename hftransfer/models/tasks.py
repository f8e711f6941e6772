"""Per-task pieces (text or image classification) behind one interface, so the pipeline, scoring and saved
runs never branch on the modality: processor, data, model, collator, and how a finished run reloads."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict
from transformers import PreTrainedModel

from hftransfer.config.recipe import DataConfig, ModelConfig, RunConfig
from hftransfer.data.labels import LabelMap

TEXT = "text-classification"
IMAGE = "image-classification"


@dataclass(frozen=True)
class Task:
    name: str
    auto_class: type
    """The transformers Auto class of this task's classifiers (`hftransfer.models.loading.load_classification_model`)."""
    load_processor: Callable[[ModelConfig], Any]
    """Tokenizer (text) or image processor (images) of the checkpoint."""
    prepare_data: Callable[[DataConfig, Any], Any]
    """(data config, processor) -> PreparedData."""
    load_model: Callable[[ModelConfig, LabelMap], PreTrainedModel]
    make_collator: Callable[[Any, DataConfig], Callable]
    load_splits: Callable[..., DatasetDict]
    """(data config, need_train=...) -> raw splits."""
    load_file: Callable[[str, DataConfig], Dataset]
    """One labelled file as a raw split (`evaluate --file`)."""
    encode_split: Callable[[Dataset, LabelMap, DataConfig, str, Any], Dataset]
    """(raw split, labels, data config, split name, processor) -> model-ready rows."""
    load_saved_processor: Callable[[Path], Any]

    def load_model_as_saved(self, location: str | Path, revision: str | None = None) -> tuple[PreTrainedModel, list]:
        """A classifier as it was saved (its own head and class names), and the weights it lacked."""
        from hftransfer.models.loading import load_classification_model

        return load_classification_model(self.auto_class, str(location), revision=revision)

    def load_saved_model(self, folder: Path, model_config: ModelConfig) -> PreTrainedModel:
        """A full (non-adapter) model saved in an output folder, with the recipe's `model.pooling` re-applied."""
        from hftransfer.models.pooling import apply_pooling

        return apply_pooling(self.load_model_as_saved(folder)[0], model_config.pooling)


def _text() -> Task:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hftransfer.data import DynamicPaddingCollator, load_splits, prepare_text_data, tokenize_split
    from hftransfer.data.sources import single_file_split
    from hftransfer.models.loading import load_classifier, load_tokenizer

    def encode(raw, labels, config, name, tokenizer):
        return tokenize_split(labels.encode(raw, config.label_column, name), tokenizer, config, name)

    return Task(
        name=TEXT,
        auto_class=AutoModelForSequenceClassification,
        load_processor=load_tokenizer,
        prepare_data=prepare_text_data,
        load_model=load_classifier,
        make_collator=lambda tokenizer, _config: DynamicPaddingCollator(tokenizer),
        load_splits=load_splits,
        load_file=single_file_split,
        encode_split=encode,
        load_saved_processor=AutoTokenizer.from_pretrained,
    )


def _image() -> Task:
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from hftransfer.data.images import (
        ImageCollator,
        encode_image_split,
        load_image_file,
        load_image_splits,
        prepare_image_data,
    )
    from hftransfer.models.images import load_image_classifier, load_image_processor

    return Task(
        name=IMAGE,
        auto_class=AutoModelForImageClassification,
        load_processor=load_image_processor,
        prepare_data=prepare_image_data,
        load_model=load_image_classifier,
        make_collator=lambda processor, config: ImageCollator(processor, config.images),
        load_splits=load_image_splits,
        load_file=load_image_file,
        encode_split=lambda raw, labels, config, name, _processor: encode_image_split(raw, labels, config, name)[0],
        load_saved_processor=AutoImageProcessor.from_pretrained,
    )


_FACTORIES: dict[str, Callable[[], Task]] = {TEXT: _text, IMAGE: _image}


def get_task(name: str) -> Task:
    return _FACTORIES[name]()


def infer_task(model: ModelConfig) -> str:
    """Image classification for vision checkpoints, text classification otherwise."""
    from transformers import AutoConfig

    from hftransfer.config.locations import resolve_location
    from hftransfer.models.images import is_image_model_type

    try:
        pretrained = AutoConfig.from_pretrained(
            resolve_location(model.name_or_path), revision=model.revision, trust_remote_code=model.trust_remote_code
        )
    except (OSError, ValueError):
        return TEXT  # the model loader reports the unreadable checkpoint with its own message
    return IMAGE if is_image_model_type(pretrained.model_type) else TEXT


def resolve_task(config: RunConfig) -> RunConfig:
    """The config with `task: auto` replaced by the checkpoint's modality (saved recipes record it)."""
    if config.task != "auto":
        return config
    return dataclasses.replace(config, task=infer_task(config.model))
