"""Image pipeline throughput: hftransfer's data path (files -> decode/augment in DataLoader workers -> ResNet)
against a bare torch loop over pre-decoded tensors (the limit), for training and inference.

    python bench/images.py                      # ResNet-18-sized random model, 224px, 2 workers
    python bench/images.py --workers 4 --steps 8 --batch-size 32

Both sides run the same model, optimizer and step code; only where the batches come from differs, so the
ratio is the share of compute the data pipeline leaves to the model. Peak memory is the max RSS of this
process and of the worker processes.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from transformers import ResNetConfig, ResNetForImageClassification
from transformers.models.convnext.image_processing_pil_convnext import ConvNextImageProcessorPil

from hftransfer.config import load_config
from hftransfer.data.images import ImageCollator, prepare_image_data
from hftransfer.data.loaders import eval_loader, train_batch_sampler
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


def timed_train(model, batches, steps: int, warmup: int = 1) -> float:
    """Images/s over `steps` optimizer steps after `warmup` (same step code for both data sources)."""
    strategy = Strategy()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    seen, started = 0, None
    for i, batch in enumerate(batches):
        if i == warmup:
            seen, started = 0, time.perf_counter()
        loss, _ = strategy.loss(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        seen += int(batch["labels"].shape[0])
        if i + 1 == warmup + steps:
            break
    return seen / (time.perf_counter() - started)


@torch.inference_mode()
def timed_infer(model, batches, steps: int, warmup: int = 1) -> float:
    model.eval()
    seen, started = 0, None
    for i, batch in enumerate(batches):
        if i == warmup:
            seen, started = 0, time.perf_counter()
        model(pixel_values=batch["pixel_values"])
        seen += int(batch["pixel_values"].shape[0])
        if i + 1 == warmup + steps:
            break
    return seen / (time.perf_counter() - started)


def peak_mib() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    torch.manual_seed(0)
    needed = args.batch_size * (args.steps + 1)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_images(root / "train", needed)
        processor = ConvNextImageProcessorPil(size={"shortest_edge": args.size})  # ResNet-50's: resize 256, crop 224
        config = load_config(None, [f"data.train_dir={root / 'train'}", "data.validation_size=0.01"])
        data = prepare_image_data(config.data, processor)
        collator = ImageCollator(processor, config.data.images)
        model = resnet18(data.labels.num_labels)
        params = sum(p.numel() for p in model.parameters())

        sampler = train_batch_sampler(data.train, config.data, args.batch_size, seed=0)
        loader = DataLoader(
            data.train,
            batch_sampler=sampler,
            collate_fn=collator,
            num_workers=args.workers,
            persistent_workers=args.workers > 0,
            prefetch_factor=4 if args.workers else None,
        )
        # The limit: the same batches decoded and augmented once, up front.
        decoded = [collator([data.train[i] for i in batch]) for batch in sampler]

        pipeline_train = timed_train(model, loader, args.steps)
        bare_train = timed_train(model, decoded, args.steps)
        infer_loader = eval_loader(data.train.remove_columns("augment"), collator, args.batch_size, args.workers)
        pipeline_infer = timed_infer(model, infer_loader, args.steps)
        bare_infer = timed_infer(model, [{"pixel_values": b["pixel_values"]} for b in decoded], args.steps)
        own, children = peak_mib()

    print(
        f"ResNet-18-sized ({params / 1e6:.1f}M params), {args.size}px, batch {args.batch_size}, "
        f"{args.steps} timed steps, "
        f"{args.workers} workers, {torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs"
    )
    print(f"{'':<12}{'pipeline img/s':>16}{'bare img/s':>12}{'ratio':>8}")
    for name, ours, bare in (("train", pipeline_train, bare_train), ("inference", pipeline_infer, bare_infer)):
        print(f"{name:<12}{ours:>16.1f}{bare:>12.1f}{ours / bare:>8.2f}")
    print(f"peak RSS: main process {own:.0f} MiB, largest worker {children:.0f} MiB")


if __name__ == "__main__":
    main()
