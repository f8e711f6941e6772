"""SST-2 (source) -> amazon product reviews (target): which transfer method pays with 100 labelled target rows?

    python bench/domain_transfer.py [--seeds 3] [--source-rows 2000] [--only target-only,joint-1]

Real data, offline: the source is a random sample of `--source-rows` SST-2 train rows (movie phrases);
the target is UCI's amazon review sentences (`../shared/data/uci-sentiment/amazon.tsv`, 1,000 rows). For
each seed the target is split afresh: 100 labelled rows to train on, 300 rows whose text (no labels) is the
unlabelled pool for DANN and reweighting, and the other 600 to score every method on. Model: the offline
all-MiniLM-L6-v2 with mean pooling, full fine-tuning, max length 64, AdamW 1e-4.

Methods (each a recipe plus overrides; `{...}` are this seed's files):

- target only: 10 epochs on the 100 labelled target rows (batch 16, 70 steps).
- source only: 1 epoch on the source (batch 32), scored on the target: zero-shot transfer.
- source then target: the source-only run's folder fine-tuned like target only.
- joint λ: one run, L_s + λ·L_t, the source as the main stream with a target batch every step.
- joint + L2-SP: joint λ=1 with α = β = 0.01 toward the pretrained weights.
- DANN: the source with a gradient-reversal domain classifier against the unlabelled pool; no target label.
  Its reversal weight ramps to `domain.adversarial_weight` (1, Ganin et al.'s maximum; and 0.1), its domain
  classifier at the run's rate or at `domain.adversary_learning_rate` (the "adversary lr" rows, by `--only`).
- 5-fold CV: `hftransfer cv` of target only on the 100 rows (the spread a user with only those rows sees).

Prints mean ± sd (over seeds) target accuracy per method and the paired per-seed difference to target only and
to source only. The seed draws the source sample first, then the amazon split, so the split depends on
`--source-rows` too: compare methods within one call, not across calls.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np
import pandas as pd

from hftransfer.config.recipe import load_config
from hftransfer.training.pipeline import train

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RECIPE = "recipes/text-sst2-minilm-full.yaml"
COMMON = ["model.pooling=mean", "data.max_length=64", "train.learning_rate=1e-4", "train.logging_steps=10",
          "hub.datasets=[]"]  # fmt: skip
TARGET_ONLY = ["train.epochs=10", "train.batch_size=16"]
SOURCE = ["train.epochs=1", "train.batch_size=32"]


def dann(weight: float, *more: str) -> list[str]:
    """DANN with no target label: the source, and the unlabelled pool against it, reversal weight up to `weight`."""
    return [
        "data.train_file=null",
        "domain.source_file={source}",
        "domain.unlabelled_target_file={pool}",
        f"domain.adversarial_weight={weight:g}",
        *more,
        *SOURCE,
    ]


# name -> (overrides, the method whose output folder this one starts from)
METHODS: dict[str, tuple[list[str], str | None]] = {
    "target only": (["data.train_file={target}", *TARGET_ONLY], None),
    "source only": (["data.train_file={source}", *SOURCE], None),
    "source then target": (["data.train_file={target}", "model.name_or_path={from}", *TARGET_ONLY], "source only"),
    **{
        f"joint λ={lam:g}": (
            ["data.train_file={target}", "domain.source_file={source}", f"domain.target_weight={lam:g}", *SOURCE],
            None,
        )
        for lam in (0.3, 1.0, 3.0)
    },
    "joint + L2-SP": (
        [
            "data.train_file={target}",
            "domain.source_file={source}",
            "domain.target_weight=1",
            "domain.l2sp_alpha=0.01",
            "domain.l2sp_beta=0.01",
            *SOURCE,
        ],
        None,
    ),
    "DANN (no target labels)": (dann(1), None),
    "DANN λmax=0.1 (no target labels)": (dann(0.1), None),
    **{
        f"DANN λmax={w:g} adversary lr {lr}": (dann(w, f"domain.adversary_learning_rate={lr}"), None)
        for w in (0.1, 0.3, 1)
        for lr in ("3e-4", "1e-3")
    },
}


CV_ROWS = ("5-fold CV: fold mean", "5-fold CV: ensemble")


def read_tsv(path: Path) -> pd.DataFrame:
    """Text verbatim (no quoting, no NA parsing); labels as integers."""
    frame = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, keep_default_na=False, dtype=str)
    return frame.assign(label=frame["label"].astype(int))


def write_tsv(frame: pd.DataFrame, path: Path) -> str:
    frame.to_csv(path, sep="\t", index=False, quoting=csv.QUOTE_NONE, escapechar="\\")
    return str(path)


def seed_files(seed: int, source_rows: int, work: Path) -> dict[str, str]:
    """This seed's source sample and target split (100 train / 300 unlabelled pool / 600 evaluation)."""
    rng = np.random.default_rng(seed)
    sst2 = read_tsv(DATA / "sst2" / "train.tsv")
    amazon = read_tsv(DATA / "uci-sentiment" / "amazon.tsv")
    source = sst2.iloc[rng.choice(len(sst2), source_rows, replace=False)]
    order = rng.permutation(len(amazon))
    target, pool, evaluation = (amazon.iloc[order[a:b]] for a, b in ((0, 100), (100, 400), (400, 1000)))
    work.mkdir(parents=True, exist_ok=True)
    return {
        "source": write_tsv(source, work / "source.tsv"),
        "target": write_tsv(target, work / "target.tsv"),
        "pool": write_tsv(pool[["sentence"]], work / "pool.tsv"),
        "eval": write_tsv(evaluation, work / "eval.tsv"),
    }


