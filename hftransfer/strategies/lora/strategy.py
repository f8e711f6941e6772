"""LoRA (and DoRA, IA3) fine-tuning through peft, with the classification head trained and saved alongside.

The output folder holds the small adapter (`adapter_config.json` + `adapter_model.safetensors`, head
included) and the recipe; `load_saved` rebuilds the base from the recipe's `model.name_or_path` (a `pkg:`
spec resolves on any machine) and puts the adapter on it.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from hftransfer.errors import UserError
from hftransfer.models.images import batch_norm_names, is_image_model_type
from hftransfer.models.loading import load_adapter_classifier
from hftransfer.models.timm import is_timm_wrapper, timm_batch_norm_names, timm_head_names, timm_lora_targets
from hftransfer.strategies.base import Strategy
from hftransfer.strategies.lora.config import LoraConfig

if TYPE_CHECKING:
    from hftransfer.config.recipe import RunConfig
    from hftransfer.data.labels import LabelMap
    from hftransfer.models.tasks import Task

# Families peft's own tables miss; peft's tables cover the rest.
_LORA_TARGETS = {
    "distilbert": ["q_lin", "v_lin"],
    "albert": ["query", "value"],
    "resnet": ["convolution"],  # every conv of the stem, stages and shortcuts
    "convnext": ["dwconv", "pwconv1", "pwconv2"],
}
_IA3_TARGETS = {"distilbert": (["k_lin", "v_lin", "lin2"], ["lin2"]), "albert": (["key", "value", "ffn"], ["ffn"])}


class AdapterError(UserError):
    """An adapter configuration that does not fit the model."""


def available_module_names(model: nn.Module) -> list[str]:
    """Short names of the layers an adapter can target (Linear/Embedding/Conv), for error messages."""
    kinds = (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d)
    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if name and isinstance(m, kinds)})


def _matches(module_name: str, target: str) -> bool:
    return module_name == target or module_name.endswith("." + target)  # peft's suffix rule


def head_module_names(model: nn.Module) -> list[str]:
    """Top-level modules with parameters outside the backbone: the classification head."""
    backbone = getattr(model, "base_model", None)
    return [
        name
        for name, child in model.named_children()
        if child is not backbone and any(True for _ in child.parameters())
    ]


class LoraFineTuning(Strategy):
    name = "lora"
    summary = "LoRA (low-rank adapters trained on top of a frozen base model)"
    saves_adapter = True
    # LoRA needs a far higher learning rate than full fine-tuning (recipes/text-sst2-minilm-lora.yaml: 2e-3;
    # 5e-4 ends ~10 points lower after one epoch).
    compare_defaults = ("train.learning_rate=2e-3",)
    config: LoraConfig

    def __init__(self, config: LoraConfig | None = None) -> None:
        super().__init__(config or LoraConfig())

    def target_modules(self, model: nn.Module) -> tuple[list[str], list[str]]:
        """(targets, IA3 feed-forward targets), checked against the model's module names."""
        from peft.utils.constants import (
            TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING,
            TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING,
            TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING,
        )

        model_type = getattr(getattr(model, "config", None), "model_type", None) or ""
        ia3 = self.config.method == "ia3"
        default_targets = timm_lora_targets(model) if is_timm_wrapper(model) else None  # per model, not per family
        if ia3:
            default = _IA3_TARGETS.get(model_type) or (
                TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING.get(model_type),
                TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING.get(model_type),
            )
        else:
            default = (
                default_targets
                or _LORA_TARGETS.get(model_type)
                or TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type),
                [],
            )
        targets = list(self.config.target_modules or default[0] or [])
        if not targets:
            raise AdapterError(
                f"No default adapter targets for '{model_type}' models; set strategy.lora.target_modules to some "
                f"of {available_module_names(model)}."
            )
        names = [name for name, _ in model.named_modules()]
        unknown = [t for t in targets if not any(_matches(n, t) for n in names)]
        if unknown:
            raise AdapterError(
                f"strategy.lora.target_modules {unknown} match no module of this {type(model).__name__}; "
                f"available module names: {available_module_names(model)}."
            )
        feedforward = [t for t in targets if t in (default[1] or [])] if ia3 else []
        return targets, feedforward

    def peft_config(self, model: nn.Module) -> Any:
        from peft import IA3Config, TaskType
        from peft import LoraConfig as PeftLoraConfig

        targets, feedforward = self.target_modules(model)
        # Batch-norm running statistics move while the adapter trains; saving those layers with the adapter
        # is what makes a reloaded adapter predict exactly as the trained model did.
        if is_timm_wrapper(model):  # the classifier sits inside the wrapped timm model (its base_model)
            to_save = self.config.modules_to_save or [*timm_head_names(model), *timm_batch_norm_names(model)]
        else:
            to_save = self.config.modules_to_save or [*head_module_names(model), *batch_norm_names(model)]
        missing = [m for m in to_save if not any(_matches(n, m) for n, _ in model.named_modules())]
        if missing:
            raise AdapterError(f"strategy.lora.modules_to_save {missing} match no module of {type(model).__name__}.")
        # Vision models take pixel_values, which peft's sequence-classification wrapper does not pass on.
        task_type = None if is_image_model_type(getattr(model.config, "model_type", None)) else TaskType.SEQ_CLS
        if self.config.method == "ia3":
            return IA3Config(
                task_type=task_type,
                target_modules=targets,
                feedforward_modules=feedforward,
                modules_to_save=to_save,
            )
        return PeftLoraConfig(
            task_type=task_type,
            r=self.config.r,
            lora_alpha=self.config.alpha,
            lora_dropout=self.config.dropout,
            target_modules=targets,
            bias=self.config.bias,
            use_dora=self.config.use_dora,
            modules_to_save=to_save,
        )

    def prepare(self, model: nn.Module) -> nn.Module:
        from peft import get_peft_model

        with warnings.catch_warnings():  # peft reads transformers' deprecated alias; not the user's concern
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            return get_peft_model(model, self.peft_config(model))

    def save(self, model: nn.Module, output_dir: str | Path) -> None:
        """Adapter + head only; the recipe (written by the pipeline) names the base model."""
        model.save_pretrained(output_dir, safe_serialization=True)

    @classmethod
    def load_saved(cls, folder: Path, config: RunConfig, labels: LabelMap, task: Task) -> nn.Module:
        """The base from the recipe's `model.name_or_path` (a `pkg:` spec resolves on any machine) + the adapter."""
        return load_adapter_classifier(folder, config.model, labels, task)
