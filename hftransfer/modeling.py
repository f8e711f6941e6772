"""Load pretrained checkpoints as classifiers sized for the data, safely."""

from __future__ import annotations

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


class ModelError(UserError):
    """A checkpoint that cannot be used as configured."""


def load_tokenizer(config: ModelConfig) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(
        resolve_location(config.name_or_path),
        revision=config.revision,
        trust_remote_code=config.trust_remote_code,
    )


def load_classifier(config: ModelConfig, labels: LabelMap) -> PreTrainedModel:
    """A sequence classifier whose head matches `labels`; safetensors only, no remote code by default."""
    if config.num_labels is not None and config.num_labels != labels.num_labels:
        raise ModelError(
            f"model.num_labels is {config.num_labels} but the training data has {labels.num_labels} classes "
            f"{list(labels.names)}. Remove model.num_labels or fix the data."
        )
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
    return apply_pooling(model, config.pooling)


def count_parameters(model: PreTrainedModel) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
