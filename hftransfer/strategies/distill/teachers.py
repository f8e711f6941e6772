"""Load a fine-tuned teacher and check, before any training, that it can teach this data.

A teacher is an hftransfer output folder, any classifier folder (`save_pretrained` of a text or image
classifier), a LoRA adapter folder (merged into its base model), a Hub id or a `pkg:` path. Its modality
comes from its checkpoint (`hftransfer.models.tasks.checkpoint_task`), so a ResNet teacher loads as an image
classifier with its image processor. It keeps its own label mapping, which must equal the data's:
distilling from a teacher whose class 0 means something else teaches noise.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn
from transformers import PreTrainedTokenizerBase

from hftransfer.artifacts.layout import LABELS_FILE
from hftransfer.artifacts.saved import is_adapter_folder, is_run_folder, load_run, read_labels
from hftransfer.config.locations import resolve_location
from hftransfer.config.recipe import ModelConfig
from hftransfer.data.labels import LabelMap
from hftransfer.errors import UserError
from hftransfer.models.loading import load_adapter_classifier
from hftransfer.models.tasks import Task, checkpoint_task, get_task

if TYPE_CHECKING:
    from hftransfer.config.recipe import RunConfig
    from hftransfer.data import PreparedData

logger = logging.getLogger("hftransfer")

class TeacherError(UserError):
    """A teacher that cannot teach this run; the message says why and what to change."""


@dataclass
class Teacher:
    model: nn.Module
    tokenizer: Any
    """The teacher's tokenizer, or image processor for an image teacher; None when its folder has none."""
    labels: LabelMap
    location: str
    size_bytes: int
    """Weights on disk (safetensors) for a local full-model folder, otherwise the weights' bytes in memory."""


def state_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def weights_on_disk(folder: str | Path) -> int:
    """Size of the model weights directly in `folder` (not its checkpoints/ subfolder)."""
    return sum(p.stat().st_size for p in Path(folder).glob("*.safetensors"))


def _load_processor(task: Task, spec: str, revision: str | None) -> Any:
    """Tokenizer or image processor, or None: the checks before training then say what is missing."""
    try:
        return task.load_processor(ModelConfig(name_or_path=spec, revision=revision))
    except (OSError, ValueError, TypeError, UserError):
        return None


def _load_run(folder: Path, spec: str) -> Teacher:
    """An hftransfer output folder: pooling and adapter as the run saved them (an adapter merged)."""
    run = load_run(folder)
    adapter = is_adapter_folder(folder)
    model = run.model.merge_and_unload() if adapter else run.model
    model.eval().requires_grad_(False)
    return Teacher(model, run.tokenizer, run.labels, spec, state_bytes(model) if adapter else weights_on_disk(folder))


def _load_adapter(folder: Path, labels: LabelMap | None) -> tuple[nn.Module, Task]:
    from peft import PeftConfig

    if labels is None:
        raise TeacherError(
            f"Teacher adapter folder {folder} has no {LABELS_FILE}, so its classes are unknown. "
            "Use an hftransfer output folder, or merge the adapter and save the full model."
        )
    base = ModelConfig(name_or_path=PeftConfig.from_pretrained(str(folder)).base_model_name_or_path)
    task = get_task(checkpoint_task(base.name_or_path))
    return load_adapter_classifier(folder, base, labels, task).merge_and_unload(), task


def _load_classifier(spec: str, location: str, revision: str | None) -> tuple[nn.Module, Task]:
    """Any classifier checkpoint, refused when its head was never trained."""
    task = get_task(checkpoint_task(spec, revision))
    model, missing = task.load_model_as_saved(location, revision)
    fresh = [k for k in missing if "classifier" in k or "score" in k or "head" in k]
    if fresh:
        raise TeacherError(
            f"Teacher '{spec}' has no trained classification head (missing {sorted(fresh)[:3]}): it is a base "
            "checkpoint, not a fine-tuned classifier. Fine-tune it first (e.g. `hftransfer train "
            "recipes/text-sst2-minilm-full.yaml`) and set strategy.distill.teacher to that output folder."
        )
    return model, task


