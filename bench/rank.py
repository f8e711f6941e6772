"""Does `hftransfer rank` pick the checkpoint that fine-tunes best? Offline check on SST-2.

    python bench/rank.py [--rows 1000] [--epochs 3] [--seeds 42,43,44] [--work outputs/bench-rank]

Candidates (all built here, offline, from the packaged all-MiniLM-L6-v2):

- minilm: the packaged sentence-transformers MiniLM-L6 (pretrained).
- minilm-mix-0.25/0.5/0.75: MiniLM with every weight tensor moved a share `a` of the way to minilm-reinit's,
  w -> (1 - a) w + a r. Graded candidates of MiniLM's own depth and width, the setting these estimators were
  designed for; interpolating towards a real initialisation of the same config (rather than adding Gaussian
  noise) needs no per-tensor noise scale (LayerNorm gains near 1, embeddings near 0.02 differ by 50x) and ends
  exactly at minilm-reinit (a = 1), so the family runs from the pretrained model to the random one.
- minilm-length-task: MiniLM fine-tuned first on another source task (is the sentence longer than the median?).
- minilm-reinit: MiniLM's architecture with random weights.
- minilm-first-3 / minilm-first-1: its embeddings and first 3 (1) blocks only: shallower models whose frozen
  features score well but which fine-tune worse (the estimators' known failure mode; kept in on purpose).
- tiny-random: a randomly initialised 2-block, 128-wide BERT with MiniLM's tokenizer.

Each candidate is scored by `rank_models` (LogME, H-score, 5-fold linear probe) on `--rows` rows of the packaged
SST-2 train sample, once per feature choice in `--layers` (the last layer's pooled states, and their mean over
all layers, `hftransfer rank`'s default for text), then fully fine-tuned on the same rows with one recipe (mean
pooling, AdamW 1e-4, batch 32, `--epochs` epochs) once per seed in `--seeds`, and scored on the SST-2 dev set
(872 rows) after the last epoch. The ground truth is the mean dev accuracy over seeds. Prints the scores beside
mean ± sd, and per estimator the Spearman and Kendall rank correlations with it and whether its top pick is the
best fine-tuned candidate, on all candidates and on those of MiniLM's depth and width. `--score-samples K` also
scores the candidates on K - 1 further disjoint samples of the packaged rows (the ground truth stays: it is
about the models), so a score that agrees by the luck of one sample shows it. Fine-tuned results are kept in
`<work>/finetuned.json`, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np
import torch
from scipy.stats import kendalltau, spearmanr
from transformers import AutoConfig, AutoModel, AutoTokenizer, BertConfig, BertModel

from hftransfer.analysis.features import DataSpec
from hftransfer.analysis.rank import rank_models
from hftransfer.config.locations import resolve_location
from hftransfer.config.recipe import DEMO_MODEL, load_config
from hftransfer.console import mean_sd
from hftransfer.models.students import keep_layers
from hftransfer.training.pipeline import train

TRAIN = "pkg:hftransfer/demo_data/sst2/train.tsv"
DEV = "pkg:hftransfer/demo_data/sst2/dev.tsv"
ESTIMATORS = ("logme", "h_score", "probe_accuracy")
MIX_SHARES = (0.25, 0.5, 0.75)
PYDOC_TOPICS = ("specialnames", "compound", "types", "debugger", "string-methods", "formatstrings")


def pydoc_topic_task(folder: Path) -> tuple[Path, Path]:
    """A held-out second task, offline: which of six Python reference topics (`pydoc_data.topics`) a sentence is from.

    Sentences split after . ! ?, whitespace collapsed, under 5 words and any text under two topics dropped;
    stratified 60% train (883 rows) / 40% test (589), seed 0. Labels are topic ids in PYDOC_TOPICS order.
    """
    import re
    from collections import Counter
    from pydoc_data.topics import topics

    per_topic = {}
    for topic in PYDOC_TOPICS:
        sentences = [re.sub(r"\s+", " ", text).strip() for text in re.split(r"(?<=[.!?])\s+", topics[topic])]
        per_topic[topic] = list(dict.fromkeys(text for text in sentences if len(text.split()) >= 5))
    count = Counter(text for texts in per_topic.values() for text in texts)
    per_topic = {topic: [text for text in texts if count[text] == 1] for topic, texts in per_topic.items()}
    share = min(0.6, 1000 / sum(len(texts) for texts in per_topic.values()))
    rng = np.random.default_rng(0)
    train_rows, test_rows = [], []
    for label, topic in enumerate(PYDOC_TOPICS):
        texts = [per_topic[topic][i] for i in rng.permutation(len(per_topic[topic]))]
        cut = round(share * len(texts))
        train_rows += [[text, label] for text in texts[:cut]]
        test_rows += [[text, label] for text in texts[cut:]]
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for name, found in (("train", train_rows), ("test", test_rows)):
        found = [found[i] for i in rng.permutation(len(found))]
        path = folder / f"{name}.tsv"  # no tabs or newlines survive the whitespace collapse: plain TSV lines
        path.write_text("sentence\tlabel\n" + "".join(f"{text}\t{label}\n" for text, label in found))
        files.append(path)
    return files[0], files[1]


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


def mix_towards(pretrained: torch.nn.Module, random: torch.nn.Module, share: float) -> torch.nn.Module:
    """`pretrained` with every floating-point tensor w replaced by (1 - share) w + share r (r: `random`'s)."""
    other = random.state_dict()
    mixed = {
        key: (1 - share) * value + share * other[key] if value.is_floating_point() else value
        for key, value in pretrained.state_dict().items()
    }
    pretrained.load_state_dict(mixed)
    return pretrained


def build_candidates(work: Path, source_rows: list[list[str]], epochs: float) -> dict[str, str]:
    """Name -> checkpoint folder (or pkg: path) for every candidate; folders already in `work` are reused."""
    location = resolve_location(DEMO_MODEL)
    candidates = {"minilm": DEMO_MODEL}
    reinit = work / "minilm-reinit"
    if not reinit.is_dir():
        torch.manual_seed(0)
        save_backbone(BertModel(AutoConfig.from_pretrained(location)), reinit)
    for share in MIX_SHARES:
        folder = work / f"minilm-mix-{share:g}"
        if not folder.is_dir():
            mixed = mix_towards(AutoModel.from_pretrained(location), AutoModel.from_pretrained(reinit), share)
            save_backbone(mixed, folder)
        candidates[f"minilm-mix-{share:g}"] = str(folder)
    folder = work / "minilm-length-task"
    if not folder.is_dir():  # the other source task: sentence longer than the median, on rows ranking never sees
        lengths = [len(text.split()) for text, _ in source_rows]
        median = float(np.median(lengths))
        labelled = [[text, int(n > median)] for (text, _), n in zip(source_rows, lengths, strict=True)]
        data = write_tsv(work / "length-task.tsv", ["sentence", "label"], labelled)
        train(finetune_config(DEMO_MODEL, data, None, folder, epochs, 42, ["data.label_names=[short,long]"]))
    candidates["minilm-length-task"] = str(folder)
    candidates["minilm-reinit"] = str(reinit)
    for layers in (3, 1):
        folder = work / f"minilm-first-{layers}"
        if not folder.is_dir():
            save_backbone(keep_layers(AutoModel.from_pretrained(location), range(layers)), folder)
        candidates[f"minilm-first-{layers}"] = str(folder)
    folder = work / "tiny-random"
    if not folder.is_dir():
        torch.manual_seed(0)
        vocab = AutoTokenizer.from_pretrained(location).vocab_size
        config = BertConfig(
            vocab_size=vocab, hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256
        )
        save_backbone(BertModel(config), folder)
    candidates["tiny-random"] = str(folder)
    return candidates


def finetune_config(
    model: str, train_file: Path, dev: str | None, out: Path, epochs: float, seed: int, extra: list[str]
):
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
        f"train.seed={seed}",
        "train.batch_size=32",
        "train.learning_rate=1e-4",
        "train.logging_steps=50",
        "train.eval_steps=1000000",  # no evaluation between epochs: only the final dev score is used
        *extra,
    ]
    return load_config(None, overrides)


