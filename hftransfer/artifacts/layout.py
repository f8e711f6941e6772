"""The output folder: what it holds, named in one place, and how it is written so that it is never half-written
(a run works in `<out>.incomplete` and is renamed into place at the end)."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hftransfer.errors import UserError

RECIPE_FILE = "config.yaml"
"""The fully resolved recipe; its presence marks an hftransfer output folder."""
RESULTS_FILE = "results.json"
LABELS_FILE = "labels.json"
"""Class names in id order and the label values the data used for them."""
CARD_FILE = "README.md"
LOG_HISTORY_FILE = "log_history.json"
CHECKPOINTS_DIR = "checkpoints"
ADAPTER_CONFIG_FILE = "adapter_config.json"
"""Written by peft (`peft.utils.CONFIG_NAME`) beside the adapter weights: the folder holds an adapter."""
ONNX_FILE = "model.onnx"
ONNX_REPORT_FILE = "onnx_check.json"

INCOMPLETE_SUFFIX = ".incomplete"


class OutputDirError(UserError):
    """The output folder holds earlier results that the run would overwrite."""


def staging_dir(output_dir: str | Path, overwrite: bool, resume: bool = False) -> Path:
    """Check the target before any work starts and return the folder the run writes into.

    An interrupted run leaves its checkpoints in `<out>.incomplete`: a resumed run (`resume`) works on in
    that folder; a fresh run refuses to mix with them unless `overwrite` says to start over.
    """
    target = Path(output_dir)
    if target.exists() and not target.is_dir():
        raise OutputDirError(f"train.output_dir {target} is a file; choose a folder path.")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise OutputDirError(
            f"train.output_dir {target} exists and is not empty. Choose another train.output_dir, "
            "or set train.overwrite_output_dir=true to replace it when the new run finishes."
        )
    work = target.with_name(target.name + INCOMPLETE_SUFFIX)
    leftover = work / "checkpoints"
    if not resume and leftover.is_dir() and any(leftover.iterdir()):
        if not overwrite:
            raise OutputDirError(
                f"{work} holds checkpoints of an interrupted run. Resume it with train.resume_from=latest, "
                "or set train.overwrite_output_dir=true to discard them and start over."
            )
        shutil.rmtree(leftover)
    work.mkdir(parents=True, exist_ok=True)
    return work


def drop_checkpoints(work: Path, keep: bool) -> None:
    """A finished run's `checkpoints/`: removed unless `keep` (`train.keep_checkpoints`), and never left empty."""
    folder = work / CHECKPOINTS_DIR
    if folder.is_dir() and (not keep or not any(folder.iterdir())):
        shutil.rmtree(folder)


def default_modes() -> tuple[int, int]:
    """The modes a plain `open()` and `mkdir()` give under this process's umask: (file, folder)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask, 0o777 & ~umask


def normalize_permissions(folder: Path) -> None:
    """Every file and folder we publish gets the modes normal files get (libraries that write through a temporary
    file leave 0600 behind: `model.safetensors` next to 0644 files); links are left alone."""
    file_mode, folder_mode = default_modes()
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            path.chmod(folder_mode if path.is_dir() else file_mode)


def publish(work: Path, output_dir: str | Path) -> Path:
    """Swap the finished run into place; an earlier folder is removed only after the swap succeeded. Every file
    gets the default permissions first (`normalize_permissions`)."""
    normalize_permissions(work)
    target = Path(output_dir)
    retired = target.with_name(target.name + ".replaced")
    if target.exists():
        if retired.exists():
            shutil.rmtree(retired)
        target.rename(retired)
    work.rename(target)
    if retired.exists():
        shutil.rmtree(retired)
    return target


def write_json(path: str | Path, payload: Any) -> None:
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")
    tmp.replace(path)


def folder_size_bytes(folder: str | Path, pattern: str = "*.safetensors") -> int:
    """Bytes of the model's weight files in an output folder (its `checkpoints/` left out)."""
    folder = Path(folder)
    return sum(p.stat().st_size for p in folder.rglob(pattern) if p.relative_to(folder).parts[0] != CHECKPOINTS_DIR)


def resumable_checkpoints(work: Path) -> list[Path]:
    """Complete checkpoints a failed run left in its staging folder (`checkpoint-N`, never a `.partial` one)."""
    folder = work / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    return [p for p in folder.iterdir() if p.is_dir() and p.name.startswith("checkpoint-") and any(p.iterdir())]


@contextmanager
def cleanup_failed_run(work: Path) -> Iterator[None]:
    """On failure, remove the staging folder unless it holds checkpoints to resume from; when it does, keep it and
    say so (in a UserError's message, else as a warning). The finished output folder is never touched here."""
    try:
        yield
    except BaseException as err:
        if resumable_checkpoints(work):
            note = f"Kept {work} with checkpoints; rerun the same command with train.resume_from=latest to resume."
            if isinstance(err, UserError) and len(err.args) == 1 and isinstance(err.args[0], str):
                err.args = (f"{err.args[0]} {note}",)
            else:
                logging.getLogger("hftransfer").warning(note)
        else:
            shutil.rmtree(work, ignore_errors=True)
        raise
