"""Full fine-tuning: every parameter trains with the task loss."""

from __future__ import annotations

from dataclasses import dataclass

from hftransfer.strategies.base import Strategy


@dataclass
class FullConfig:
    """Full fine-tuning has no knobs beyond the optimizer settings in `train`."""


class FullFineTuning(Strategy):
    name = "full"

    def prepare(self, model):
        for param in model.parameters():
            param.requires_grad_(True)
        return model