def finetune_all(
    candidates: dict[str, str],
    data: Path,
    work: Path,
    epochs: float,
    seeds: list[int],
    dev: Path | str = DEV,
    extra: tuple[str, ...] = (),
    store_name: str = "finetuned.json",
) -> dict:
    """Name -> {seed: dev accuracy}, seeds outermost (an interrupted run still has whole seeds); resumable."""
    store = work / store_name
    done = json.loads(store.read_text()) if store.is_file() else {}
    for seed in seeds:
        for name, path in candidates.items():
            key = f"{name}|seed={seed}|epochs={epochs:g}"
            if key not in done:
                out = work / f"ft-{name}"
                results = train(finetune_config(path, data, dev, out, epochs, seed, list(extra)))
                shutil.rmtree(out)  # only the score is kept
                done[key] = {"accuracy": results["eval"]["accuracy"], "train_s": results["train_runtime_s"]}
                store.write_text(json.dumps(done, indent=1) + "\n")
            print(f"[{name} seed {seed}] fine-tuned dev accuracy {done[key]['accuracy']:.4f}", flush=True)
    return {
        name: {seed: done[f"{name}|seed={seed}|epochs={epochs:g}"]["accuracy"] for seed in seeds} for name in candidates
    }


def correlations(candidates: list[dict], accuracy: dict[str, float]) -> dict:
    """Per estimator: Spearman and Kendall against mean fine-tuned accuracy, its top pick and the best model."""
    truth = [accuracy[c["model"]] for c in candidates]
    best = max((c["model"] for c in candidates), key=accuracy.__getitem__)
    found = {}
    for estimator in ESTIMATORS:
        scores = [c[estimator] for c in candidates]
        pick = candidates[int(np.argmax(scores))]["model"]
        found[estimator] = {
            "spearman": float(spearmanr(scores, truth).statistic),
            "kendall": float(kendalltau(scores, truth).statistic),
            "top_pick": pick,
            "best_finetuned": best,
            "picks_best": pick == best,
        }
    return found


