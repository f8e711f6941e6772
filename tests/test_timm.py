"""timm checkpoints (transformers' TimmWrapperForImageClassification): layouts for freezing, LoRA targets and head,
the processor from `pretrained_cfg`. The layout logic runs everywhere on stand-in modules named as timm names them;
the end-to-end runs need timm (present on the GPU machine; it does not import on the CPU dev machines, where they
skip)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from hftransfer.models.layers import find_layer_groups
from hftransfer.models.timm import (
    timm_batch_norm_names,
    timm_head_names,
    timm_image_processor,
    timm_layer_groups,
    timm_lora_targets,
)

try:
    import timm  # noqa: F401

    HAS_TIMM = True
except Exception:  # absent, or a torchvision that does not match torch
    HAS_TIMM = False
needs_timm = pytest.mark.skipif(not HAS_TIMM, reason="timm does not import here")


def _basic_block(cin: int, cout: int, stride: int) -> nn.Module:
    block = nn.Module()
    block.conv1, block.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
    block.conv2, block.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
    if stride != 1 or cin != cout:
        block.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
    return block


class FakeTimmResNet(nn.Module):
    """timm ResNet's module names: conv1/bn1 stem, layer1..layer4 of blocks with downsample.0/.1, fc head."""

    pretrained_cfg: ClassVar[dict] = {"classifier": "fc"}

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 7, 2, 3, bias=False), nn.BatchNorm2d(8)
        widths = [8, 8, 16, 16, 16]
        for i in range(1, 5):
            setattr(self, f"layer{i}", nn.Sequential(_basic_block(widths[i - 1], widths[i], 1 if i == 1 else 2)))
        self.fc = nn.Linear(16, 3)


class FakeTimmEfficientNet(nn.Module):
    """timm EfficientNet's names: conv_stem/bn1, blocks.<stage>.<i> with conv_pw/conv_dw (depthwise)/conv_pwl,
    conv_head/bn2, classifier."""

    pretrained_cfg: ClassVar[dict] = {"classifier": "classifier"}

    def __init__(self) -> None:
        super().__init__()
        self.conv_stem, self.bn1 = nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8)
        stages = []
        for _ in range(2):
            block = nn.Module()
            block.conv_pw, block.bn1 = nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16)
            block.conv_dw, block.bn2 = nn.Conv2d(16, 16, 3, 1, 1, groups=16, bias=False), nn.BatchNorm2d(16)
            block.conv_pwl, block.bn3 = nn.Conv2d(16, 8, 1, bias=False), nn.BatchNorm2d(8)
            stages.append(nn.Sequential(block))
        self.blocks = nn.Sequential(*stages)
        self.conv_head, self.bn2 = nn.Conv2d(8, 32, 1, bias=False), nn.BatchNorm2d(32)
        self.classifier = nn.Linear(32, 3)


class FakeWrapper(nn.Module):
    def __init__(self, timm_model: nn.Module) -> None:
        super().__init__()
        self.config = SimpleNamespace(model_type="timm_wrapper")
        self.timm_model = timm_model


def test_resnet_layout_head_targets_and_batch_norms():
    model = FakeWrapper(FakeTimmResNet())
    stem, stages = timm_layer_groups(model)
    assert stem == [model.timm_model.conv1, model.timm_model.bn1]
    assert stages == [getattr(model.timm_model, f"layer{i}") for i in range(1, 5)]
    groups = find_layer_groups(model)
    assert {id(p) for p in groups.head} == {id(p) for p in model.timm_model.fc.parameters()}
    assert timm_head_names(model) == ["fc"]
    targets = timm_lora_targets(model)
    assert set(targets) == {"conv1", "conv2", "downsample.0"}  # a bare "0" would hit every first child
    assert set(timm_batch_norm_names(model)) == {"bn1", "bn2", "downsample.1"}


def test_efficientnet_layout_leaves_depthwise_convs_and_the_head_out_of_lora():
    model = FakeWrapper(FakeTimmEfficientNet())
    stem, stages = timm_layer_groups(model)
    assert stem == [model.timm_model.conv_stem, model.timm_model.bn1] and len(stages) == 2
    groups = find_layer_groups(model)
    head = {id(p) for m in (model.timm_model.conv_head, model.timm_model.bn2, model.timm_model.classifier)
            for p in m.parameters()}
    assert {id(p) for p in groups.head} == head
    assert timm_head_names(model) == ["classifier"]
    assert set(timm_lora_targets(model)) == {"conv_stem", "conv_pw", "conv_pwl", "conv_head"}


