"""Trainer loop vs Accelerate loop on the offline MiniLM + SST-2 sample: speed and step-by-step agreement.

    python bench/loops.py [--steps 40] [--batch-size 32]

Prints one row per loop (train samples/s, wall time, final dev accuracy) and the Accelerate/Trainer
ratios measured in the same run, plus the largest per-step loss difference between the two loops.
"""

from __future__ import annotations

import argparse
import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from hftransfer.config.recipe import load_config
from hftransfer.training.pipeline import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as scratch:
        for loop in ("trainer", "accelerate"):
            config = load_config(
                "recipes/text-sst2-minilm-full.yaml",
                [f"train.loop={loop}", f"train.max_steps={args.steps}", f"train.batch_size={args.batch_size}",
                 "train.logging_steps=1", f"train.output_dir={scratch}/{loop}"],
            )  # fmt: skip
            rows[loop] = train(config)
    print(f"{'loop':<11} {'samples/s':>10} {'train s':>8} {'dev acc':>8}")
    for loop, r in rows.items():
        speed, seconds, accuracy = r["train_samples_per_second"], r["train_runtime_s"], r["eval"]["accuracy"]
        print(f"{loop:<11} {speed:>10.1f} {seconds:>8.1f} {accuracy:>8.4f}")
    t, a = rows["trainer"], rows["accelerate"]
    print(f"accelerate/trainer samples/s ratio: {a['train_samples_per_second'] / t['train_samples_per_second']:.3f}")
    gap = max(abs(x - y) for x, y in zip(a["train_losses"], t["train_losses"], strict=True))
    print(f"max |step loss difference| over {len(a['train_losses'])} steps: {gap:.2e}")


if __name__ == "__main__":
    main()
