"""Digits -> digits under a pixel shift (images): does DANN adapt a model to a target without any target label?

    python bench/domain_digits.py [--seeds 3] [--shift blend|rotate|invert] [--weights 0.1,0.3,1]

The text bench (`domain_transfer.py`) has a shift a pretrained sentence encoder barely notices. This one has a
shift the source model cannot read through, as in Ganin et al.'s MNIST -> MNIST-M: scikit-learn's digits (1,797
real 8x8 images, rendered as 32px PNG files) as the labelled source, and the same kind of digits rendered
`--shift`ed as the target (`blend`: |random smooth background - digit|, Ganin et al.'s MNIST-M recipe;
`rotate`: turned 35°; `invert`: white background, dark strokes). For each seed the
images are split afresh into disjoint sets: 900 source images (labelled), 450 target images whose labels are
never read (the unlabelled pool) and 447 target images to score on. Model: the digits demo's small ResNet
(3 stages, ~75k parameters), randomly initialised (its 5-class head replaced by a 10-class one), 10 epochs,
batch 32, AdamW 3e-3, random resized crops.

Methods:
- source only: trained on the source, scored on the target (what the shift costs).
- DANN λmax=w: the same run plus a gradient-reversal domain classifier against the unlabelled pool, its weight
  ramped to w (`domain.adversarial_weight`); no target label.
- target labels (oracle): trained on the pool WITH its labels; the ceiling, not a method.

Prints mean ± sd over seeds of target accuracy and the paired per-seed difference to source only, and the proxy
A-distance between source and target images in the features of the random model, source only and DANN.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from digits_transfer import render_digit, write_initial_model
from domain_transfer import paired

from hftransfer.config.recipe import load_config
from hftransfer.training.pipeline import train

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "image-digits-source.yaml"
COMMON = ["train.epochs=10", "train.batch_size=32", "train.learning_rate=3e-3", "train.eval_steps=1000000"]


def blend(pixels: np.ndarray, index: int) -> np.ndarray:
    """Ganin et al.'s MNIST-M recipe on digits: |background - digit| over a random smooth background patch."""
    from scipy.ndimage import zoom

    coarse = np.random.default_rng(10_000 + index).uniform(0, 10, (3, 3))
    return np.abs(zoom(coarse, 8 / 3, order=1)[:8, :8] - pixels)


def rotate(pixels: np.ndarray, index: int) -> np.ndarray:
    from scipy.ndimage import rotate as turn

    return np.clip(turn(pixels, 35, reshape=False, order=1), 0, 16)


SHIFTS = {"invert": lambda a, i: 16 - a, "rotate": rotate, "blend": blend}


def seed_folders(seed: int, shift: str, work: Path) -> dict[str, str]:
    """This seed's disjoint image sets: source (labelled, unshifted), the target pool with and without its
    class folders (the oracle reads the former, DANN the latter) and the scored target images."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.images))
    parts = {"source": order[:900], "pool": order[900:1350], "eval": order[1350:]}
    move = SHIFTS[shift]
    for part, rows in parts.items():
        for i in rows:
            pixels, label = digits.images[i], digits.target[i]
            path = work / part / str(label) / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            render_digit(pixels if part == "source" else move(pixels, i), path)
            if part == "pool":  # the same image, outside any class folder
                (work / "pool-unlabelled").mkdir(exist_ok=True)
                shutil.copyfile(path, work / "pool-unlabelled" / path.name)
    return {name: str(work / name) for name in ("source", "pool", "pool-unlabelled", "eval")}


def run(name: str, train_dir: str, folders: dict[str, str], init: Path, seed: int, work: Path, *more: str) -> tuple:
    out = work / name.replace(" ", "-").replace("=", "").replace("(", "").replace(")", "")
    config = load_config(RECIPE, [
        f"model.name_or_path={init}", f"data.train_dir={train_dir}", f"data.validation_dir={folders['eval']}",
        *COMMON, f"train.seed={seed}", f"train.output_dir={out}", *more,
    ])  # fmt: skip
    return train(config)["eval"]["accuracy"], str(out)


def proxy_a_distances(folders: dict[str, str], trained: dict[str, str]) -> dict[str, float]:
    from hftransfer.analysis.features import DataSpec
    from hftransfer.analysis.shift import measure_shift

    source, target = DataSpec(folders["source"], max_rows=300), DataSpec(folders["eval"], max_rows=300)
    report = measure_shift(source, target, list(trained.values()))
    names = {folder: f"PAD after {name}" for name, folder in trained.items()}
    return {names.get(e["model"], "PAD random init"): e["proxy_a_distance"]["pad"] for e in report["models"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--shift", choices=sorted(SHIFTS), default="blend")
    parser.add_argument("--weights", default="0.1,0.3,1", help="DANN maximum reversal weights, comma-separated.")
    parser.add_argument("--extra", nargs="*", default=[], help="Overrides for every run (e.g. train.epochs=1).")
    args = parser.parse_args()
    weights = [float(w) for w in args.weights.split(",") if w]
    accuracy: dict[str, list[float]] = {}
    pads: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        init = write_initial_model(Path(scratch) / "init")
        for seed in range(args.seeds):
            work = Path(scratch) / f"seed-{seed}"
            folders = seed_folders(seed, args.shift, work)
            runs = {"source only": (folders["source"], [])}
            for w in weights:
                pool = folders["pool-unlabelled"]
                dann = [f"domain.unlabelled_target_file={pool}", f"domain.adversarial_weight={w:g}"]
                runs[f"DANN λmax={w:g}"] = (folders["source"], dann)
            runs["target labels (oracle)"] = (folders["pool"], [])
            trained = {}
            for name, (train_dir, more) in runs.items():
                value, trained[name] = run(name, train_dir, folders, init, seed, work, *more, *args.extra)
                accuracy.setdefault(name, []).append(value)
                print(f"[seed {seed}] {name}: {value:.4f}", flush=True)
            compared = {n: f for n, f in trained.items() if n == "source only" or n.startswith("DANN")}
            for row, value in proxy_a_distances(folders, compared).items():
                pads.setdefault(row, []).append(value)
                print(f"[seed {seed}] {row}: {value:.3f}", flush=True)
    print_table(accuracy, pads, args)


def print_table(accuracy: dict[str, list[float]], pads: dict[str, list[float]], args: argparse.Namespace) -> None:
    base = accuracy["source only"]
    print(f"\ndigits (900 labelled) -> {args.shift}ed digits (450 unlabelled / 447 scored), small ResNet from a random "
          f"init, {args.seeds} seeds; target accuracy")  # fmt: skip
    print(f"{'method':<24} {'mean':>7} {'sd':>7} {'vs source only (paired)':>25}  per seed")
    for name, values in accuracy.items():
        sd = f"{statistics.stdev(values):.4f}" if len(values) > 1 else "-"
        each = " ".join(f"{v:.4f}" for v in values)
        print(f"{name:<24} {statistics.mean(values):>7.4f} {sd:>7} {paired(values, base):>25}  {each}")
    for row, values in pads.items():
        sd = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
        print(f"{row:<24} {statistics.mean(values):.3f}{sd}  (source vs scored target images, 300 each)")


if __name__ == "__main__":
    main()
