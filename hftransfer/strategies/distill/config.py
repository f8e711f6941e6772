"""Settings of knowledge distillation (`strategy.distill`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from hftransfer.config.schema import ConfigError


@dataclass
class DistillConfig:
    teacher: str | None = None
    """The fine-tuned teacher: an hftransfer output folder, any classifier folder, a LoRA adapter folder, a Hub id."""
    teacher_revision: str | None = None
    student_layers: list[int] | None = None
    """Keep only these blocks (0-based) of model.name_or_path; set model.name_or_path to the teacher to cut the
    student from it, e.g. [0, 2, 4] of a 6-block teacher. Leave empty to train model.name_or_path as it is."""
    temperature: float = 2.0
    alpha: float = 0.5
    """Weight of the distillation term; 1 - alpha weighs cross-entropy on the true labels."""
    cache_teacher_logits: bool = True
    """Compute the teacher's train logits once, before training (epochs then cost only the student's passes).
    Set false when inputs change between epochs (augmentation). Hidden-state losses always run the teacher live.
    Required when the teacher's tokenizer differs from the student's (its logits come from its own encoding)."""
    hidden_loss: Literal["none", "mse", "cosine"] = "none"
    hidden_weight: float = 1.0
    hidden_layers: list[list[int]] | None = None
    """[[student, teacher], ...] hidden-state indices (0 = embeddings, i = output of block i). Default: each
    student block to the teacher block it was cut from (student_layers [0, 2, 4]: [[1, 1], [2, 3], [3, 5]]), else
    spread evenly, last to last."""
    mask_augment: float = 0.0
    """Share of each training row's real tokens replaced by the mask token, drawn anew every step; teacher and
    student read the same corrupted row (the teacher runs live), so the student learns the teacher's outputs on
    inputs the labels alone do not cover (TinyBERT-style augmentation). 0 = off. Text, shared tokenizer only."""
    check_teacher: bool = True
    """Score the teacher on the validation split first and stop the run when it is at chance level."""
    measure_latency: bool = True
    """Time teacher and student inference (batch 1 and 64) after training, for the report."""

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ConfigError(f"strategy.distill.temperature must be positive, got {self.temperature}.")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"strategy.distill.alpha weighs the distillation term, in [0, 1]; got {self.alpha}.")
        if self.hidden_weight < 0:
            raise ConfigError(f"strategy.distill.hidden_weight must be >= 0, got {self.hidden_weight}.")
        if not 0.0 <= self.mask_augment < 1.0:
            raise ConfigError(f"strategy.distill.mask_augment is a share of tokens in [0, 1), got {self.mask_augment}.")
        for pair in self.hidden_layers or []:
            if len(pair) != 2 or min(pair) < 0:
                raise ConfigError(f"strategy.distill.hidden_layers takes [student, teacher] index pairs, got {pair}.")

    def check_selected(self) -> None:
        """Checks for a recipe that picks distillation (other strategies ignore this section)."""
        self.require_teacher()

    def require_teacher(self) -> None:
        if not self.teacher:
            raise ConfigError(
                "strategy.distill.teacher is empty: point it at a fine-tuned classifier (e.g. the output folder of "
                "`hftransfer train recipes/text-sst2-minilm-full.yaml`)."
            )
