"""Where a checkpoint is and how much it reads, checked before anything loads.

`check_checkpoint_location` turns what transformers reports as a raw OSError/ValueError (a missing local folder seen
as a malformed Hub id, a folder that is no model, a Hub id missing from the cache in offline mode) into one line
naming the recipe key and the fix. `fit_max_length` caps `data.max_length` at the positions the model has.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

from hftransfer.config.locations import PACKAGE_PREFIX, looks_like_path, resolve_location
from hftransfer.errors import UserError

logger = logging.getLogger("hftransfer")

MODEL_FILES = ("config.json", "adapter_config.json")
"""A folder holding one of these is a checkpoint (a model, an hftransfer output folder, or a peft adapter)."""
SANE_MAX_LENGTH = 1_000_000
"""Tokenizers without a known limit report `model_max_length` = 1e30 (VERY_LARGE_INTEGER); above this it means none."""

OFFSET_POSITIONS = (
    "roberta",
    "xlm-roberta",
    "camembert",
    "longformer",
    "data2vec-text",
    "xmod",
    "roberta-prelayernorm",
)
"""Model types whose position ids start at pad_token_id + 1 (RoBERTa's 514 positions read 512 tokens)."""


class LocationError(UserError):
    """A checkpoint location that names nothing loadable."""


def offline_mode() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def check_checkpoint_location(spec: str, key: str, revision: str | None = None) -> None:
    """Fail in one line when `spec` (the value of recipe key `key`) cannot name a checkpoint."""
    if spec.startswith(PACKAGE_PREFIX):
        try:
            resolve_location(spec)
        except FileNotFoundError as err:
            raise LocationError(f"{key}: {err}") from err
        return
    path = Path(os.path.expanduser(spec))
    if path.is_dir():
        if not any((path / name).is_file() for name in MODEL_FILES):
            raise LocationError(
                f"{key}: {spec} is a folder but not a model (no config.json); give the folder that "
                "save_pretrained wrote, or an hftransfer output folder."
            )
        return
    if path.exists():
        raise LocationError(f"{key}: {spec} is a file; give the model's folder or a Hub id.")
    if looks_like_path(spec):
        raise LocationError(f"{key}: folder {spec} does not exist; check the path (relative to {Path.cwd()}).")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(spec)
    except HFValidationError as err:
        raise LocationError(
            f"{key}: '{spec}' is neither an existing folder nor a valid Hub id (user/name); check it."
        ) from err
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(spec, "config.json", revision=revision), str):
        return
    if Path(spec).parts[0] != spec and Path(Path(spec).parts[0]).is_dir():
        # `outputs/run` while ./outputs exists: a folder is meant (not yet trained, or another working directory).
        raise LocationError(
            f"{key}: folder {spec} does not exist (in {Path.cwd()}); check the path, or train that run first."
        )
    if offline_mode():
        raise LocationError(
            f"{key}: '{spec}' is no folder here ({Path.cwd() / spec} does not exist) and not in the local Hugging Face "
            "cache, and offline mode is on (HF_HUB_OFFLINE=1); check the path or id, or download it once online."
        )


def check_run_locations(config: Any) -> None:
    """Every checkpoint a recipe names (the model; a strategy's teacher; a checkpoint to resume from), before any
    output folder is touched."""
    check_checkpoint_location(config.model.name_or_path, "model.name_or_path", config.model.revision)
    resume = config.train.resume_from
    if resume not in (None, "latest") and not Path(resume).is_dir():
        raise LocationError(
            f"train.resume_from: folder {resume} does not exist; give a checkpoint-N folder of an interrupted run, "
            "or `latest`."
        )
    selected = config.strategy.selected
    teacher = getattr(selected, "teacher", None)
    if isinstance(teacher, str) and teacher:
        key = f"strategy.{config.strategy.name}.teacher"
        check_checkpoint_location(teacher, key, getattr(selected, "teacher_revision", None))


def model_positions(config: Any) -> int | None:
    """Tokens a checkpoint's position embeddings cover (`max_position_embeddings` or its family's name for it)."""
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            if getattr(config, "model_type", "") in OFFSET_POSITIONS:  # positions start after the padding index
                value -= (getattr(config, "pad_token_id", None) or 0) + 1
            return value
    return None


def fit_max_length(run_config: Any, tokenizer: Any, model_config: Any = None) -> Any:
    """The run config with `data.max_length` at most what tokenizer and model read (one warning when capped).

    Positions beyond `max_position_embeddings` crash mid-training (an index error in the embeddings), so the cap is
    min(data.max_length, tokenizer.model_max_length when it is a real limit, the model's positions).
    """
    wanted = run_config.data.max_length
    limits = []
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < SANE_MAX_LENGTH:
        limits.append((tokenizer_limit, "the tokenizer's model_max_length"))
    if tokenizer_limit is None:
        return run_config  # not a tokenizer (an image processor): nothing to cap
    from hftransfer.models.loading import checkpoint_config

    model = run_config.model
    if model_config is None:  # an in-memory model brings its own config
        model_config = checkpoint_config(model.name_or_path, model.revision, model.trust_remote_code)
    positions = model_positions(model_config)
    if positions is not None:
        limits.append((positions, "the model's max_position_embeddings"))
    if not limits:
        return run_config
    cap, why = min(limits)
    if wanted <= cap:
        return run_config
    logger.warning("data.max_length=%d is more than %s (%d); using data.max_length=%d.", wanted, why, cap, cap)
    return dataclasses.replace(run_config, data=dataclasses.replace(run_config.data, max_length=cap))
