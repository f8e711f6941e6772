"""Full vs frozen-half vs head-only vs LoRA on the offline MiniLM + SST-2 sample: speed, accuracy, size.

    python bench/strategies.py [--rows 4096] [--epochs 1] [--only full,lora]

Every strategy trains the same rows for the same epochs from its recipe (recipes/text-sst2-minilm-*.yaml);
prints train samples/s, dev accuracy, trainable share and checkpoint size, with ratios against full
fine-tuning measured in the same run. Head-only uses mean pooling and the feature cache, so its
epochs after the first run only the classifier: use --epochs 3 to see that (the second table times each
epoch's training steps, evaluation excluded, and compares epochs 2+ with full fine-tuning's).
"""

from __future__ import annotations

import argparse
import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from hftransfer.config.recipe import load_config
from hftransfer.training.pipeline import train

RUNS = {
    "full": ("recipes/text-sst2-minilm-full.yaml", []),
    "frozen-half": ("recipes/text-sst2-minilm-frozen.yaml", []),
    # Embeddings only: drops the dense 30k x 384 word-embedding gradient and its AdamW update every step.
    "frozen-emb": ("recipes/text-sst2-minilm-frozen.yaml", ["strategy.frozen.frozen_blocks=0"]),
    "head-only": (
        "recipes/text-sst2-minilm-frozen.yaml",
        ["strategy.frozen.mode=head_only", "strategy.frozen.frozen_blocks=null", "train.learning_rate=1e-2"],
    ),
    "lora": ("recipes/text-sst2-minilm-lora.yaml", []),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--only", default=",".join(RUNS), help="Comma-separated subset; full is the baseline.")
    args = parser.parse_args()
    wanted = args.only.split(",")
    rows = {}
    header = (
        f"{'strategy':<12} {'samples/s':>10} {'x full':>7} {'dev acc':>8} {'Δacc':>7} "
        f"{'trainable':>9} {'ckpt MB':>8} {'x full':>7}"
    )
    with tempfile.TemporaryDirectory() as scratch:
        for name in wanted:
            recipe, extra = RUNS[name]
            config = load_config(
                recipe,
                [*extra, f"data.max_train_samples={args.rows}", f"train.epochs={args.epochs}",
                 f"train.output_dir={scratch}/{name}", "train.logging_steps=50"],
            )  # fmt: skip
            rows[name] = train(config)
            speed, acc = rows[name]["train_samples_per_second"], rows[name]["eval"]["accuracy"]
            print(f"[{name}] {speed:.1f} samples/s, acc {acc:.4f}", flush=True)
    base = rows.get("full")
    print(f"\nMiniLM-L6 on {args.rows} SST-2 rows, {args.epochs:g} epoch(s), {next(iter(rows.values()))['hardware']}")
    print(header)
    for name, r in rows.items():
        speed, acc, size = r["train_samples_per_second"], r["eval"]["accuracy"], r["checkpoint_size_bytes"]
        ratio = f"{speed / base['train_samples_per_second']:.2f}" if base else "-"
        delta = f"{100 * (acc - base['eval']['accuracy']):+.1f}" if base else "-"
        size_ratio = f"{size / base['checkpoint_size_bytes']:.3f}" if base else "-"
        print(
            f"{name:<12} {speed:>10.1f} {ratio:>7} {acc:>8.4f} {delta:>7} {100 * r['trainable_share']:>8.3f}% "
            f"{size / 1e6:>8.2f} {size_ratio:>7}"
        )
    _print_later_epochs(rows, base)


def _later_epoch_rate(results: dict) -> float | None:
    """Samples/s over the epochs after the first (where cached features or logits pay off)."""
    later = results.get("epoch_train_s", [])[1:]
    return results["num_train_samples"] * len(later) / sum(later) if later else None


def _print_later_epochs(rows: dict[str, dict], base: dict | None) -> None:
    base_rate = _later_epoch_rate(base) if base else None
    if base_rate is None:
        return
    print(f"\n{'strategy':<12} {'epoch 1 s':>10} {'later s/epoch':>14} {'samples/s':>10} {'x full':>7}")
    for name, r in rows.items():
        rate = _later_epoch_rate(r)
        if rate is None:
            continue
        later = r["epoch_train_s"][1:]
        print(
            f"{name:<12} {r['epoch_train_s'][0]:>10.1f} {sum(later) / len(later):>14.1f} {rate:>10.1f} "
            f"{rate / base_rate:>7.2f}"
        )


if __name__ == "__main__":
    main()
