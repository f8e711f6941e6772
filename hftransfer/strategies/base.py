"""The strategy contract both training loops keep, and the hooks reports, cards and compare read.

A strategy decides what trains (`prepare`, and `trainable_modules` for weights outside the model), what is
minimised (`loss`), how the optimizer groups parameters (`parameter_groups`), what happens as training
advances (`on_step`), what gets written (`save`) and how it reads back (`load_saved`). The loop tells it where
it runs (`bind(Runtime)`: device, processes, precision). Loops, cards and compare never name a strategy: what
they need of one comes from the class attributes and class methods below.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from hftransfer.config.recipe import RunConfig
    from hftransfer.data import LabelMap, PreparedData
    from hftransfer.models.tasks import Task

NO_DECAY_MARKERS = ("bias", "layernorm", "layer_norm", "norm.weight", "LayerNorm")

_IN_STRATEGY_STEP = contextvars.ContextVar("hftransfer_in_strategy_step", default=False)


@contextmanager
def strategy_step() -> Iterator[None]:
    """Marks a training forward pass as one a loop runs through the strategy (`loss`, then `on_step`)."""
    token = _IN_STRATEGY_STEP.set(True)
    try:
        yield
    finally:
        _IN_STRATEGY_STEP.reset(token)


def _in_strategy_step(loss: Any) -> Any:
    @functools.wraps(loss)
    def marked(self: Any, model: nn.Module, batch: dict) -> Any:
        with strategy_step():
            return loss(self, model, batch)

    return marked


def require_strategy_step(model: nn.Module, strategy: str, why: str) -> None:
    """Make `model` refuse a training forward pass outside `strategy_step`: a plain `Trainer` (or a hand-written
    loop) would silently train something else than the strategy. Evaluation (eval mode) is unaffected."""

    def check(module: nn.Module, args: Any) -> None:
        if module.training and not _IN_STRATEGY_STEP.get():
            from hftransfer.errors import UserError

            raise UserError(
                f"This model was prepared by the {strategy} strategy, {why}; a plain Trainer or loop would train "
                "something else. Train it with hftransfer.StrategyTrainer(model, args, ..., strategy=strategy), or "
                "in your own loop take strategy.loss(model, batch) and call strategy.on_step(...) every step."
            )

    model.register_forward_pre_hook(check)


@dataclass(frozen=True)
class Runtime:
    """Where a run computes, as the loop sets it up; a strategy reads this instead of guessing."""

    device: torch.device | None = None
    """None: wherever the model's parameters are (research code that moves the model itself)."""
    world_size: int = 1
    """Processes training together (DDP, FSDP); 1 for a single process."""
    precision: str = "fp32"
    """`fp32`, `bf16` or `fp16` autocast; weights stay fp32."""
    label_smoothing: float = 0.0
    """Label smoothing of the training cross-entropy (`train.trainer_args.label_smoothing_factor`), applied in
    `Strategy.loss`, so both loops smooth alike; evaluation reports the plain task loss."""

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def device_of(self, model: nn.Module) -> torch.device:
        return self.device if self.device is not None else next(model.parameters()).device


@dataclass(frozen=True)
class ComparePlan:
    """What a strategy adds to its run when `hftransfer compare` trains several strategies on one recipe."""

    overrides: tuple[str, ...] = ()
    """`key=value` settings of this run (after the recipe and the user's own overrides for every run)."""
    depends_on: tuple[str, ...] = ()
    """Strategies whose finished runs this one reads; they train first, and retraining them retrains this one."""
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class CardTable:
    """A small table a strategy adds to the model card (the card renders it)."""

    caption: str
    header: list[str]
    rows: list[list[Any]]


