"""timm checkpoints through transformers' `TimmWrapperForImageClassification` (`model_type: timm_wrapper`).

transformers wraps the whole timm model as `model.timm_model`, which is also its `base_model`: the classifier
(`fc` of a ResNet, `classifier` of an EfficientNet) sits *inside* the backbone, unlike every other HF classifier.
This module knows those layouts without importing timm (the wrapper's modules are plain `nn.Module`s):

- `timm_layer_groups`: stem, stages (bottom to top) and head, for the frozen strategy and layer-wise LR decay;
- `timm_head_names` / `timm_head_modules`: the classifier, trained in full and saved with a LoRA adapter, and
  re-initialised for new classes;
- `timm_lora_targets`: every dense conv and linear layer outside the head (depthwise convs are left out);
- `timm_image_processor`: the checkpoint's `pretrained_cfg` (input size, crop_pct, interpolation, mean, std) as a
  plain transformers image processor, so preprocessing needs neither timm nor torchvision, works with numpy
  outputs and augmentation, and is saved with the run (`TimmWrapperImageProcessor.save_pretrained` is a no-op).
"""

from __future__ import annotations

from typing import Any

from torch import nn

TIMM_WRAPPER = "timm_wrapper"


def is_timm_wrapper(model: nn.Module) -> bool:
    return getattr(getattr(model, "config", None), "model_type", None) == TIMM_WRAPPER and hasattr(model, "timm_model")


def _unwrap(model: nn.Module) -> nn.Module:
    """The transformers model under a peft wrapper (peft's `base_model.model`), else the model itself."""
    inner = getattr(getattr(model, "base_model", None), "model", None)
    return inner if isinstance(inner, nn.Module) and is_timm_wrapper(inner) else model


def timm_head_names(model: nn.Module) -> list[str]:
    """Paths, relative to `model.timm_model`, of the classifier (timm's `pretrained_cfg['classifier']`)."""
    timm_model = _unwrap(model).timm_model
    cfg = getattr(timm_model, "pretrained_cfg", None) or getattr(timm_model, "default_cfg", None) or {}
    names = cfg.get("classifier") or ("fc" if hasattr(timm_model, "fc") else "classifier")
    names = [names] if isinstance(names, str) else list(names)
    modules = dict(timm_model.named_modules())
    found = [n for n in names if isinstance(modules.get(n), nn.Module) and any(True for _ in modules[n].parameters())]
    if not found:  # the last Linear layer is the classifier in every timm CNN family
        linears = [n for n, m in timm_model.named_modules() if isinstance(m, nn.Linear)]
        found = linears[-1:]
    return found


def timm_head_modules(model: nn.Module) -> list[nn.Module]:
    modules = dict(_unwrap(model).timm_model.named_modules())
    return [modules[n] for n in timm_head_names(model)]


def timm_layer_groups(model: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    """(stem modules, stages bottom to top) of the common timm CNN layouts; raises LookupError for others."""
    tm = model.timm_model
    if hasattr(tm, "conv_stem") and isinstance(getattr(tm, "blocks", None), (nn.Sequential, nn.ModuleList)):
        # EfficientNet, MobileNetV2/V3, MixNet...: conv_stem + bn1, stages in `blocks`; conv_head + bn2 top the net
        # and count as head (they sit between the last stage and the classifier).
        return [tm.conv_stem, tm.bn1], list(tm.blocks)
    if all(hasattr(tm, f"layer{i}") for i in range(1, 5)) and hasattr(tm, "conv1"):
        # ResNet / ResNeXt / SE-ResNet: conv1 (a Sequential for deep stems) + bn1, then layer1..layer4.
        return [tm.conv1, tm.bn1], [getattr(tm, f"layer{i}") for i in range(1, 5)]
    if isinstance(getattr(tm, "stem", None), nn.Module) and isinstance(getattr(tm, "stages", None), nn.Sequential):
        return [tm.stem], list(tm.stages)  # ConvNeXt, RegNet, CSPNet...
    raise LookupError(f"unknown timm layout {type(tm).__name__}")


def _suffix(path: str) -> str:
    """A peft target name for one module: its short name, or the last two parts for numbered children
    (`downsample.0`), since a bare digit would match every first child of every Sequential."""
    parts = path.split(".")
    return ".".join(parts[-2:]) if parts[-1].isdigit() and len(parts) > 1 else parts[-1]


def _dense(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1)


def timm_lora_targets(model: nn.Module) -> list[str]:
    """peft target names covering every dense conv/linear of the timm model outside its head.

    A short name that also names a depthwise conv or the head is replaced by the modules' own paths, so peft
    never wraps a layer type it cannot adapt or the classifier (which trains in full through modules_to_save)."""
    tm = _unwrap(model).timm_model
    head = set(timm_head_names(model))
    in_head = {n for n, _ in tm.named_modules() if any(n == h or n.startswith(h + ".") for h in head)}
    modules = {n: m for n, m in tm.named_modules() if n}
    wanted = [n for n, m in modules.items() if _dense(m) and n not in in_head]
    targets: list[str] = []
    for path in wanted:
        suffix = _suffix(path)
        clash = any(
            (n == suffix or n.endswith("." + suffix)) and (not _dense(m) or n in in_head) for n, m in modules.items()
        )
        name = f"timm_model.{path}" if clash else suffix
        if name not in targets:
            targets.append(name)
    return targets


def timm_batch_norm_names(model: nn.Module) -> list[str]:
    """Suffixes naming every batch-norm layer (`bn1`, `downsample.1`), saved with a LoRA adapter."""
    tm = _unwrap(model).timm_model
    return sorted({_suffix(n) for n, m in tm.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)})


_RESAMPLE = {"bicubic": 3, "bilinear": 2, "nearest": 0, "lanczos": 1, "box": 4, "hamming": 5}  # PIL codes


def timm_image_processor(config: Any) -> Any:
    """The evaluation preprocessing timm derives from `pretrained_cfg` (resize to input/crop_pct on the shortest
    edge, centre crop to the input size, /255, normalise), as a `ConvNextImageProcessorPil` — the same recipe."""
    from transformers.models.convnext.image_processing_pil_convnext import ConvNextImageProcessorPil

    cfg = dict(getattr(config, "pretrained_cfg", None) or {})
    size = int(cfg.get("test_input_size", cfg.get("input_size", (3, 224, 224)))[-1])
    crop_pct = float(cfg.get("test_crop_pct", cfg.get("crop_pct", 0.875)))
    mean = list(cfg.get("mean", (0.485, 0.456, 0.406)))
    std = list(cfg.get("std", (0.229, 0.224, 0.225)))
    return ConvNextImageProcessorPil(
        size={"shortest_edge": size},
        crop_pct=crop_pct,
        resample=_RESAMPLE.get(str(cfg.get("interpolation", "bicubic")), 3),
        image_mean=mean,
        image_std=std,
    )