def run_method(name: str, seed: int, files: dict[str, str], work: Path, outputs: dict[str, str], extra: list) -> float:
    overrides, starts_from = METHODS[name]
    values = {**files, "from": outputs.get(starts_from, "")}
    out = work / name.replace(" ", "-").replace("=", "").replace("(", "").replace(")", "")
    config = load_config(
        RECIPE,
        [*COMMON, *(o.format(**values) for o in overrides), f"data.validation_file={files['eval']}",
         f"train.seed={seed}", f"train.output_dir={out}", "train.overwrite_output_dir=true", *extra],
    )  # fmt: skip
    results = train(config)
    outputs[name] = str(out)
    return results["eval"]["accuracy"]


def cross_validate(seed: int, files: dict[str, str], work: Path, extra: list) -> tuple[float, float]:
    """`hftransfer cv` (5 folds) on the 100 labelled target rows: (mean fold accuracy, accuracy of the 5 fold
    models' averaged probabilities on the 600 scored target rows)."""
    out = work / "cv"
    command = [
        sys.executable, "-m", "hftransfer", "cv", RECIPE, "--folds", "5", "--out", str(out), "-q",
        *COMMON, *TARGET_ONLY, f"data.train_file={files['target']}", f"data.test_file={files['eval']}",
        f"train.seed={seed}", f"train.output_dir={out}-runs", "train.overwrite_output_dir=true", *extra,
    ]  # fmt: skip
    subprocess.run(command, check=True)
    report = json.loads((out / "cv.json").read_text())
    return report["mean"]["accuracy"]["mean"], report["test"]["averaged_predictions"]["accuracy"]


PAD_OF = ("source only", "DANN (no target labels)")