def score_samples(
    candidates: dict[str, str], samples: list[Path], layers: str, accuracy: dict[str, float]
) -> tuple[dict, list[dict]]:
    """The first sample's ranking report (candidates renamed) and, per sample, the correlations on all candidates."""
    names = {path: name for name, path in candidates.items()}
    first, found = None, []
    for data in samples:
        report = rank_models(DataSpec(str(data), max_rows=None), list(candidates.values()), layers=layers)
        for candidate in report["candidates"]:
            candidate["model"] = names[candidate["model"]]
        first = first or report
        found.append(correlations(report["candidates"], accuracy))
    return first, found


def print_stability(per_layers: dict[str, list[dict]]) -> None:
    print("\nEvery sample (all candidates): Spearman per sample, and how often the top pick is the best fine-tuned")
    print("\n| features | estimator | Spearman per sample | mean | top pick right |")
    print("|---|---|---|---:|---:|")
    for layers, found in per_layers.items():
        for estimator in ESTIMATORS:
            rhos = [sample[estimator]["spearman"] for sample in found]
            right = sum(sample[estimator]["picks_best"] for sample in found)
            print(
                f"| {layers} | {estimator} | {' / '.join(f'{r:.2f}' for r in rhos)} | {np.mean(rhos):.2f} | "
                f"{right}/{len(found)} |"
            )