class Strategy:
    name: ClassVar[str]
    summary: ClassVar[str] = ""
    """How the model was trained, as the model card says it: `... fine-tuned ... with <summary>`."""
    saves_adapter: ClassVar[bool] = False
    """On-disk format of the saved weights: a whole model folder (False) or a peft adapter over a base (True)."""
    compare_defaults: ClassVar[tuple[str, ...]] = ()
    """`key=value` settings compare gives this strategy's run unless the recipe is already this strategy's."""

    def __init__(self, config: Any = None) -> None:
        self.config = config
        self.runtime = Runtime()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "loss" in cls.__dict__:  # a training forward inside the strategy's own loss is what it asks for
            cls.loss = _in_strategy_step(cls.__dict__["loss"])

    def bind(self, runtime: Runtime) -> None:
        """Where training runs; the loop's choice, set before `prepare`."""
        self.runtime = runtime

    # --- training --------------------------------------------------------------------------------------------

    def prepare(self, model: nn.Module) -> nn.Module:
        """Return the model to train (possibly wrapped), with `requires_grad` set as the strategy wants."""
        return model

    def prepare_data(self, model: nn.Module, data: PreparedData, processor: Any, config: RunConfig) -> PreparedData:
        """Checks and extra columns that need the data (distillation caches teacher logits here). Default: none."""
        return data

    def trainable_modules(self) -> dict[str, nn.Module]:
        """Modules outside the model that train with it (e.g. a projection between hidden widths). The loops
        prepare, synchronise, clip, checkpoint and restore them together with the model; they are not saved."""
        return {}

    @_in_strategy_step
    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean loss over the batch, logits). Labels are popped so the model never computes its own loss."""
        logits = self.logits(model, {k: v for k, v in batch.items() if k != "labels"})
        return F.cross_entropy(logits.float(), batch["labels"], label_smoothing=self.runtime.label_smoothing), logits

    def logits(self, model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The model's logits for a batch of inputs, in training and in the loops' evaluation (a frozen part's
        cached outputs may stand in for running it)."""
        return model(**inputs).logits

    def parameter_groups(self, model: nn.Module, learning_rate: float, weight_decay: float) -> list[dict]:
        """AdamW groups: trainable weights decay, biases and norms do not."""
        decay, no_decay = [], []
        for name, param in model.named_parameters():
            if param.requires_grad:
                (no_decay if any(m in name for m in NO_DECAY_MARKERS) else decay).append(param)
        groups = [
            {"params": decay, "weight_decay": weight_decay, "lr": learning_rate},
            {"params": no_decay, "weight_decay": 0.0, "lr": learning_rate},
        ]
        return [g for g in groups if g["params"]]

    def on_step(self, model: nn.Module, step: int, steps_per_epoch: int) -> None:
        """Called before every optimizer step (gradual unfreezing hooks in here)."""

    # --- the saved run ---------------------------------------------------------------------------------------

    def save(self, model: nn.Module, output_dir: str | Path) -> None:
        model.save_pretrained(output_dir, safe_serialization=True)

    @classmethod
    def load_saved(cls, folder: Path, config: RunConfig, labels: LabelMap, task: Task) -> nn.Module:
        """The trained model from an output folder this strategy saved (`model.pooling` re-applied)."""
        return task.load_saved_model(folder, config.model)

    def extra_results(self, model: nn.Module, metrics: dict, output_dir: Path) -> dict:
        """Strategy-specific entries for results.json (stored under the strategy's name), after `save`."""
        return {}

    # --- what reports, cards and compare say about a run -----------------------------------------------------

    @classmethod
    def report_lines(cls, results: dict) -> list[str]:
        """Console report lines for the entries `extra_results` wrote."""
        return []

    @classmethod
    def card_table(cls, results: dict) -> CardTable | None:
        """A table for the model card's Training section; None: the card lists the scalars `extra_results` wrote."""
        return None

    @classmethod
    def card_limitations(cls, results: dict) -> list[str]:
        """Extra bullet points for the model card's Limitations."""
        return []

    @classmethod
    def compare_plan(
        cls, recipe: RunConfig, own_overrides: list[str], strategies: list[str], runs_dir: Path
    ) -> ComparePlan:
        """Settings, dependencies and notes of this strategy's run in a comparison (`recipe`: the recipe with
        the user's overrides; `own_overrides`: those given for this strategy alone)."""
        return ComparePlan()

    @classmethod
    def compare_notes(cls, results: dict) -> list[str]:
        """What this run's row in a comparison leaves out (e.g. a teacher's training time)."""
        return []