def proxy_a_distances(files: dict[str, str], outputs: dict[str, str]) -> dict[str, float]:
    """PAD between the source sample and the scored target rows (300 each), in the features of the pretrained
    model, the source-only run and the DANN run: DANN's domain classifier should have pulled the domains together."""
    from hftransfer.analysis.features import DataSpec
    from hftransfer.analysis.shift import measure_shift

    folders = [outputs[name] for name in PAD_OF]
    report = measure_shift(DataSpec(files["source"], max_rows=300), DataSpec(files["eval"], max_rows=300), folders)
    names = {folder: f"PAD after {name}" for name, folder in zip(PAD_OF, folders, strict=True)}
    return {names.get(e["model"], "PAD pretrained"): e["proxy_a_distance"]["pad"] for e in report["models"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--source-rows", type=int, default=2000)
    parser.add_argument("--only", default=None, help="Comma-separated method names (target only always runs).")
    parser.add_argument("--no-cv", action="store_true")
    parser.add_argument("--extra", nargs="*", default=[], help="Overrides for every run (e.g. train.max_steps=2).")
    parser.add_argument("--skip", default="", help="Comma-separated method names to leave out.")
    args = parser.parse_args()
    wanted = set(METHODS) if args.only is None else {"target only", *args.only.split(",")}
    names = [n for n in METHODS if n in wanted and n not in args.skip.split(",")]
    accuracy: dict[str, list[float]] = {n: [] for n in [*names, *([] if args.no_cv else CV_ROWS)]}
    pads: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for seed in range(args.seeds):
            work = Path(scratch) / f"seed-{seed}"
            files, outputs = seed_files(seed, args.source_rows, work), {}
            for name in names:
                accuracy[name].append(run_method(name, seed, files, work, outputs, args.extra))
                print(f"[seed {seed}] {name}: {accuracy[name][-1]:.4f}", flush=True)
            if all(name in outputs for name in PAD_OF):
                for row, value in proxy_a_distances(files, outputs).items():
                    pads.setdefault(row, []).append(value)
                    print(f"[seed {seed}] {row}: {value:.3f}", flush=True)
            if not args.no_cv:
                for row, value in zip(CV_ROWS, cross_validate(seed, files, work, args.extra), strict=True):
                    accuracy[row].append(value)
                    print(f"[seed {seed}] {row}: {value:.4f}", flush=True)
    print_table(accuracy, args)
    for row, values in pads.items():
        sd = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
        print(f"{row:<34} {statistics.mean(values):.3f}{sd}  (source sample vs scored target rows, 300 each)")


def paired(values: list[float], reference: list[float]) -> str:
    """Mean ± sd over seeds of the per-seed difference `values - reference`."""
    diffs = [v - r for v, r in zip(values, reference, strict=True)]
    return f"{statistics.mean(diffs):+.4f}" + (f" ± {statistics.stdev(diffs):.4f}" if len(diffs) > 1 else "")


def print_table(accuracy: dict[str, list[float]], args: argparse.Namespace) -> None:
    """Mean ± sd over seeds, and the per-seed (paired) difference to target only: each seed scores every method on
    the same 600 rows, so the paired sd leaves out how hard that seed's split is."""
    base = accuracy["target only"]
    spread = statistics.stdev(base) if len(base) > 1 else float("nan")
    print(f"\nSST-2 ({args.source_rows} rows) -> amazon (100 labelled / 300 unlabelled / 600 scored), "
          f"MiniLM-L6 full fine-tuning, {args.seeds} seeds; target accuracy")  # fmt: skip
    references = [r for r in ("target only", "source only") if r in accuracy]
    print(f"{'method':<40} {'mean':>7} {'sd':>7}" + "".join(f" {'vs ' + r + ' (paired)':>26}" for r in references))
    for name, values in accuracy.items():
        sd = f"{statistics.stdev(values):.4f}" if len(values) > 1 else "-"
        print(f"{name:<40} {statistics.mean(values):>7.4f} {sd:>7}" + "".join(
            f" {paired(values, accuracy[r]):>26}" for r in references))  # fmt: skip
    for name, values in accuracy.items():
        print(f"  {name}: " + " ".join(f"{v:.4f}" for v in values))
    print(
        f"(target only's seed sd: {spread:.4f}. CV fold mean: accuracy on each fold's 20 held-out rows of the 100, "
        "averaged; CV ensemble: the 5 fold models' averaged probabilities on the 600 scored rows)"
    )


if __name__ == "__main__":
    main()
