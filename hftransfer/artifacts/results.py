"""`results.json`: what a finished run scored, how it trained and on what, built as one typed object."""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hftransfer.artifacts.layout import RESULTS_FILE, write_json


def hardware() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def versions() -> dict[str, str]:
    import torch
    import transformers

    import hftransfer

    return {"hftransfer": hftransfer.__version__, "torch": torch.__version__, "transformers": transformers.__version__}


@dataclass
class RunResults:
    """Every key of results.json, in the order it is written; optional ones are left out when empty."""

    strategy: str
    loop: str
    task: str
    model: str
    dataset: str | None
    labels: list[str]
    eval: dict
    """Validation metrics (`hftransfer.evaluation.metrics.classification_metrics`) of the saved weights, in fp32."""
    trainable_params: int
    total_params: int
    trainable_share: float
    checkpoint_size_bytes: int
    num_train_samples: int
    num_eval_samples: int
    epochs: float
    global_steps: int
    train_runtime_s: float
    train_samples_per_second: float
    epoch_train_s: list[float]
    eval_runtime_s: float
    train_losses: list[float]
    log_history: list[dict]
    """Per-step train loss and eval metrics (learning curves)."""
    precision: str
    """What training ran in."""
    hardware: str = field(default_factory=hardware)
    versions: dict[str, str] = field(default_factory=versions)
    finished_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    peak_gpu_memory_bytes: int | None = None
    test: dict | None = None
    """Test-split metrics of the same fp32 weights, when the recipe has a test split."""
    data: dict | None = None
    """Facts about the data (e.g. unreadable images skipped), when there are any."""
    strategy_results: dict | None = None
    """What the strategy adds (`Strategy.extra_results`), written under the strategy's name."""
    hub: dict | None = None
    """Where the run was pushed, when the recipe pushes it."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "strategy_results":
                if value:
                    out[self.strategy] = value
            elif value is not None or f.default is not None:
                out[f.name] = value
        return out

    def write(self, folder: str | Path) -> None:
        write_json(Path(folder) / RESULTS_FILE, self.to_json())


def read_results(folder: str | Path) -> dict[str, Any]:
    """A finished run's results.json as written (older runs may lack newer keys)."""
    return json.loads((Path(folder) / RESULTS_FILE).read_text())
