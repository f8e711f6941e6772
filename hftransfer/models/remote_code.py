"""Folders `transformers` alone must not load as a plain checkpoint: a custom `model_type` and a modeling file.

A mean-pooled classifier (`model.pooling=mean`) and an adapter folder (LoRA) do not predict correctly through
their base architecture's class: `transformers.pipeline` would run BERT's pooler freshly initialised, or label the
classes `LABEL_0...`. Such a folder's `config.json` therefore names a type of its own (`hftransfer-bert`) and an
`auto_map` into `modeling_hftransfer.py`, a small file written beside it (torch and transformers only) that
subclasses the base `*Config` and `*For...Classification`, pools as hftransfer does and, for an adapter, loads
the base weights and the adapter on them. Plain `pipeline(model=folder)` then stops with transformers' own
"trust_remote_code" message; with `trust_remote_code=True` it predicts as `hftransfer predict` does.

hftransfer itself never runs that file: `marked_base_config` turns such a config back into the base
architecture's, and the loaders pool the model with `hftransfer.models.pooling`, the same code the file copies.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path

import transformers
from transformers import PreTrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING, CONFIG_MAPPING_NAMES
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
    MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
)

from hftransfer.models import pooling

TYPE_PREFIX = "hftransfer-"
"""`model_type` of a marked folder: the prefix and the base architecture's type (`hftransfer-bert`)."""
MODELING_FILE = "modeling_hftransfer.py"
POOLING_KEY, ADAPTER_KEY, BASE_MODEL_KEY = "hftransfer_pooling", "hftransfer_adapter", "hftransfer_base_model"
"""config.json keys the modeling file reads: the pooling, whether the folder holds an adapter, and (in a pushed
adapter, whose adapter_config.json names the repo itself) the adapter's base model."""
_CLASSIFIERS = {
    "AutoModelForSequenceClassification": MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
    "AutoModelForImageClassification": MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
}


@dataclass(frozen=True)
class Marked:
    """A marked folder read back for hftransfer: the base architecture's config, and how the folder pools."""

    config: PreTrainedConfig
    pooling: str
    adapter: bool


def is_marked(config_dict: dict) -> bool:
    return str(config_dict.get("model_type", "")).startswith(TYPE_PREFIX)


def marked_base_config(location: str, revision: str | None = None) -> Marked | None:
    """The base config of a folder (or Hub repo) written by `mark_config`, else None (nothing read fails here)."""
    try:
        config_dict, _ = PreTrainedConfig.get_config_dict(location, revision=revision)
    except (OSError, ValueError):
        return None
    if not is_marked(config_dict):
        return None
    base = {k: v for k, v in config_dict.items() if k not in ("auto_map", POOLING_KEY, ADAPTER_KEY, BASE_MODEL_KEY)}
    base["model_type"] = base_type = config_dict["model_type"][len(TYPE_PREFIX) :]
    base["architectures"] = [a.removeprefix("Hftransfer") for a in config_dict.get("architectures") or []] or None
    config = CONFIG_MAPPING[base_type].from_dict(base)
    return Marked(config, config_dict.get(POOLING_KEY, "cls"), bool(config_dict.get(ADAPTER_KEY)))


def _class_names(model_type: str, auto_class: str) -> tuple[str, str] | None:
    """(config class, classifier class) of a base architecture, when `transformers` exports both."""
    config_name = CONFIG_MAPPING_NAMES.get(model_type)
    model_name = _CLASSIFIERS[auto_class].get(model_type)
    if not config_name or not isinstance(model_name, str):
        return None
    exported = hasattr(transformers, config_name) and hasattr(transformers, model_name)
    return (config_name, model_name) if exported else None