def test_lora_on_a_timm_layout_trains_adapters_and_the_head():
    from hftransfer.strategies.lora.strategy import LoraFineTuning

    model = FakeWrapper(FakeTimmResNet())
    model.config = SimpleNamespace(model_type="timm_wrapper", to_dict=dict)  # what peft reads of a config
    strategy = LoraFineTuning()
    config = strategy.peft_config(model)
    assert "fc" in config.modules_to_save and "downsample.1" in config.modules_to_save
    assert set(config.target_modules) == {"conv1", "conv2", "downsample.0"}


def test_processor_follows_pretrained_cfg():
    config = SimpleNamespace(
        pretrained_cfg={"input_size": [3, 32, 32], "crop_pct": 0.875, "mean": [0.5] * 3, "std": [0.5] * 3,
                        "interpolation": "bicubic"}
    )
    processor = timm_image_processor(config)
    image = Image.fromarray(np.full((40, 60, 3), 255, dtype=np.uint8))
    pixels = processor(images=[image], return_tensors="np")["pixel_values"]
    assert pixels.shape == (1, 3, 32, 32)
    np.testing.assert_allclose(pixels, 1.0, atol=1e-5)  # (1 - 0.5) / 0.5


# --- real timm models (GPU machine) ------------------------------------------------------------------------------


def save_timm_checkpoint(folder: Path, architecture: str, model_args: dict, num_labels: int = 3) -> Path:
    """A randomly initialised timm model saved as transformers' TimmWrapper folder (config.json holds
    `architecture` and `pretrained_cfg`, as timm checkpoints on the Hub do)."""
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

    pretrained_cfg = {
        "input_size": [3, 32, 32], "crop_pct": 1.0, "interpolation": "bilinear", "mean": [0.5] * 3,
        "std": [0.5] * 3, "classifier": "fc" if architecture.startswith("resnet") else "classifier",
    }
    config = TimmWrapperConfig(
        architecture=architecture, model_args=model_args, pretrained_cfg=pretrained_cfg, num_labels=num_labels,
        id2label={i: f"LABEL_{i}" for i in range(num_labels)},
    )
    torch.manual_seed(0)
    TimmWrapperForImageClassification(config).save_pretrained(folder)
    assert json.loads((folder / "config.json").read_text())["architecture"] == architecture
    return folder


TIMM_MODELS = {
    "resnet": ("resnet18", {"layers": [1, 1, 1, 1]}),
    "efficientnet": ("efficientnet_b0", {}),
}


@needs_timm
@pytest.mark.parametrize("family", list(TIMM_MODELS))
@pytest.mark.parametrize("strategy", [(), ("strategy.name=frozen", "strategy.frozen.frozen_blocks=2"),
                                      ("strategy.name=lora",)], ids=["full", "frozen", "lora"])
def test_timm_checkpoint_trains_and_reloads(family, strategy, tmp_path):
    from test_images import train_args, write_folder

    from hftransfer.artifacts.saved import load_run
    from hftransfer.cli import main
    from hftransfer.evaluation.scoring import evaluate_run

    architecture, model_args = TIMM_MODELS[family]
    checkpoint = save_timm_checkpoint(tmp_path / "ckpt", architecture, model_args)
    train_dir, val_dir = write_folder(tmp_path / "train", 6, seed=0), write_folder(tmp_path / "val", 3, seed=1)
    out = tmp_path / "out"
    args = train_args(checkpoint, train_dir, val_dir, out, "train.epochs=1", *strategy)
    if torch.cuda.is_available():
        args.append("train.precision=bf16")
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert all(np.isfinite(results["train_losses"]))
    if strategy and strategy[0] == "strategy.name=frozen":
        assert results["trainable_params"] < results["total_params"]
    run = load_run(out)
    run.model.to("cuda" if torch.cuda.is_available() else "cpu")
    rescored = evaluate_run(run)
    assert rescored["accuracy"] == results["eval"]["accuracy"]
