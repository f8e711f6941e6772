"""Checkpoint folders that are never half-written, found again by `resume_from=latest|PATH`.

A checkpoint is written under a temporary name and renamed when complete, so the newest
`checkpoint-N` is always readable even if the run dies while saving. Old checkpoints are
removed only after a new one is in place (Accelerate's own `total_limit` deletes first).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hftransfer.errors import UserError

PROGRESS_FILE = "progress.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")


class CheckpointError(UserError):
    """A `train.resume_from` that does not name a usable checkpoint."""


@dataclass
class Progress:
    """Where training stands: enough, with the Accelerate state, to continue exactly where it stopped."""

    global_step: int = 0
    epoch: int = 0
    batches_done: int = 0
    """Batches of `epoch` already trained on (a multiple of the accumulation steps)."""
    best_value: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    last_eval_step: int | None = None
    log_history: list[dict] = field(default_factory=list)

    def record_eval(self, value: float | None, greater_is_better: bool) -> bool:
        """Note an evaluation of the best-model metric; True when it is a new best."""
        self.last_eval_step = self.global_step
        better = value is not None and (
            self.best_value is None or (value > self.best_value if greater_is_better else value < self.best_value)
        )
        if better:
            self.best_value, self.best_step, self.evals_without_improvement = value, self.global_step, 0
        else:
            self.evals_without_improvement += 1
        return better

    def save(self, folder: Path) -> None:
        (folder / PROGRESS_FILE).write_text(json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, folder: Path) -> Progress:
        return cls(**json.loads((folder / PROGRESS_FILE).read_text()))


def checkpoint_step(path: Path) -> int | None:
    match = _NAME.match(path.name)
    return int(match.group(1)) if match else None


def list_checkpoints(folder: Path, marker: str = PROGRESS_FILE) -> list[Path]:
    """Complete checkpoints (renamed into place, holding `marker`), oldest first."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and checkpoint_step(p) is not None and (p / marker).exists()]
    return sorted(found, key=checkpoint_step)


def find_checkpoint(resume_from: str | None, folder: Path, marker: str = PROGRESS_FILE) -> Path | None:
    """The checkpoint `resume_from` names: `latest` in `folder` (None when there is none yet), or a path."""
    if resume_from is None:
        return None
    if resume_from == "latest":
        found = list_checkpoints(folder, marker)
        return found[-1] if found else None
    path = Path(resume_from)
    if not (path / marker).is_file():
        raise CheckpointError(
            f"train.resume_from={resume_from} is not a checkpoint of this loop (no {marker} in it). "
            f"Give a {folder}/checkpoint-N folder, or `latest`."
        )
    return path


def staging_name(folder: Path, step: int) -> Path:
    return folder / f".checkpoint-{step}.partial"


def publish_checkpoint(staged: Path, folder: Path, step: int) -> Path:
    """Rename a fully written checkpoint into place; an older one of the same step goes only afterwards."""
    final = folder / f"checkpoint-{step}"
    retired = folder / f".checkpoint-{step}.retired"
    if retired.exists():
        shutil.rmtree(retired)
    if final.exists():
        final.rename(retired)
    staged.rename(final)
    if retired.exists():
        shutil.rmtree(retired)
    return final


def prune_checkpoints(folder: Path, keep: int, protect: set[int] | None = None) -> list[Path]:
    """Delete all but the `keep` newest checkpoints, never those whose step is in `protect` (the best one)."""
    protect = protect or set()
    candidates = [p for p in list_checkpoints(folder) if checkpoint_step(p) not in protect]
    doomed = candidates[: max(len(candidates) - keep, 0)]
    doomed += [p for p in folder.glob(".checkpoint-*.partial") if p.is_dir()]  # left by a crash while saving
    for path in doomed:
        shutil.rmtree(path)
    return doomed


RNG_KEYS = {
    "accelerate": ("random_states_{index}.pkl", ("random_state", "numpy_random_seed", "torch_manual_seed")),
    "trainer": ("rng_state_{index}.pth", ("python", "numpy", "cpu")),
}
"""Per loop: the RNG file of process `index` in a checkpoint and the states it must hold (the Trainer names a
single process's file `rng_state.pth`)."""


def check_rng_state(checkpoint: Path, loop: str, process_index: int, world_size: int, allow_inexact: bool) -> bool:
    """Refuse to resume from a checkpoint whose RNG file for this process is missing, unreadable or incomplete:
    Accelerate and Trainer skip it with an INFO line, and the resumed run silently stops matching an uninterrupted
    one. `allow_inexact` (train.allow_inexact_resume) lets such a run go on with a warning; the result says whether
    the file is usable (when not, the caller must not load it)."""
    import logging

    from accelerate.utils import load

    pattern, keys = RNG_KEYS[loop]
    name = pattern.format(index=process_index)
    if loop == "trainer" and world_size == 1:
        name = "rng_state.pth"
    path = checkpoint / name
    try:
        state = load(path, map_location="cpu", weights_only=True)
        problem = None if isinstance(state, dict) and all(k in state for k in keys) else "it lacks RNG states"
    except FileNotFoundError:
        problem = "it is missing"
    except Exception as err:  # truncated, not a torch file, or holding objects weights_only refuses to load
        problem = f"it cannot be read safely ({type(err).__name__})"
    if problem is None:
        return True
    message = (
        f"Cannot resume exactly from {checkpoint}: its random-number state {path.name} is unusable ({problem}), "
        "so dropout and data order would differ from an uninterrupted run."
    )
    if not allow_inexact:
        raise CheckpointError(f"{message} Resume from another checkpoint, or set train.allow_inexact_resume=true.")
    logging.getLogger("hftransfer").warning("%s Going on (train.allow_inexact_resume=true).", message)
    return False
