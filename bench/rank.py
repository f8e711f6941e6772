"""Does `hftransfer rank` pick the checkpoint that fine-tunes best? Offline check on SST-2.

    python bench/rank.py [--rows 1000] [--work outputs/bench-rank] [--epochs 1]

Candidates (all built here, offline, from the packaged all-MiniLM-L6-v2):

- minilm: the packaged sentence-transformers MiniLM-L6 (pretrained).
- minilm-first-3 / minilm-first-1: its embeddings and first 3 (1) blocks only (smaller students, pretrained).
- minilm-length-task: MiniLM fine-tuned first on another source task (is the sentence longer than the median?).
- minilm-reinit: MiniLM's architecture with random weights.
- tiny-random: a randomly initialised 2-block, 128-wide BERT with MiniLM's tokenizer.

Each candidate is scored by `rank_models` (LogME, H-score, 5-fold linear probe) on `--rows` rows of the packaged
SST-2 train sample, then fully fine-tuned on the same rows with one recipe (mean pooling, AdamW 1e-4, batch 32,
`--epochs` epochs, seed 42) and scored on the SST-2 dev set (872 rows). Prints both, and the Spearman and
Kendall rank correlations between each estimator and the fine-tuned accuracy.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np
import torch
from scipy.stats import kendalltau, spearmanr
from transformers import AutoConfig, AutoModel, AutoTokenizer, BertConfig, BertModel

from hftransfer.config import DEMO_MODEL, load_config
from hftransfer.features import DataSpec
from hftransfer.paths import resolve_location
from hftransfer.rank import format_ranking, rank_models
from hftransfer.students import keep_layers
from hftransfer.training import train

TRAIN = "pkg:hftransfer/demo_data/sst2/train.tsv"
DEV = "pkg:hftransfer/demo_data/sst2/dev.tsv"
ESTIMATORS = ("logme", "h_score", "probe_accuracy")


def read_tsv(path: str) -> list[list[str]]:
    with open(resolve_location(path), newline="") as handle:
        return list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


def write_tsv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\", lineterminator="\n")
        writer.writerows([header, *rows])
    return path


def save_backbone(model: torch.nn.Module, folder: Path) -> str:
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(resolve_location(DEMO_MODEL)).save_pretrained(folder)
    return str(folder)


def build_candidates(work: Path, source_rows: list[list[str]], epochs: float) -> dict[str, str]:
    """Name -> checkpoint folder (or pkg: path) for every candidate."""
    location = resolve_location(DEMO_MODEL)
    candidates = {"minilm": DEMO_MODEL}
    for layers in (3, 1):
        folder = work / f"minilm-first-{layers}"
        if not folder.is_dir():
            save_backbone(keep_layers(AutoModel.from_pretrained(location), range(layers)), folder)
        candidates[f"minilm-first-{layers}"] = str(folder)
    folder = work / "minilm-reinit"
    if not folder.is_dir():
        torch.manual_seed(0)
        save_backbone(BertModel(AutoConfig.from_pretrained(location)), folder)
    candidates["minilm-reinit"] = str(folder)
    folder = work / "tiny-random"
    if not folder.is_dir():
        torch.manual_seed(0)
        vocab = AutoTokenizer.from_pretrained(location).vocab_size
        config = BertConfig(
            vocab_size=vocab, hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256
        )
        save_backbone(BertModel(config), folder)
    candidates["tiny-random"] = str(folder)
    folder = work / "minilm-length-task"
    if not folder.is_dir():  # the other source task: sentence longer than the median, on rows ranking never sees
        lengths = [len(text.split()) for text, _ in source_rows]
        median = float(np.median(lengths))
        labelled = [[text, int(n > median)] for (text, _), n in zip(source_rows, lengths, strict=True)]
        data = write_tsv(work / "length-task.tsv", ["sentence", "label"], labelled)
        train(finetune_config(DEMO_MODEL, data, None, folder, epochs, ["data.label_names=[short,long]"]))
    candidates["minilm-length-task"] = str(folder)
    return candidates


def finetune_config(model: str, train_file: Path, dev: str | None, out: Path, epochs: float, extra: list[str]):
    overrides = [
        "task=text-classification",
        f"model.name_or_path={model}",
        "model.pooling=mean",
        f"data.train_file={train_file}",
        f"data.validation_file={dev}" if dev else "data.validation_file=null",
        "strategy.name=full",
        f"train.output_dir={out}",
        "train.overwrite_output_dir=true",
        f"train.epochs={epochs}",
        "train.batch_size=32",
        "train.learning_rate=1e-4",
        "train.logging_steps=50",
        *extra,
    ]
    return load_config(None, overrides)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1000, help="SST-2 train rows to score and fine-tune on.")
    parser.add_argument("--source-rows", type=int, default=1000, help="Rows of the other source task.")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--work", default="outputs/bench-rank")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)

    header, *rows = read_tsv(TRAIN)
    order = np.random.default_rng(0).permutation(len(rows))
    chosen = [rows[i] for i in order[: args.rows]]
    source = [rows[i] for i in order[args.rows : args.rows + args.source_rows]]
    data = write_tsv(work / "sst2-rows.tsv", header, chosen)

    started = time.perf_counter()
    candidates = build_candidates(work, source, args.epochs)
    build_s = time.perf_counter() - started
    names = {path: name for name, path in candidates.items()}

    started = time.perf_counter()
    report = rank_models(DataSpec(str(data), max_rows=None), list(candidates.values()))
    rank_s = time.perf_counter() - started
    for candidate in report["candidates"]:
        candidate["model"] = names[candidate["model"]]
    print(format_ranking(report), flush=True)

    finetuned = {}
    started = time.perf_counter()
    for name, path in candidates.items():
        results = train(finetune_config(path, data, DEV, work / f"ft-{name}", args.epochs, []))
        finetuned[name] = {"accuracy": results["eval"]["accuracy"], "train_s": results["train_runtime_s"]}
        print(f"[{name}] fine-tuned dev accuracy {results['eval']['accuracy']:.4f}", flush=True)
    finetune_s = time.perf_counter() - started

    accuracy = [finetuned[c["model"]]["accuracy"] for c in report["candidates"]]
    correlations = {}
    for estimator in ESTIMATORS:
        scores = [c[estimator] for c in report["candidates"]]
        correlations[estimator] = {
            "spearman": float(spearmanr(scores, accuracy).statistic),
            "kendall": float(kendalltau(scores, accuracy).statistic),
            "picks_best": report["candidates"][int(np.argmax(scores))]["model"]
            == max(finetuned, key=lambda n: finetuned[n]["accuracy"]),
        }

    print(
        f"\n{args.rows} SST-2 train rows; fine-tuning: full, {args.epochs:g} epoch, mean pooling, AdamW 1e-4, batch 32"
    )
    print("\n| candidate | LogME | H-score | linear probe | fine-tuned dev acc | fine-tune s |")
    print("|---|---:|---:|---:|---:|---:|")
    for c in report["candidates"]:
        f = finetuned[c["model"]]
        print(
            f"| {c['model']} | {c['logme']:.4f} | {c['h_score']:.4f} | {c['probe_accuracy']:.3f} | "
            f"{f['accuracy']:.4f} | {f['train_s']:.0f} |"
        )
    print("\n| estimator | Spearman | Kendall | top pick fine-tunes best |")
    print("|---|---:|---:|---|")
    for estimator, c in correlations.items():
        print(f"| {estimator} | {c['spearman']:.3f} | {c['kendall']:.3f} | {'yes' if c['picks_best'] else 'no'} |")
    timings = {"build_candidates_s": build_s, "rank_s": rank_s, "finetune_s": finetune_s}
    print(f"\nwall time: candidates {build_s:.0f}s, rank {rank_s:.0f}s, fine-tuning {finetune_s:.0f}s")
    summary = {"rank": report, "finetuned": finetuned, "correlations": correlations, "timings": timings}
    (work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"Wrote {work / 'summary.json'}")


if __name__ == "__main__":
    main()