def load_teacher(spec: str, revision: str | None = None) -> Teacher:
    """Load the teacher frozen in eval mode; a checkpoint without a trained head is refused."""
    location = resolve_location(spec)
    folder = Path(location)
    if folder.is_dir() and is_run_folder(folder):
        return _load_run(folder, spec)
    labels = read_labels(folder) if folder.is_dir() else None
    if folder.is_dir() and is_adapter_folder(folder):
        model, task = _load_adapter(folder, labels)
        size = state_bytes(model)
    else:
        model, task = _load_classifier(spec, location, revision)
        size = (weights_on_disk(folder) if folder.is_dir() else 0) or state_bytes(model)
    if labels is None:
        labels = LabelMap.from_model_config(model.config.id2label)
    model.eval().requires_grad_(False)
    return Teacher(model, _load_processor(task, spec, revision), labels, spec, size)


def _generic_names(names: tuple[str, ...]) -> bool:
    return all(name == f"LABEL_{i}" for i, name in enumerate(names))


def check_label_mapping(teacher: LabelMap, data: LabelMap, teacher_name: str) -> None:
    """Same classes in the same id order; transformers' placeholder names (LABEL_0, ...) only need the count."""
    if teacher.num_labels != data.num_labels:
        raise TeacherError(
            f"Teacher '{teacher_name}' predicts {teacher.num_labels} classes {list(teacher.names)} but the data has "
            f"{data.num_labels} {list(data.names)}. Use a teacher fine-tuned on this task."
        )
    if tuple(teacher.names) == tuple(data.names):
        return
    if _generic_names(teacher.names):
        logger.warning(
            "Teacher '%s' has placeholder class names %s; assuming they mean %s in that order "
            "(the teacher's validation score below confirms or refutes it).",
            teacher_name,
            list(teacher.names),
            list(data.names),
        )
        return
    raise TeacherError(
        f"Teacher '{teacher_name}' labels its classes {list(teacher.names)} (id order) but the data's are "
        f"{list(data.names)}. Distilling would teach the wrong classes. Set data.label_names to the teacher's order, "
        "or use a teacher trained with this label mapping."
    )


def encode_for_teacher(data: PreparedData, tokenizer: PreTrainedTokenizerBase, config: RunConfig) -> PreparedData:
    """The train and validation rows of `data` encoded with the teacher's own tokenizer (and its max length).

    They start from the raw rows `data` was prepared from, so row i here is row i of the student's encoding;
    row counts and labels are checked to be sure.
    """
    task = get_task(config.task)
    raw = data.raw
    if raw is None:
        raise TeacherError(
            "The teacher needs the data encoded with its own tokenizer, but the prepared data kept no raw rows. "
            "Prepare it with the task's prepare_data, or use a student with the teacher's tokenizer."
        )
    encoded = {}
    for split in ("train", "validation"):
        rows = task.encode_split(raw[split], data.labels, config.data, f"{split} (teacher)", tokenizer)
        student = getattr(data, split)
        if len(rows) != len(student) or not np.array_equal(np.asarray(rows["labels"]), np.asarray(student["labels"])):
            raise TeacherError(
                f"The teacher's encoding of the {split} split ({len(rows)} rows) does not line up row by row with "
                f"the student's ({len(student)} rows): some rows could not be encoded for the teacher. Fix those rows, "
                "or use a student with the teacher's tokenizer."
            )
        encoded[split] = rows
    return replace(data, train=encoded["train"], validation=encoded["validation"], test=None)


def check_teacher_accuracy(references: np.ndarray, logits: np.ndarray, name: str) -> dict:
    """Stop when the teacher is no better than always predicting the majority class.

    The bar is chance plus two standard errors of accuracy at that rate (at least 2 points),
    so a small validation split does not pass a lucky random head.
    """
    references = np.asarray(references)
    predictions = np.asarray(logits).argmax(axis=-1)
    accuracy = float((predictions == references).mean())
    counts = np.bincount(references, minlength=logits.shape[1])
    chance = float(max(counts.max() / len(references), 1.0 / logits.shape[1]))
    margin = max(0.02, 2 * math.sqrt(chance * (1 - chance) / len(references)))
    if accuracy < chance + margin:
        hint = (
            " It is below chance, which suggests its classes are in another order than the data's."
            if accuracy < chance - margin
            else " A freshly initialized classification head (a base checkpoint, not a fine-tuned one) does this."
        )
        raise TeacherError(
            f"Teacher '{name}' scores {accuracy:.3f} accuracy on the validation split, at chance level "
            f"({chance:.3f} = always predicting the most frequent class; needs at least {chance + margin:.3f})."
            f"{hint} A student cannot learn from it: fine-tune the teacher first, or set "
            "strategy.distill.check_teacher=false to train anyway."
        )
    return {"accuracy": accuracy, "chance_accuracy": chance}
