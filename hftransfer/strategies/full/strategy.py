"""Full fine-tuning: every parameter trains with the task loss."""

from __future__ import annotations

from hftransfer.strategies.base import Strategy
from hftransfer.strategies.full.config import FullConfig


class FullFineTuning(Strategy):
    name = "full"
    summary = "full fine-tuning (every weight of the base model was updated)"

    def __init__(self, config: FullConfig | None = None) -> None:
        super().__init__(config or FullConfig())

    def prepare(self, model):
        for param in model.parameters():
            param.requires_grad_(True)
        return model
