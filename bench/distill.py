"""Distillation bench (offline): MiniLM-L6 teacher on the SST-2 sample -> 3-block student, all in one run.

Prints the teacher vs distilled-student table (accuracy, retention, latency speedup), the same 3-block
student fine-tuned without a teacher on the same data and steps, and the cost of a cached-logit
distillation epoch relative to that plain fine-tuning epoch.

    python bench/distill.py [--teacher-epochs 3] [--epochs 3] [--teacher DIR] [--train-samples N] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from transformers import AutoModelForSequenceClassification, AutoTokenizer

from hftransfer.config import load_config
from hftransfer.students import keep_layers
from hftransfer.training import format_report, train

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
LAYERS = [0, 2, 4]


def _train(recipe: str, out: Path, *overrides: str) -> dict:
    config = load_config(RECIPES / recipe, [f"train.output_dir={out}", "train.overwrite_output_dir=true", *overrides])
    results = train(config)
    print(format_report(results), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-out/distill"))
    parser.add_argument("--teacher", type=Path, help="Reuse a fine-tuned teacher folder instead of training one.")
    parser.add_argument("--teacher-epochs", type=float, default=3.0)
    parser.add_argument("--epochs", type=float, default=3.0, help="Epochs for both students.")
    parser.add_argument("--train-samples", type=int, help="Use only this many training rows (quick runs).")
    args = parser.parse_args()
    shared = [f"data.max_train_samples={args.train_samples}"] if args.train_samples else []

    teacher = args.teacher or args.out / "teacher"
    if args.teacher is None:
        _train("text-sst2-minilm-full.yaml", teacher, f"train.epochs={args.teacher_epochs}", *shared)

    distilled = _train(
        "text-sst2-minilm-distill.yaml",
        args.out / "distilled",
        f"model.name_or_path={teacher}",
        f"strategy.distill.teacher={teacher}",
        f"strategy.distill.student_layers={LAYERS}",
        f"train.epochs={args.epochs}",
        *shared,
    )

    # The same 3-block student (teacher's blocks 0, 2, 4 and head), fine-tuned on the labels alone.
    cut = args.out / "student-start"
    model = keep_layers(AutoModelForSequenceClassification.from_pretrained(teacher), LAYERS)
    model.save_pretrained(cut)
    AutoTokenizer.from_pretrained(teacher).save_pretrained(cut)
    plain = _train(
        "text-sst2-minilm-full.yaml",
        args.out / "plain-student",
        f"model.name_or_path={cut}",
        f"train.epochs={args.epochs}",
        *shared,
    )

    d = distilled["distill"]
    teacher_acc, student_acc, plain_acc = d["teacher"]["accuracy"], d["student"]["accuracy"], plain["eval"]["accuracy"]
    epoch_ratio = distilled["train_runtime_s"] / plain["train_runtime_s"]
    rows = [
        ("teacher dev accuracy (MiniLM-L6)", f"{teacher_acc:.4f}", ""),
        ("distilled 3-block student", f"{student_acc:.4f}", f"retention {d['retention']:.3f} (target >= 0.97)"),
        (
            "plain 3-block student (no teacher)",
            f"{plain_acc:.4f}",
            f"distilled - plain = {student_acc - plain_acc:+.4f}",
        ),
        (
            "latency batch 1 (teacher / student)",
            f"{d['latency_ms']['teacher']['1']:.1f} / {d['latency_ms']['student']['1']:.1f} ms",
            f"speedup {d['speedup_batch1']:.2f}x (target >= 1.8x)",
        ),
        (
            "latency batch 64 (teacher / student)",
            f"{d['latency_ms']['teacher']['64']:.1f} / {d['latency_ms']['student']['64']:.1f} ms",
            f"speedup {d['speedup_batch64']:.2f}x",
        ),
        (
            "train time, distilled / plain",
            f"{distilled['train_runtime_s']:.1f} / {plain['train_runtime_s']:.1f} s",
            f"{epoch_ratio:.3f}x per epoch (target <= 1.15x; + {d['teacher_cache_s']:.1f}s one-off logit cache)",
        ),
        ("params teacher / student", f"{d['teacher']['params']:,} / {d['student']['params']:,}", ""),
    ]
    print(f"\nDistillation bench on {distilled['hardware']} (same run)")
    for name, value, note in rows:
        print(f"  {name:<38}{value:>24}   {note}")


if __name__ == "__main__":
    main()
