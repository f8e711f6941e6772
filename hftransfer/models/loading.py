"""Load pretrained checkpoints as classifiers sized for the data, safely."""

from __future__ import annotations

import logging
from collections.abc import Container, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

from hftransfer.config.locations import looks_like_path, resolve_location
from hftransfer.config.recipe import ModelConfig
from hftransfer.data.labels import LabelMap
from hftransfer.errors import UserError
from hftransfer.models.pooling import apply_pooling
from hftransfer.models.remote_code import marked_base_config

logger = logging.getLogger("hftransfer")

NEW_WEIGHTS = "New weights, not in"
"""Opens the one line a training start logs about a base checkpoint's missing weights (its head)."""


class _Drop(logging.Filter):
    """Drops records whose message contains `marker`."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker

    def filter(self, record: logging.LogRecord) -> bool:
        return self.marker not in record.getMessage()


@contextmanager
def dropped_logs(target: logging.Logger, marker: str) -> Iterator[None]:
    """Within: `target` logs nothing containing `marker`. With transformers.modeling_utils and "LOAD REPORT",
    `from_pretrained` prints no red MISSING/UNEXPECTED table (errors still raise)."""
    drop = _Drop(marker)
    target.addFilter(drop)
    try:
        yield
    finally:
        target.removeFilter(drop)


class ModelError(UserError):
    """A checkpoint that cannot be used as configured."""


def checkpoint_config(location: str, revision: str | None = None, trust_remote_code: bool = False) -> Any:
    """The checkpoint's `config.json` (a Hub id, folder or `pkg:` path), or a ModelError naming it.

    A folder hftransfer marked for the standard client (`hftransfer.models.remote_code`) reads as its base
    architecture's config, without running its modeling file."""
    path = Path(location).expanduser()
    if looks_like_path(location) and not path.exists():
        raise ModelError(f"Cannot read checkpoint '{location}': folder {path} does not exist (in {Path.cwd()})")
    try:
        marked = marked_base_config(resolve_location(location), revision)
        if marked is not None:
            return marked.config
        return AutoConfig.from_pretrained(
            resolve_location(location), revision=revision, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]  # transformers' advice spans lines
        here = path.exists() or location.startswith("pkg:")
        folder = "" if here else f" There is no folder {Path.cwd() / path} either."
        raise ModelError(
            f"Cannot read checkpoint '{location}': {first.rstrip('.')}.{folder} Give a Hub id, a local model folder "
            "(config.json and safetensors weights) or a pkg:<package>/<path>."
        ) from err


def load_adapter_classifier(folder: str | Path, base: ModelConfig, labels: LabelMap, task: Any) -> nn.Module:
    """A peft adapter folder on its base classifier (`base`, sized for `labels` by `task`), unmerged."""
    from peft import PeftModel

    with dropped_logs(logger, NEW_WEIGHTS):  # the base lacks the head the adapter brings: no news
        return PeftModel.from_pretrained(task.load_model(base, labels), str(folder))


def saved_config(location: str, revision: str | None = None) -> dict[str, Any]:
    """`{"config": <base config>}` for a folder marked for the standard client, else {}: passed to an Auto class,
    it keeps transformers from asking for `trust_remote_code` (or prompting for it) on hftransfer's own folders."""
    marked = marked_base_config(resolve_location(location), revision)
    return {"config": marked.config} if marked is not None else {}


def refuse_adapter(marked: Any, location: str) -> None:
    """An adapter folder has no weights of its own to start from or read features of: say how to get them."""
    if marked is not None and marked.adapter:
        raise ModelError(
            f"{location} holds a LoRA adapter, not a whole model; merge it first: "
            f"hftransfer export {location} --merge --out <folder>, then use that folder."
        )


def load_tokenizer(config: ModelConfig) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(
        resolve_location(config.name_or_path),
        revision=config.revision,
        trust_remote_code=config.trust_remote_code,
        **saved_config(config.name_or_path, config.revision),
    )


