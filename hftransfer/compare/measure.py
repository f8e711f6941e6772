"""What results.json does not record: a run's peak memory (its own process) and inference latency of all runs
timed side by side."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

LATENCY_BATCHES = ((1, 20), (64, 5))
"""(batch size, batches timed): as the distill report, so the numbers are comparable."""
_PROCESSOR_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
                    "preprocessor_config.json")  # fmt: skip


def train_in_subprocess(config_path: Path, log_path: Path) -> tuple[int, int | None]:
    """Run `hftransfer train config_path` in a fresh Python; returns (exit code, its peak RSS in bytes).

    A fresh process per run makes the peak resident memory that run's own (Python, libraries, data, model,
    optimizer), not the maximum over everything trained before it. Its stderr (progress) is shown and logged.
    """
    command = [sys.executable, "-m", "hftransfer", "train", str(config_path)]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        for line in proc.stderr:
            sys.stderr.write(line)
            log.write(line)
        if not hasattr(os, "wait4"):  # Windows: no per-child resource usage
            return proc.wait(), None
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return proc.returncode, usage.ru_maxrss * scale


def measure_latency(folders: dict[str, Path]) -> dict[str, dict[str, float]]:
    """Median ms per forward pass of each finished run on its validation rows, at batch 1 and 64.

    Runs whose inputs encode identically (same tokenizer/processor files) are timed interleaved batch by batch
    (`latency.compare_latency`), so load changes on a shared machine hit them alike. Models are timed as
    saved: a LoRA run includes its unmerged adapter (`hftransfer export --merge` removes that cost).
    """
    import torch

    from hftransfer.artifacts.saved import load_run
    from hftransfer.evaluation.latency import compare_latency, sample_batches
    from hftransfer.evaluation.scoring import encode_run_split
    from hftransfer.models.tasks import get_task
    from hftransfer.training.runtime import autocast_dtype, resolve_precision

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    runs = {name: load_run(folder) for name, folder in folders.items()}
    groups: dict[str, list[str]] = {}
    for name, run in runs.items():
        groups.setdefault(_input_key(run), []).append(name)
    timings: dict[str, dict[str, float]] = {name: {} for name in runs}
    for members in groups.values():
        first = runs[members[0]]
        rows = encode_run_split(first, "validation")
        collator = get_task(first.config.task).collator(first.tokenizer, first.config.data)
        dtype = autocast_dtype(resolve_precision(first.config.train.precision))
        models = {name: runs[name].model.to(device) for name in members}
        for size, count in LATENCY_BATCHES:
            batches = sample_batches(rows, collator, size, count)
            for name, ms in compare_latency(models, batches, device, autocast_dtype=dtype).items():
                timings[name][str(size)] = ms
    return timings


def _input_key(run) -> str:
    """Runs with the same data settings and the same saved tokenizer/processor files get the same inputs."""
    from hftransfer.config.schema import to_dict

    digest = hashlib.sha256(repr(to_dict(run.config.data)).encode())
    for name in _PROCESSOR_FILES:
        path = run.folder / name
        content = path.read_bytes() if path.is_file() else b"-"
        if name == "tokenizer.json" and path.is_file():  # drop the padding/truncation state kept from its last call
            state = json.loads(content)
            content = json.dumps({k: v for k, v in state.items() if k not in ("padding", "truncation")}).encode()
        digest.update(name.encode() + content)
    return digest.hexdigest()
