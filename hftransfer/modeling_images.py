"""Image classifiers and their processors (ResNet first; anything AutoModelForImageClassification loads)."""

from __future__ import annotations

from typing import Any

from torch import nn
from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification, PreTrainedModel
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
    MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
)

from hftransfer.config import ModelConfig
from hftransfer.data.labels import LabelMap
from hftransfer.modeling import ModelError, check_num_labels, new_head_if_needed
from hftransfer.paths import resolve_location


def is_image_model_type(model_type: str | None) -> bool:
    """Vision classifiers only: types that also read text (multimodal encoders) stay text models."""
    return (
        model_type in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES
        and model_type not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES
    )


def load_image_processor(config: ModelConfig) -> Any:
    location = resolve_location(config.name_or_path)
    try:
        return AutoImageProcessor.from_pretrained(
            location, revision=config.revision, trust_remote_code=config.trust_remote_code
        )
    except (OSError, ValueError) as err:
        raise ModelError(
            f"'{config.name_or_path}' has no image processor (preprocessor_config.json), which says how to resize "
            "and normalize its inputs. Save one next to the weights, e.g. "
            "`ConvNextImageProcessor(size={'shortest_edge': 224}).save_pretrained(folder)`."
        ) from err


def load_image_classifier(config: ModelConfig, labels: LabelMap) -> PreTrainedModel:
    """An image classifier whose head matches `labels` (a new head when the checkpoint's classes differ)."""
    check_num_labels(config, labels)
    location = resolve_location(config.name_or_path)
    pretrained = AutoConfig.from_pretrained(
        location, revision=config.revision, trust_remote_code=config.trust_remote_code
    )
    if pretrained.model_type not in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES and not config.trust_remote_code:
        raise ModelError(
            f"'{config.name_or_path}' is a '{pretrained.model_type}' model, which has no image-classification head "
            "in transformers. Pick a vision checkpoint (ResNet, ConvNeXt, ViT, ...), or set task=text-classification."
        )
    model = AutoModelForImageClassification.from_pretrained(
        location,
        revision=config.revision,
        trust_remote_code=config.trust_remote_code,
        use_safetensors=True,
        num_labels=labels.num_labels,
        id2label=labels.id2label,
        label2id=labels.label2id,
        problem_type="single_label_classification",
        ignore_mismatched_sizes=True,  # an ImageNet (or source-task) head of another size is replaced
    )
    return new_head_if_needed(model, pretrained, labels, config.new_head)


def batch_norm_names(model: nn.Module) -> list[str]:
    """Short names of batch-norm layers: their running statistics change in training, so adapters must save them."""
    found = {
        name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
    }
    return sorted(found)


def check_same_preprocessing(student: Any, teacher: Any, teacher_name: str) -> None:
    """A distillation teacher reads the student's pixel_values, so both processors must make the same ones."""
    from PIL import Image

    from hftransfer.errors import UserError

    if teacher is None or not hasattr(teacher, "image_mean"):
        raise UserError(
            f"Teacher '{teacher_name}' has no image processor (preprocessor_config.json), so its input "
            "preprocessing cannot be checked against the student's. Save it in the teacher's folder."
        )
    probe = Image.new("RGB", (61, 47), (200, 30, 90))
    ours, theirs = (p(images=[probe], return_tensors="np")["pixel_values"] for p in (student, teacher))
    if ours.shape != theirs.shape or not (abs(ours - theirs) < 1e-4).all():
        raise UserError(
            f"The student's and teacher '{teacher_name}''s image processors prepare images differently "
            f"(student: {ours.shape[-2:]} pixels, mean {student.image_mean}; teacher: {theirs.shape[-2:]} pixels, "
            f"mean {teacher.image_mean}); the teacher would see inputs unlike its training. "
            "Give the student the teacher's preprocessor_config.json."
        )