def load_saved_tokenizer(folder: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer an output folder holds."""
    return AutoTokenizer.from_pretrained(folder, **saved_config(str(folder)))


def check_num_labels(config: ModelConfig, labels: LabelMap) -> None:
    if config.num_labels is not None and config.num_labels != labels.num_labels:
        raise ModelError(
            f"model.num_labels is {config.num_labels} but the training data has {labels.num_labels} classes "
            f"{list(labels.names)}. Remove model.num_labels or fix the data."
        )


def new_head_if_needed(model: PreTrainedModel, pretrained: Any, labels: LabelMap, setting: str) -> PreTrainedModel:
    """Re-initialise the classification head for source -> target transfer.

    A head of another size is always new (`ignore_mismatched_sizes`); a same-sized head trained on other
    classes (digits 0-4 -> digits 5-9) is new under `auto` too, since its outputs mean the old classes.
    """
    names = [str(v) for _, v in sorted((int(k), v) for k, v in (getattr(pretrained, "id2label", None) or {}).items())]
    placeholder = all(name == f"LABEL_{i}" for i, name in enumerate(names))
    other_classes = len(names) == labels.num_labels and not placeholder and tuple(names) != tuple(labels.names)
    if setting == "always" or (setting == "auto" and other_classes):
        from hftransfer.models.timm import is_timm_wrapper, timm_head_modules

        backbone = getattr(model, "base_model", None)
        # A timm model's classifier sits inside its backbone (`timm_model`).
        heads = timm_head_modules(model) if is_timm_wrapper(model) else model.children()
        for child in heads:
            if child is not backbone:
                for module in child.modules():
                    if hasattr(module, "reset_parameters"):
                        module.reset_parameters()
        logger.info("New classification head for classes %s (the checkpoint's were %s)", list(labels.names), names)
    return model


def load_classification_model(
    auto_class: type,
    location: str,
    *,
    revision: str | None = None,
    trust_remote_code: bool = False,
    labels: LabelMap | None = None,
) -> tuple[PreTrainedModel, list[str]]:
    """The one `from_pretrained` behind every classifier hftransfer loads (training, saved runs, teachers).

    `auto_class` is the modality's Auto class (`hftransfer.models.tasks.Task.auto_class`). Safetensors only, remote
    code only when asked, always single-label. With `labels` the head is sized and named for them (a head of
    another size is replaced instead of failing on its shape); without, the checkpoint's own head and names stay.
    Returns the model and the weights the checkpoint lacked (a missing head means it was never fine-tuned).
    A folder marked for the standard client loads as its base architecture, pooled as it says; transformers'
    load report is not printed (callers say what the missing weights mean).
    """
    sizing: dict[str, Any] = {}
    if labels is not None:
        sizing = {"num_labels": labels.num_labels, "id2label": labels.id2label, "label2id": labels.label2id}
    # Explicit, so one label never means regression and int labels never mean multi-label.
    sizing["problem_type"] = "single_label_classification"
    marked = marked_base_config(location, revision)
    refuse_adapter(marked, location)
    if marked is not None:  # a given config takes no config settings as keywords: set them on it
        for key, value in sizing.items():
            setattr(marked.config, key, value)
        sizing = {"config": marked.config}
    with dropped_logs(logging.getLogger("transformers.modeling_utils"), "LOAD REPORT"):
        model, info = auto_class.from_pretrained(
            location,
            revision=revision,
            trust_remote_code=trust_remote_code,
            use_safetensors=True,
            output_loading_info=True,
            ignore_mismatched_sizes=labels is not None,  # a head of another size is replaced
            **sizing,
        )
    # A head of another size is replaced: as new as a missing one.
    missing = sorted(info["missing_keys"]) + sorted(key for key, *_ in info.get("mismatched_keys") or ())
    if marked is not None and marked.pooling != "cls":
        apply_pooling(model, marked.pooling)  # its pooler was dropped when it was saved
        missing = [key for key in missing if ".pooler." not in f".{key}"]
    return model, missing


def load_pretrained_classifier(
    config: ModelConfig, labels: LabelMap, auto_class: type, known_types: Container[str], head: str, hint: str
) -> PreTrainedModel:
    """A classifier for training: head sized for `labels`, new when the checkpoint's classes differ.

    `known_types` are the model types `auto_class` has a `head` for; any other type stops here with `hint`
    (unless remote code is trusted, which brings its own classes).
    """
    check_num_labels(config, labels)
    location = resolve_location(config.name_or_path)
    pretrained = checkpoint_config(config.name_or_path, config.revision, config.trust_remote_code)
    if pretrained.model_type not in known_types and not config.trust_remote_code:
        raise ModelError(
            f"'{config.name_or_path}' is a '{pretrained.model_type}' model, which has no {head} head "
            f"in transformers. {hint}"
        )
    model, missing = load_classification_model(
        auto_class, location, revision=config.revision, trust_remote_code=config.trust_remote_code, labels=labels
    )
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        logger.info("%s %s (trained from scratch): %s", NEW_WEIGHTS, config.name_or_path, shown)
    return new_head_if_needed(model, pretrained, labels, config.new_head)


def load_classifier(config: ModelConfig, labels: LabelMap) -> PreTrainedModel:
    """A sequence classifier whose head matches `labels`, with the recipe's pooling."""
    model = load_pretrained_classifier(
        config,
        labels,
        AutoModelForSequenceClassification,
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
        "sequence-classification",
        "Pick an encoder checkpoint (BERT, RoBERTa, DistilBERT, ...).",
    )
    return apply_pooling(model, config.pooling)


def adopt_classifier(model: PreTrainedModel, config: ModelConfig, labels: LabelMap) -> PreTrainedModel:
    """A classifier the caller already loaded, checked and named for `labels`, with the recipe's pooling.

    Its head must already have one output per class: hftransfer cannot resize an in-memory head the way
    `from_pretrained` does, so a mismatch is an error that says how to get a right-sized model.
    """
    outputs = getattr(model.config, "num_labels", None)
    if outputs != labels.num_labels:
        raise ModelError(
            f"The given model has {outputs} outputs but the data has {labels.num_labels} classes "
            f"{list(labels.names)}. Pass its Hub id or folder instead (a new head is then sized for the data), "
            f"or load it with num_labels={labels.num_labels}."
        )
    model.config.id2label, model.config.label2id = labels.id2label, labels.label2id
    model.config.problem_type = "single_label_classification"  # never regression or multi-label by accident
    return apply_pooling(model, config.pooling)


def count_parameters(model: PreTrainedModel) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
