"""What the standard client makes of an output folder: `transformers.pipeline(model=folder)` and the Hub widget.

People who never install hftransfer load a pushed folder with `pipeline("text-classification", model=...)`. A
folder either predicts there exactly as `hftransfer predict` does, or cannot be loaded there by accident:

- a whole model with the checkpoint's own pooling (`model.pooling=cls`) is a plain `transformers` model;
- a mean-pooled model, or an adapter (LoRA, whose folder holds no base weights and whose base names no classes),
  gets a `config.json` of its own model type and `modeling_hftransfer.py` (`hftransfer.models.remote_code`):
  plain `pipeline` refuses with transformers' "trust_remote_code" message, `trust_remote_code=True` predicts
  as hftransfer does, and the card turns the Hub widget off (it never runs custom code).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hftransfer.artifacts.layout import ADAPTER_CONFIG_FILE, LABELS_FILE, RECIPE_FILE
from hftransfer.artifacts.saved import is_adapter_folder, read_labels, read_recipe
from hftransfer.config.recipe import load_config
from hftransfer.models.remote_code import BASE_MODEL_KEY, MODELING_FILE, is_marked, write_marked_folder

AS_IS = "as-is"
REMOTE_CODE = "remote-code"
HFTRANSFER_ONLY = "hftransfer-only"
CLIENT_LINES = {
    AS_IS: "loads in transformers.pipeline as is",
    REMOTE_CODE: "needs trust_remote_code=True (custom model type, modeling_hftransfer.py); the Hub widget is off",
    HFTRANSFER_ONLY: "does not predict right in transformers.pipeline; load it with hftransfer (the Hub widget is off)",
}
"""What `push` says of a folder, per kind."""


def client_kind(folder: str | Path) -> str:
    """How `transformers.pipeline` reads `folder`: AS_IS, REMOTE_CODE or HFTRANSFER_ONLY (see CLIENT_LINES)."""
    folder = Path(folder)
    config_file = folder / "config.json"
    marked = config_file.is_file() and is_marked(json.loads(config_file.read_text()))
    if marked and (folder / MODELING_FILE).is_file():
        return REMOTE_CODE
    # Unmarked: written before folders were marked (`mark_output_folder` fixes that), or on a base whose classes
    # are remote code of its own. An adapter's base alone names no classes; the base's own code does not mean-pool.
    if is_adapter_folder(folder):
        return HFTRANSFER_ONLY
    if (folder / RECIPE_FILE).is_file() and load_config(folder / RECIPE_FILE).model.pooling != "cls":
        return HFTRANSFER_ONLY
    return AS_IS


def mark_output_folder(folder: str | Path, model_config: Any = None) -> str:
    """Make a finished output folder safe for the standard client (see the module docstring); returns its kind.

    Reads the folder's recipe and labels; a whole model's `config.json` is rewritten in place, an adapter gets one
    from `model_config` (the trained classifier's, in memory) or else its base checkpoint's config and the run's
    classes. A folder already marked is left as it is.
    """
    from hftransfer.models.loading import checkpoint_config
    from hftransfer.models.tasks import get_task

    folder = Path(folder)
    config_file = folder / "config.json"
    if config_file.is_file() and is_marked(json.loads(config_file.read_text())):
        return client_kind(folder)
    recipe = read_recipe(folder)
    adapter = is_adapter_folder(folder)
    if not adapter and recipe.model.pooling == "cls":
        return AS_IS
    if adapter and model_config is not None:
        config = model_config.to_dict()
    elif adapter:
        model = recipe.model
        base = checkpoint_config(model.name_or_path, model.revision, model.trust_remote_code)
        labels = read_labels(folder)
        if labels is None:
            raise FileNotFoundError(f"{folder} holds an adapter but no {LABELS_FILE} to name its classes.")
        base.id2label, base.label2id = labels.id2label, labels.label2id
        base.problem_type = "single_label_classification"
        config = base.to_dict()
    else:
        config = json.loads(config_file.read_text())
    auto_class = get_task(recipe.task).auto_class.__name__
    remote = write_marked_folder(folder, config, auto_class, recipe.model.pooling, adapter)
    return REMOTE_CODE if remote else HFTRANSFER_ONLY


def point_adapter_at_repo(staging: Path, repo_id: str) -> None:
    """In a staged adapter upload, name the repo itself as the adapter's base (the true base moves to config.json).

    On the Hub, `pipeline(model=repo)` reads an adapter's `base_model_name_or_path` and loads that plain base
    model (only a local folder with a config.json is read as itself): with a standard base, the adapter would load
    with the base's class names and, mean-pooled, predict wrongly. Named as its own base, the repo's marked
    config.json applies there too: refused without `trust_remote_code=True`, right with it.
    """
    config_file, adapter_file = staging / "config.json", staging / ADAPTER_CONFIG_FILE
    if client_kind(staging) != REMOTE_CODE or not adapter_file.is_file():
        return
    config, adapter = json.loads(config_file.read_text()), json.loads(adapter_file.read_text())
    config[BASE_MODEL_KEY] = adapter["base_model_name_or_path"]
    adapter["base_model_name_or_path"] = repo_id
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    adapter_file.write_text(json.dumps(adapter, indent=2) + "\n")


def repo_adapter_base(folder: str | Path) -> str | None:
    """The true base of an adapter staged by `point_adapter_at_repo` (its config.json keeps it), else None."""
    config_file = Path(folder) / "config.json"
    return json.loads(config_file.read_text()).get(BASE_MODEL_KEY) if config_file.is_file() else None
