"""What every loop returns."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn


@dataclass
class LoopResult:
    model: nn.Module
    train_runtime_s: float
    train_samples: int
    global_steps: int
    losses: list[float] = field(default_factory=list)
    log_history: list[dict] = field(default_factory=list)
    epoch_train_s: list[float] = field(default_factory=list)
    """Wall time of each epoch's training steps (an end-of-epoch evaluation excluded): with cached features
    or teacher logits, epochs after the first are the ones that show the steady-state speed."""

    @property
    def train_samples_per_second(self) -> float:
        return self.train_samples / self.train_runtime_s if self.train_runtime_s > 0 else 0.0
