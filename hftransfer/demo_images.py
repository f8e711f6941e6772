"""Offline image transfer demo: pretrain a small ResNet on digits 0-4, transfer it to digits 5-9 with few labels.

No pretrained ResNet is available offline, so the source task is made from scikit-learn's digits:

    python -m hftransfer.demo_images            # data + initial model, then the three runs below
    python -m hftransfer.demo_images --prepare-only

writes 32px PNG files in the imagefolder layout under `outputs/digits/data`, a randomly initialised ResNet
(with its image processor) to `outputs/digits/init`, then runs `recipes/image-digits-source.yaml` (digits 0-4),
`recipes/image-digits-target.yaml` (digits 5-9 from the source model, new head) and the same target recipe
from the random initial model, and prints target accuracy with and without the source task.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
SOURCE_DIGITS, TARGET_DIGITS = range(0, 5), range(5, 10)


def write_digits(root: Path, shots: int, size: int = 32, seed: int = 0) -> dict[str, int]:
    """Source: digits 0-4, 80/20 train/val. Target: `shots` train images per digit 5-9, the rest for validation."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    counts: dict[str, int] = {}
    for task, classes in (("source", SOURCE_DIGITS), ("target", TARGET_DIGITS)):
        for digit in classes:
            images = digits.images[digits.target == digit][rng.permutation(int((digits.target == digit).sum()))]
            n_train = int(0.8 * len(images)) if task == "source" else shots
            for split, chunk in (("train", images[:n_train]), ("val", images[n_train:])):
                folder = root / task / split / str(digit)
                folder.mkdir(parents=True, exist_ok=True)
                for i, pixels in enumerate(chunk):  # 8x8 values 0..16 -> 32x32 grayscale PNG
                    small = Image.fromarray((pixels * (255 / 16)).astype(np.uint8), mode="L")
                    small.resize((size, size), Image.Resampling.BILINEAR).save(folder / f"{i:04d}.png")
                counts[f"{task}/{split}"] = counts.get(f"{task}/{split}", 0) + len(chunk)
    return counts


def write_initial_model(folder: Path, size: int = 32, seed: int = 0) -> Path:
    """A small random ResNet (3 stages, ~75k parameters) and the image processor that sizes its inputs."""
    import torch
    from transformers import ResNetConfig, ResNetForImageClassification
    from transformers.models.convnext.image_processing_pil_convnext import ConvNextImageProcessorPil

    torch.manual_seed(seed)
    config = ResNetConfig(
        embedding_size=16, hidden_sizes=[16, 32, 64], depths=[1, 1, 1], layer_type="basic", num_labels=5
    )
    ResNetForImageClassification(config).save_pretrained(folder)
    ConvNextImageProcessorPil(
        size={"shortest_edge": size}, crop_pct=1.0, image_mean=[0.5] * 3, image_std=[0.5] * 3
    ).save_pretrained(folder)
    return folder


def run(recipe: str, *overrides: str) -> dict:
    from hftransfer.config import load_config
    from hftransfer.training import train

    return train(load_config(RECIPES / recipe, list(overrides)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--root", default="outputs/digits", help="Where data, models and runs go (recipes use the default)."
    )
    parser.add_argument("--shots", type=int, default=10, help="Labelled target images per digit.")
    parser.add_argument("--prepare-only", action="store_true", help="Write data and the initial model, train nothing.")
    args = parser.parse_args(argv)
    root = Path(args.root)
    counts = write_digits(root / "data", args.shots)
    write_initial_model(root / "init")
    print(f"Wrote {counts} images under {root / 'data'} and a random ResNet to {root / 'init'}")
    if args.prepare_only:
        return 0
    paths = [f"train.output_dir={root / 'source'}", f"model.name_or_path={root / 'init'}"]
    data = [f"data.{k}_dir={root / 'data' / 'source' / v}" for k, v in (("train", "train"), ("validation", "val"))]
    source = run("image-digits-source.yaml", *paths, *data)
    target_data = [
        f"data.{k}_dir={root / 'data' / 'target' / v}" for k, v in (("train", "train"), ("validation", "val"))
    ]
    transfer = run(
        "image-digits-target.yaml",
        f"model.name_or_path={root / 'source'}",
        f"train.output_dir={root / 'target'}",
        *target_data,
    )
    scratch = run(
        "image-digits-target.yaml",
        f"model.name_or_path={root / 'init'}",
        f"train.output_dir={root / 'scratch'}",
        *target_data,
    )
    summary = {
        "source_accuracy_digits_0_4": source["eval"]["accuracy"],
        "target_shots_per_class": args.shots,
        "target_accuracy_transfer": transfer["eval"]["accuracy"],
        "target_accuracy_scratch": scratch["eval"]["accuracy"],
        "target_eval_samples": transfer["num_eval_samples"],
    }
    (root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nsource (digits 0-4):                    accuracy {summary['source_accuracy_digits_0_4']:.4f}")
    print(f"target (digits 5-9, {args.shots}/class) transfer:  accuracy {summary['target_accuracy_transfer']:.4f}")
    print(f"target (digits 5-9, {args.shots}/class) scratch:   accuracy {summary['target_accuracy_scratch']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
