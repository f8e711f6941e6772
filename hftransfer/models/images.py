"""Image classifiers and their processors (ResNet first; anything AutoModelForImageClassification loads)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn
from transformers import AutoImageProcessor, AutoModelForImageClassification, PreTrainedModel
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
    MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
)

from hftransfer.config.locations import resolve_location
from hftransfer.config.recipe import ModelConfig
from hftransfer.data.labels import LabelMap
from hftransfer.models.loading import ModelError, checkpoint_config, load_pretrained_classifier, saved_config
from hftransfer.models.timm import TIMM_WRAPPER, timm_image_processor


def is_image_model_type(model_type: str | None) -> bool:
    """Vision classifiers only: types that also read text (multimodal encoders) stay text models."""
    return (
        model_type in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES
        and model_type not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES
    )


def load_image_processor(config: ModelConfig) -> Any:
    location = resolve_location(config.name_or_path)
    if not Path(location, "preprocessor_config.json").is_file():
        pretrained = checkpoint_config(config.name_or_path, config.revision, config.trust_remote_code)
        if pretrained.model_type == TIMM_WRAPPER:  # timm checkpoints keep preprocessing in config.json
            return timm_image_processor(pretrained)
    try:
        return AutoImageProcessor.from_pretrained(
            location,
            revision=config.revision,
            trust_remote_code=config.trust_remote_code,
            **saved_config(config.name_or_path, config.revision),
        )
    except (OSError, ValueError) as err:
        raise ModelError(
            f"'{config.name_or_path}' has no image processor (preprocessor_config.json), which says how to resize "
            "and normalize its inputs. Save one next to the weights, e.g. "
            "`ConvNextImageProcessor(size={'shortest_edge': 224}).save_pretrained(folder)`."
        ) from err


def load_image_classifier(config: ModelConfig, labels: LabelMap) -> PreTrainedModel:
    """An image classifier whose head matches `labels` (an ImageNet or source-task head of other classes is new)."""
    return load_pretrained_classifier(
        config,
        labels,
        AutoModelForImageClassification,
        MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
        "image-classification",
        "Pick a vision checkpoint (ResNet, ConvNeXt, ViT, ...), or set task=text-classification.",
    )


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