def mark_config(config_dict: dict, auto_class: str, pooling: str, adapter: bool) -> tuple[dict, str | None]:
    """`config_dict` (a base classifier's config.json) under its own model type, and the modeling file's source
    (None where the base classes are not part of `transformers`, but remote code of their own)."""
    base_type = config_dict["model_type"]
    names = _class_names(base_type, auto_class)
    marked = {**config_dict, "model_type": TYPE_PREFIX + base_type, POOLING_KEY: pooling, ADAPTER_KEY: adapter}
    marked.pop("auto_map", None)
    if names is None:
        return marked, None
    config_name, model_name = names
    module = Path(MODELING_FILE).stem
    marked["architectures"] = [f"Hftransfer{model_name}"]
    marked["auto_map"] = {
        "AutoConfig": f"{module}.Hftransfer{config_name}",
        auto_class: f"{module}.Hftransfer{model_name}",
    }
    return marked, modeling_source(base_type, config_name, model_name)


def write_marked_folder(folder: str | Path, config_dict: dict, auto_class: str, pooling: str, adapter: bool) -> bool:
    """Write the marked config.json and the modeling file; False (nothing written) where the base classes are not
    part of `transformers`: its own remote code then loads it, and only hftransfer pools it right."""
    folder = Path(folder)
    marked, source = mark_config(config_dict, auto_class, pooling, adapter)
    if source is None:
        return False
    (folder / "config.json").write_text(json.dumps(marked, indent=2, sort_keys=True) + "\n")
    (folder / MODELING_FILE).write_text(source)
    return True


def modeling_source(base_type: str, config_name: str, model_name: str) -> str:
    """`modeling_hftransfer.py` for one base architecture: the pooling code is hftransfer's own, copied."""
    copied = (pooling.masked_mean, pooling._mean_pool_hook, pooling.mean_pool)
    shared = "\n\n".join(inspect.getsource(f) for f in copied)
    return _TEMPLATE.format(
        version=_version(),
        base_type=base_type,
        config_name=config_name,
        model_name=model_name,
        pooling_key=POOLING_KEY,
        adapter_key=ADAPTER_KEY,
        base_key=BASE_MODEL_KEY,
        shared=shared,
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hftransfer")
    except PackageNotFoundError:  # pragma: no cover - a source checkout
        return "(source)"


_TEMPLATE = '''"""A `{base_type}` classifier as hftransfer {version} trained it; needs only torch and transformers.

`config.json` says how it pools (`{pooling_key}`: `mean` reads the attention-masked mean of the last hidden
state instead of the first token / pooler) and whether this folder holds a peft adapter (`{adapter_key}`: the
base model's weights load from `base_model_name_or_path` in adapter_config.json, then the adapter on them).

    from transformers import pipeline
    classifier = pipeline(model="<this folder or repo>", trust_remote_code=True)
"""

from __future__ import annotations

import dataclasses
import json

import torch
from torch import nn
from transformers import {config_name}, {model_name}


{shared}


class Hftransfer{config_name}({config_name}):
    model_type = "hftransfer-{base_type}"


class Hftransfer{model_name}({model_name}):
    config_class = Hftransfer{config_name}
    _keys_to_ignore_on_load_unexpected = [r"pooler\\."]  # an adapter's base checkpoint keeps its unused pooler

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        if getattr(config, "{pooling_key}", "cls") == "mean":
            mean_pool(self)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """An adapter folder has no weights of its own: load its base model's into this class, then the adapter."""
        config = kwargs.get("config")
        if not isinstance(config, cls.config_class):
            config = kwargs["config"] = cls.config_class.from_pretrained(pretrained_model_name_or_path)
        if not getattr(config, "{adapter_key}", False):
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        from transformers.utils import find_adapter_config_file

        base = getattr(config, "{base_key}", None)  # a pushed adapter names its repo as its own base
        if not base:
            adapter_file = find_adapter_config_file(pretrained_model_name_or_path, token=kwargs.get("token"))
            with open(adapter_file, encoding="utf-8") as f:
                base = json.load(f)["base_model_name_or_path"]
        adapter_kwargs = dict(kwargs.pop("adapter_kwargs", None) or {{}})
        adapter_kwargs["_adapter_model_path"] = pretrained_model_name_or_path
        kwargs.pop("revision", None)  # the adapter repository's revision, not the base model's
        kwargs["ignore_mismatched_sizes"] = True  # the base's own head (if any) is replaced by the adapter's
        return super().from_pretrained(base, *args, adapter_kwargs=adapter_kwargs, **kwargs)
'''
