"""Offline image transfer demo: pretrain a small ResNet on digits 0-4, transfer it to digits 5-9 with few labels.

No pretrained ResNet is available offline, so the source task is made from scikit-learn's digits:

    python examples/digits_transfer.py                  # 5 labels per digit, 3 draws of them, 4 ways to train
    python examples/digits_transfer.py --shots 2 --seeds 5 --no-augment
    python examples/digits_transfer.py --prepare-only   # data and the initial model only

writes 32px PNG files in the imagefolder layout under `outputs/digits/data`, a randomly initialised ResNet
(with its image processor) to `outputs/digits/init`, trains it on digits 0-4 (`recipes/image-digits-source.yaml`,
once), then for each seed draws `--shots` labelled images per digit 5-9 (the rest of them validate) and trains
on them four ways: from the random initial model (scratch), and from the source model with a new head by full
fine-tuning, with the stem and first stage frozen, and as a linear probe. It prints target accuracy per way as
mean and standard deviation over the seeds and writes `summary.json`.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np

from hftransfer.console import mean_sd

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
SOURCE_DIGITS, TARGET_DIGITS = range(0, 5), range(5, 10)
# Ways of training on the target task: output folder name -> (label, recipe, overrides); `{source}`/`{init}` are
# the source run's and the random initial model's folders.
SETTINGS = {
    "scratch": ("scratch (random init)", "image-digits-target.yaml", ["model.name_or_path={init}"]),
    "transfer": ("transfer, full fine-tuning", "image-digits-target.yaml", ["model.name_or_path={source}"]),
    "transfer-frozen": (
        "transfer, stem + stage 1 frozen",
        "image-digits-target.yaml",
        ["model.name_or_path={source}", "strategy.name=frozen", "strategy.frozen.frozen_blocks=1"],
    ),
    "probe": ("transfer, linear probe", "image-digits-linear-probe.yaml", ["model.name_or_path={source}"]),
}


def render_digit(pixels: np.ndarray, path: Path, size: int = 32) -> None:
    """8x8 values 0..16 -> a `size`px grayscale PNG."""
    from PIL import Image

    small = Image.fromarray((pixels * (255 / 16)).astype(np.uint8), mode="L")
    small.resize((size, size), Image.Resampling.BILINEAR).save(path)


def write_split(root: Path, digits: range, n_train: int | float, size: int, seed: int) -> dict[str, int]:
    """`root/{train,val}/<digit>/*.png`: `n_train` images per digit (a share if < 1) train, the rest validate."""
    from sklearn.datasets import load_digits

    data = load_digits()
    rng = np.random.default_rng(seed)
    counts = {"train": 0, "val": 0}
    for digit in digits:
        images = data.images[data.target == digit]
        images = images[rng.permutation(len(images))]
        cut = int(n_train * len(images)) if n_train < 1 else int(n_train)
        for split, chunk in (("train", images[:cut]), ("val", images[cut:])):
            folder = root / split / str(digit)
            folder.mkdir(parents=True, exist_ok=True)
            for i, pixels in enumerate(chunk):
                render_digit(pixels, folder / f"{i:04d}.png", size)
            counts[split] += len(chunk)
    return counts


def write_digits(root: Path, shots: int, seeds: list[int], size: int = 32) -> dict[str, dict[str, int]]:
    """Source: digits 0-4, 80/20 train/val (fixed). Target: per seed, `shots` train images per digit 5-9."""
    counts = {"source": write_split(root / "source", SOURCE_DIGITS, 0.8, size, seed=0)}
    for seed in seeds:
        counts[f"target-seed{seed}"] = write_split(root / f"target-seed{seed}", TARGET_DIGITS, shots, size, 1000 + seed)
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
    from hftransfer.config.recipe import load_config
    from hftransfer.training.pipeline import train

    return train(load_config(RECIPES / recipe, list(overrides)))


def summarize(accuracies: dict[str, list[float]]) -> dict[str, dict]:
    """Mean, sample standard deviation, and each seed's accuracy per setting."""
    return {
        name: {
            "mean": statistics.fmean(values),
            "sd": statistics.stdev(values) if len(values) > 1 else None,  # one seed shows no spread
            "per_seed": values,
        }
        for name, values in accuracies.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--root", default="outputs/digits", help="Where data, models and runs go (recipes use the default)."
    )
    parser.add_argument("--shots", type=int, default=5, help="Labelled target images per digit.")
    parser.add_argument("--seeds", type=int, default=3, help="Draws of the target images (and training seeds).")
    parser.add_argument(
        "--no-augment", action="store_true", help="Target runs without train augmentation (random resized crop)."
    )
    parser.add_argument("--prepare-only", action="store_true", help="Write data and the initial model, train nothing.")
    args = parser.parse_args(argv)
    root, seeds = Path(args.root), list(range(args.seeds))
    counts = write_digits(root / "data", args.shots, seeds)
    write_initial_model(root / "init")
    print(f"Wrote {counts} images under {root / 'data'} and a random ResNet to {root / 'init'}")
    if args.prepare_only:
        return 0
    source_data = [
        f"data.{k}_dir={root / 'data' / 'source' / v}" for k, v in (("train", "train"), ("validation", "val"))
    ]
    source = run(
        "image-digits-source.yaml",
        f"train.output_dir={root / 'source'}",
        f"model.name_or_path={root / 'init'}",
        *source_data,
    )
    accuracies: dict[str, list[float]] = {label: [] for label, _, _ in SETTINGS.values()}
    models = {"source": root / "source", "init": root / "init"}
    for seed in seeds:
        data = root / "data" / f"target-seed{seed}"
        common = [
            f"data.train_dir={data / 'train'}",
            f"data.validation_dir={data / 'val'}",
            f"train.seed={seed}",
            "train.eval_steps=1000000",  # evaluate once, at the end (every setting trains far fewer steps)
            f"data.images.augment={'false' if args.no_augment else 'true'}",
        ]
        for folder, (label, recipe, overrides) in SETTINGS.items():
            out = f"train.output_dir={root / f'seed{seed}' / folder}"
            result = run(recipe, *(o.format(**models) for o in overrides), *common, out)
            accuracies[label].append(result["eval"]["accuracy"])
    summary = {
        "source_accuracy_digits_0_4": source["eval"]["accuracy"],
        "target_shots_per_class": args.shots,
        "target_augment": not args.no_augment,
        "seeds": seeds,
        "target_eval_samples_per_seed": counts[f"target-seed{seeds[0]}"]["val"],
        "target_accuracy": summarize(accuracies),
    }
    (root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nsource (digits 0-4): accuracy {summary['source_accuracy_digits_0_4']:.4f}")
    augment = "with" if not args.no_augment else "without"
    print(f"target (digits 5-9, {args.shots}/class, {augment} augmentation), accuracy over seeds {seeds}:")
    for name, stats in summary["target_accuracy"].items():
        each = ", ".join(f"{v:.3f}" for v in stats["per_seed"])
        print(f"  {name:<34} {mean_sd(stats['per_seed'])}   ({each})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
