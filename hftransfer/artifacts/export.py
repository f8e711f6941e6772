"""`hftransfer export`: write a run as a plain Transformers model folder (LoRA adapters merged in)."""

from __future__ import annotations

import shutil
from pathlib import Path

from hftransfer.artifacts.client import mark_output_folder
from hftransfer.artifacts.layout import LABELS_FILE, RECIPE_FILE, publish, staging_dir
from hftransfer.artifacts.saved import load_run
from hftransfer.errors import UserError


def export_run(output_dir: str | Path, out: str | Path, merge: bool = False, overwrite: bool = False) -> Path:
    """Save the run's model with `save_pretrained`; an adapter run needs `merge` and is merged into its base.

    The recipe and label files go along, so `hftransfer evaluate/predict` work on the export too. A mean-pooled
    model is marked for the standard client (`hftransfer.artifacts.client`): it needs `trust_remote_code=True`.
    """
    run = load_run(output_dir)
    model = run.model
    if hasattr(model, "merge_and_unload"):
        if not merge:
            raise UserError(f"{output_dir} holds an adapter; pass --merge to fold it into the base model.")
        model = model.merge_and_unload()
    work = staging_dir(out, overwrite)
    model.save_pretrained(work, safe_serialization=True)
    run.tokenizer.save_pretrained(work)
    for name in (RECIPE_FILE, LABELS_FILE):
        if (run.folder / name).is_file():
            shutil.copyfile(run.folder / name, work / name)
    if (work / RECIPE_FILE).is_file():
        mark_output_folder(work)  # a mean-pooled export is no plain Transformers model
    return publish(work, out)