def print_correlations(title: str, found: dict) -> None:
    print(f"\n{title}\n\n| estimator | Spearman | Kendall | top pick | best fine-tuned |")
    print("|---|---:|---:|---|---|")
    for estimator, c in found.items():
        verdict = "yes" if c["picks_best"] else "no"
        print(
            f"| {estimator} | {c['spearman']:.3f} | {c['kendall']:.3f} | {c['top_pick']} ({verdict}) | "
            f"{c['best_finetuned']} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1000, help="SST-2 train rows to score and fine-tune on.")
    parser.add_argument("--source-rows", type=int, default=1000, help="Rows of the other source task.")
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--seeds", default="42,43,44", help="Fine-tuning seeds; the ground truth is their mean.")
    parser.add_argument("--layers", default="last,mean", help="Feature choices to score (hftransfer rank --layers).")
    parser.add_argument("--score-samples", type=int, default=3, help="Disjoint row samples to score (first: tuned).")
    parser.add_argument("--work", default="outputs/bench-rank")
    parser.add_argument(
        "--task",
        choices=["sst2", "pydoc-topics"],
        default="sst2",
        help="sst2: the packaged SST-2 sample; pydoc-topics: a held-out second task (six Python reference topics, "
        "fine-tuned in fp32, scored on its train split once).",
    )
    args = parser.parse_args()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    layer_choices = [choice for choice in args.layers.split(",") if choice]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)

    header, *rows = read_tsv(TRAIN)
    order = np.random.default_rng(0).permutation(len(rows))
    chosen = [rows[i] for i in order[: args.rows]]
    source = [rows[i] for i in order[args.rows : args.rows + args.source_rows]]
    data = write_tsv(work / "sst2-rows.tsv", header, chosen)
    samples, dev, extra, store = [data], DEV, (), "finetuned.json"
    further_samples = args.score_samples - 1  # SST-2 only: slices after the fine-tuning and length-task rows
    if args.task == "pydoc-topics":
        data, dev = pydoc_topic_task(work / "pydoc-topics")
        samples, store, further_samples = [data], "finetuned-pydoc-topics.json", 0
        extra = (f"data.label_names=[{','.join(PYDOC_TOPICS)}]", "train.precision=fp32")
    for k in range(1, further_samples + 1):
        start = args.rows + args.source_rows + (k - 1) * args.rows
        picked = [rows[i] for i in order[start : start + args.rows]]
        if len(picked) < args.rows:
            raise SystemExit(f"--score-samples {args.score_samples}: the sample has rows for only {k}.")
        samples.append(write_tsv(work / f"sst2-rows-{k + 1}.tsv", header, picked))

    started = time.perf_counter()
    candidates = build_candidates(work, source, args.epochs)
    build_s = time.perf_counter() - started

    started = time.perf_counter()
    per_seed = finetune_all(candidates, data, work, args.epochs, seeds, dev, extra, store)
    finetune_s = time.perf_counter() - started
    mean = {name: float(np.mean(list(runs.values()))) for name, runs in per_seed.items()}
    sd = {
        name: float(np.std(list(runs.values()), ddof=1)) if len(seeds) > 1 else None for name, runs in per_seed.items()
    }
    print(
        f"\n{args.task}: {len(read_tsv(str(data))) - 1} train rows; fine-tuning: full, {args.epochs:g} epochs, mean "
        f"pooling, AdamW 1e-4, batch 32, seeds {args.seeds}; accuracy on {len(read_tsv(str(dev))) - 1} held-out rows, "
        "mean ± sd over seeds"
    )

    started = time.perf_counter()
    summary_rank, found, stability = {}, {}, {}
    for layers in layer_choices:
        report, per_sample = score_samples(candidates, samples, layers, mean)
        reference = next(c for c in report["candidates"] if c["model"] == "minilm")
        same_size = [
            c
            for c in report["candidates"]
            if (c["layers"], c["hidden_size"]) == (reference["layers"], reference["hidden_size"])
        ]
        found[layers] = {
            "all": per_sample[0],
            "same_architecture": correlations(same_size, mean),
        }
        summary_rank[layers], stability[layers] = report, per_sample
        print(f"\n## Features: {layers} (scored on the fine-tuning rows)")
        print("\n| candidate | blocks x width | LogME | H-score | linear probe | fine-tuned dev acc | per seed |")
        print("|---|---|---:|---:|---:|---:|---|")
        for c in report["candidates"]:
            runs = ", ".join(f"{a:.3f}" for a in per_seed[c["model"]].values())
            print(
                f"| {c['model']} | {c['layers']} x {c['hidden_size']} | {c['logme']:.4f} | {c['h_score']:.4f} | "
                f"{c['probe_accuracy']:.3f} | {mean_sd(list(per_seed[c['model']].values()), 3)} | {runs} |"
            )
        print_correlations(f"All {len(report['candidates'])} candidates ({layers})", found[layers]["all"])
        print_correlations(
            f"Same architecture as MiniLM ({reference['layers']} blocks x {reference['hidden_size']}; "
            f"{len(same_size)} candidates; {layers})",
            found[layers]["same_architecture"],
        )
    rank_s = time.perf_counter() - started
    print_stability(stability)
    timings = {"build_candidates_s": build_s, "rank_s": rank_s, "finetune_s": finetune_s}
    print(f"\nwall time: candidates {build_s:.0f}s, rank {rank_s:.0f}s, fine-tuning {finetune_s:.0f}s")
    summary = {
        "settings": {"rows": args.rows, "epochs": args.epochs, "seeds": seeds, "score_samples": len(samples)},
        "rank": summary_rank,
        "finetuned": {name: {"per_seed": per_seed[name], "mean": mean[name], "sd": sd[name]} for name in candidates},
        "correlations": found,
        "correlations_per_sample": stability,
        "timings": timings,
    }
    out = work / ("summary.json" if args.task == "sst2" else f"summary-{args.task}.json")
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"Wrote {out}")


if __name__ == "__main__":
    main()
