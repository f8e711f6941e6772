"""Load pretrained checkpoints as classifiers sized for the data, safely."""

from __future__ import annotations

import logging
from typing import Any

from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

from hftransfer.config import ModelConfig
from hftransfer.data.labels import LabelMap
from hftransfer.errors import UserError
from hftransfer.paths import resolve_location
from hftransfer.pooling import apply_pooling

logger = logging.getLogger("hftransfer")


class ModelError(UserError):
    """A checkpoint that cannot be used as configured."""


def load_tokenizer(config: ModelConfig) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(
        resolve_location(config.name_or_path),
        revision=config.revision,
        trust_remote_code=config.trust_remote_code,
    )


def check_num_labels(config: ModelConfig, labels: LabelMap) -> None:
    if config.num_labels is not None and config.num_labels != labels.num_labels:
        raise ModelError(
            f"model.num_labels is {config.num_labels} but the training data has {labels.num_labels} classes "
            f"{list(labels.names)}. Remove model.num_labels or fix the data."
        )


def new_head_if_needed(model: PreTrainedModel, pretrained: Any, labels: LabelMap, setting: str) -> PreTrainedModel:
    """Re-initialise the classification head for source -> target transfer.

    A head of another size is always new (`ignore_mismatched_sizes`); a same-sized head trained on other
    classes (digits 0-4 -> digits 5-9) is new under `auto` too, since its outputs mean the old classes.
    """
    names = [str(v) for _, v in sorted((int(k), v) for k, v in (getattr(pretrained, "id2label", None) or {}).items())]
    placeholder = all(name == f"LABEL_{i}" for i, name in enumerate(names))
    other_classes = len(names) == labels.num_labels and not placeholder and tuple(names) != tuple(labels.names)
    if setting == "always" or (setting == "auto" and other_classes):
        backbone = getattr(model, "base_model", None)
        for child in model.children():
            if child is not backbone:
                for module in child.modules():
                    if hasattr(module, "reset_parameters"):
                        module.reset_parameters()
        logger.info("New classification head for classes %s (the checkpoint's were %s)", list(labels.names), names)
    return model


def load_classifier(config: ModelConfig, labels: LabelMap) -> PreTrainedModel:
    """A sequence classifier whose head matches `labels`; safetensors only, no remote code by default."""
    check_num_labels(config, labels)
    location = resolve_location(config.name_or_path)
    pretrained = AutoConfig.from_pretrained(
        location, revision=config.revision, trust_remote_code=config.trust_remote_code
    )
    if pretrained.model_type not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES and not config.trust_remote_code:
        raise ModelError(
            f"'{config.name_or_path}' is a '{pretrained.model_type}' model, which has no sequence-classification "
            "head in transformers. Pick an encoder checkpoint (BERT, RoBERTa, DistilBERT, ...)."
        )
    model = AutoModelForSequenceClassification.from_pretrained(
        location,
        revision=config.revision,
        trust_remote_code=config.trust_remote_code,
        use_safetensors=True,
        num_labels=labels.num_labels,
        id2label=labels.id2label,
        label2id=labels.label2id,
        # Explicit, so one label never means regression and int labels never mean multi-label.
        problem_type="single_label_classification",
        # A checkpoint fine-tuned on another label set gets a fresh head instead of a shape error.
        ignore_mismatched_sizes=True,
    )
    return apply_pooling(new_head_if_needed(model, pretrained, labels, config.new_head), config.pooling)


def count_parameters(model: PreTrainedModel) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
