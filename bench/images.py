"""Image pipeline throughput: hftransfer's data path (files -> decode/augment in DataLoader workers -> ResNet)
against a bare torch loop over pre-decoded tensors (the limit), for training and inference.

    python bench/images.py                      # ResNet-18-sized random model, 224px, 2 workers: ~4 min on 2 busy cores
    python bench/images.py --workers 4 --steps 8 --batch-size 32

Both sides run the same model, optimizer and step code on the same batches; only where the batches come from
differs, so the ratio is the share of compute the data pipeline leaves to the model. Each side's steps are split
into rounds whose order alternates (pipeline first, then bare first), so a change in load from other processes
hits both sides alike; each pipeline round starts fresh workers and skips one warm-up step. Peak memory is the max
RSS of this process and of the worker processes, taken after the first pipeline training round (before anything
was pre-decoded) and at the end.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from transformers import ResNetConfig, ResNetForImageClassification
from transformers.models.convnext.image_processing_pil_convnext import ConvNextImageProcessorPil

from hftransfer.config.recipe import load_config
from hftransfer.data.images import ImageCollator, prepare_image_data
from hftransfer.data.loaders import train_batch_sampler
from hftransfer.strategies.base import Strategy


def write_images(root: Path, count: int, classes: int = 4, seed: int = 0) -> None:
    """JPEG files of mixed sizes around ImageNet's (decode + resize cost like real photos)."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        folder = root / f"c{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        h, w = (int(v) for v in rng.integers(300, 500, 2))
        base = rng.integers(0, 255, (h // 8, w // 8, 3)).astype(np.uint8)  # smooth-ish content compresses like photos
        Image.fromarray(base).resize((w, h), Image.Resampling.BILINEAR).save(folder / f"{i}.jpg", quality=90)


def resnet18(num_labels: int) -> ResNetForImageClassification:
    config = ResNetConfig(
        embedding_size=64,
        hidden_sizes=[64, 128, 256, 512],
        depths=[2, 2, 2, 2],
        layer_type="basic",
        num_labels=num_labels,
    )
    return ResNetForImageClassification(config)


def train_step(model, optimizer, strategy: Strategy, batch: dict) -> int:
    loss, _ = strategy.loss(model, batch)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return int(batch["labels"].shape[0])


@torch.inference_mode()
def infer_step(model, batch: dict) -> int:
    model(pixel_values=batch["pixel_values"])
    return int(batch["pixel_values"].shape[0])


def timed(step, batches, warmup: int = 1) -> tuple[int, float]:
    """(images, seconds) over `batches` after `warmup` untimed steps; waiting for a batch counts as time."""
    batches = iter(batches)
    for _ in range(warmup):
        step(next(batches))
    seen, started = 0, time.perf_counter()
    for batch in batches:
        seen += step(batch)
    return seen, time.perf_counter() - started


def peak_mib() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=16, help="Timed steps per side and phase, over all rounds.")
    parser.add_argument("--rounds", type=int, default=2, help="Rounds; the side that goes first alternates.")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    torch.manual_seed(0)
    per_round = max(1, args.steps // args.rounds)
    warmup = 1
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_images(root / "train", args.batch_size * args.rounds * (per_round + warmup))
        processor = ConvNextImageProcessorPil(size={"shortest_edge": args.size})  # ResNet-50's: resize 256, crop 224
        config = load_config(None, [f"data.train_dir={root / 'train'}", "data.validation_size=0.01"])
        data = prepare_image_data(config.data, processor)
        collator = ImageCollator(processor, config.data.images)
        eval_rows = data.train.remove_columns("augment")  # same files, eval transforms
        model = resnet18(data.labels.num_labels)
        params = sum(p.numel() for p in model.parameters())
        strategy, optimizer = Strategy(), torch.optim.AdamW(model.parameters(), lr=1e-4)
        batches = list(train_batch_sampler(data.train, config.data, args.batch_size, seed=0))

        def pipeline(rows, chunk):
            """hftransfer's path: files decoded and augmented by the collator in DataLoader workers."""
            return DataLoader(
                rows,
                batch_sampler=chunk,
                collate_fn=collator,
                num_workers=args.workers,
                prefetch_factor=4 if args.workers else None,
            )

        def run_phase(name: str, chunk: list[list[int]], decoded: list[dict]) -> tuple[int, float]:
            training = name.startswith("train")
            model.train(training)
            step = partial(train_step, model, optimizer, strategy) if training else partial(infer_step, model)
            if name.endswith("pipeline"):
                return timed(step, pipeline(data.train if training else eval_rows, chunk))
            if not decoded:  # the limit: the same batches decoded and augmented up front
                decoded.extend(collator([data.train[i] for i in batch]) for batch in chunk)
            return timed(step, decoded)

        names = ["train pipeline", "train bare", "inference pipeline", "inference bare"]
        totals = {name: [0, 0.0] for name in names}
        pipeline_peak = (0.0, 0.0)
        for r in range(args.rounds):
            chunk = batches[r * (per_round + warmup) : (r + 1) * (per_round + warmup)]
            decoded: list[dict] = []
            order = names if r % 2 == 0 else ["train bare", "train pipeline", "inference bare", "inference pipeline"]
            for name in order:
                seen, seconds = run_phase(name, chunk, decoded)
                totals[name][0] += seen
                totals[name][1] += seconds
                if r == 0 and name == "train pipeline":
                    pipeline_peak = peak_mib()  # before any batch was pre-decoded for the bare loop
        own = peak_mib()[0]

    rate = {name: seen / seconds for name, (seen, seconds) in totals.items()}
    print(
        f"ResNet-18-sized ({params / 1e6:.1f}M params), {args.size}px, batch {args.batch_size}, "
        f"{per_round * args.rounds} timed steps per side in {args.rounds} rounds, "
        f"{args.workers} workers, {torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs, "
        f"load average {load_before[0]:.1f} before / {os.getloadavg()[0]:.1f} after"
    )
    print(f"{'':<12}{'pipeline img/s':>16}{'bare img/s':>12}{'ratio':>8}")
    for name in ("train", "inference"):
        ours, limit = rate[f"{name} pipeline"], rate[f"{name} bare"]
        print(f"{name:<12}{ours:>16.1f}{limit:>12.1f}{ours / limit:>8.2f}")
    print(
        f"peak RSS: pipeline training {pipeline_peak[0]:.0f} MiB main + {pipeline_peak[1]:.0f} MiB largest worker; "
        f"whole run (incl. pre-decoded batches) {own:.0f} MiB main"
    )


if __name__ == "__main__":
    main()
