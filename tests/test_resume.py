"""Checkpoints of the Accelerate loop: exact resume after a kill, resume from a path, best-model restore, rotation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hftransfer.artifacts.layout import LOG_HISTORY_FILE, OutputDirError
from hftransfer.training.checkpoints import (
    PROGRESS_FILE,
    CheckpointError,
    Progress,
    find_checkpoint,
    list_checkpoints,
    prune_checkpoints,
    publish_checkpoint,
    staging_name,
)
from hftransfer.training.pipeline import train

REPO = Path(__file__).resolve().parents[1]

# The CLI run, with a pause after each checkpoint so the test can kill it at a known step.
_SLOW_CLI = """
import sys, time
import hftransfer.training.loops.accelerate as loop
save = loop.save_checkpoint
def save_then_pause(accelerator, folder, progress, *rest):
    path = save(accelerator, folder, progress, *rest)
    if progress.global_step >= 4:
        time.sleep(120)
    return path
loop.save_checkpoint = save_then_pause
from hftransfer.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def _assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [name for name in a if not torch.equal(a[name], b[name])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def _history(folder: Path) -> list[dict]:
    """The log history without wall-clock throughput, which no two runs share."""
    history = json.loads((folder / LOG_HISTORY_FILE).read_text())
    return [{k: v for k, v in entry.items() if k != "samples_per_second"} for entry in history]


def _overrides(config) -> list[str]:
    t, d = config.train, config.data
    keys = ("epochs", "batch_size", "learning_rate", "logging_steps", "loop", "gradient_accumulation_steps",
            "save_steps", "eval_steps", "precision", "output_dir", "keep_checkpoints")  # fmt: skip
    return [
        f"model.name_or_path={config.model.name_or_path}",
        f"data.train_file={d.train_file}",
        f"data.validation_file={d.validation_file}",
        *(f"train.{k}={getattr(t, k)}" for k in keys),
    ]


@pytest.mark.slow
def test_killed_cli_run_resumes_to_the_weights_of_an_uninterrupted_one(tiny_recipe, tmp_path):
    """SIGKILL after checkpoint-4 (mid-epoch, dropout on), resume with `latest`: bit-identical end state."""
    common = (
        "train.loop=accelerate",
        "train.gradient_accumulation_steps=2",
        "train.save_steps=2",
        "train.eval_steps=3",
        "train.keep_checkpoints=true",  # the finished runs' checkpoints are compared below
    )
    full = train(tiny_recipe(*common, f"train.output_dir={tmp_path / 'full'}"))
    assert full["global_steps"] == 12

    killed = tiny_recipe(*common, f"train.output_dir={tmp_path / 'resumed'}")
    work = tmp_path / "resumed.incomplete"
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        [sys.executable, "-c", _SLOW_CLI, "train", *_overrides(killed)],
        env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not (work / "checkpoints" / "checkpoint-4").is_dir():
            assert process.poll() is None, process.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint-4 within 240 s"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (tmp_path / "resumed").exists()
    assert [p.name for p in list_checkpoints(work / "checkpoints")] == ["checkpoint-2", "checkpoint-4"]
    # A crash while writing the next checkpoint leaves only a partial folder, which resume must ignore.
    partial = staging_name(work / "checkpoints", 6)
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"truncated")

    with pytest.raises(OutputDirError, match="resume_from=latest"):
        train(killed)  # a fresh run must not silently mix with the interrupted one
    resumed = train(tiny_recipe(*common, f"train.output_dir={tmp_path / 'resumed'}", "train.resume_from=latest"))

    _assert_identical(_weights(tmp_path / "resumed"), _weights(tmp_path / "full"))
    assert resumed["eval"] == full["eval"]
    assert resumed["train_losses"] == full["train_losses"]
    assert _history(tmp_path / "resumed") == _history(tmp_path / "full")
    for run in ("full", "resumed"):  # the last save_total_limit=2 checkpoints, no partial leftovers
        assert sorted(p.name for p in (tmp_path / run / "checkpoints").iterdir()) == ["checkpoint-10", "checkpoint-12"]


def test_resume_from_a_checkpoint_path_mid_epoch(tiny_recipe, tmp_path):
    common = ("train.loop=accelerate", "train.save_steps=3", "train.save_total_limit=10", "train.eval_steps=4",
              "train.keep_checkpoints=true")  # fmt: skip
    full = train(tiny_recipe(*common, f"train.output_dir={tmp_path / 'full'}"))
    checkpoints = tmp_path / "full" / "checkpoints"
    assert [p.name for p in list_checkpoints(checkpoints)] == [f"checkpoint-{s}" for s in (3, 6, 9, 12, 15, 18, 21, 24)]
    progress = Progress.load(checkpoints / "checkpoint-15")
    assert (progress.global_step, progress.epoch, progress.batches_done) == (15, 1, 3)

    resumed = train(
        tiny_recipe(*common, f"train.output_dir={tmp_path / 'again'}", f"train.resume_from={checkpoints}/checkpoint-15")
    )
    _assert_identical(_weights(tmp_path / "again"), _weights(tmp_path / "full"))
    assert resumed["eval"] == full["eval"] and resumed["global_steps"] == 24


def test_resume_from_latest_without_checkpoints_starts_fresh_and_bad_paths_fail(tiny_recipe, tmp_path):
    fresh = train(tiny_recipe("train.loop=accelerate", "train.max_steps=3", f"train.output_dir={tmp_path / 'a'}"))
    latest = train(tiny_recipe("train.loop=accelerate", "train.max_steps=3", "train.resume_from=latest",
                               f"train.output_dir={tmp_path / 'b'}"))  # fmt: skip
    _assert_identical(_weights(tmp_path / "a"), _weights(tmp_path / "b"))
    assert fresh["eval"] == latest["eval"]
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        train(tiny_recipe("train.loop=accelerate", f"train.resume_from={tmp_path / 'a'}"))


def test_early_stopping_restores_the_best_checkpoint(tiny_recipe, tmp_path):
    config = tiny_recipe(
        "train.loop=accelerate",
        "train.learning_rate=2e-2",  # large enough that the eval loss soon stops improving
        "train.eval_steps=1",
        "train.best_metric=loss",
        "train.early_stopping_patience=2",
        "train.save_total_limit=1",
        "train.keep_checkpoints=true",
    )
    results = train(config)
    history = json.loads((tmp_path / "out" / LOG_HISTORY_FILE).read_text())
    evals = [(e["step"], e["eval_loss"]) for e in history if "eval_loss" in e]
    best_step, best_loss = min(evals, key=lambda e: e[1])

    assert results["global_steps"] < 24, "early stopping never triggered"
    assert evals[-1][0] == results["global_steps"] and best_step == evals[-3][0]  # two evals without improvement
    checkpoints = tmp_path / "out" / "checkpoints"
    names = sorted(p.name for p in checkpoints.iterdir())
    assert f"checkpoint-{best_step}" in names and len(names) <= 2  # best kept, plus at most the newest one
    _assert_identical(_weights(tmp_path / "out"), _weights(checkpoints / f"checkpoint-{best_step}"))
    best_eval = next(e for e in history if e.get("eval_loss") == best_loss)
    for key in ("accuracy", "roc_auc", "num_samples"):  # the output's own eval pass sees the best weights
        assert results["eval"][key] == pytest.approx(best_eval[f"eval_{key}"], abs=1e-9)


def _fake_checkpoint(folder: Path, step: int) -> Path:
    staged = staging_name(folder, step)
    staged.mkdir(parents=True)
    Progress(global_step=step).save(staged)
    return publish_checkpoint(staged, folder, step)


def test_checkpoint_rotation_keeps_the_newest_and_the_protected(tmp_path):
    for step in (2, 4, 6, 8):
        _fake_checkpoint(tmp_path, step)
    staging_name(tmp_path, 10).mkdir()  # a save that died half-way
    (tmp_path / "checkpoint-99").mkdir()  # no progress file: not a finished checkpoint
    prune_checkpoints(tmp_path, keep=2, protect={2})
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-6", "checkpoint-8"]
    assert not staging_name(tmp_path, 10).exists()
    assert find_checkpoint("latest", tmp_path) == tmp_path / "checkpoint-8"
    assert find_checkpoint(None, tmp_path) is None
    assert find_checkpoint("latest", tmp_path / "nothing-here") is None
    with pytest.raises(CheckpointError):
        find_checkpoint(str(tmp_path / "checkpoint-99"), tmp_path)


def test_republishing_a_step_replaces_it_whole(tmp_path):
    first = _fake_checkpoint(tmp_path, 4)
    (first / "stale.txt").write_text("from an earlier timeline")
    second = _fake_checkpoint(tmp_path, 4)
    assert second == first and not (second / "stale.txt").exists() and (second / PROGRESS_FILE).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-4"]


def test_trainer_loop_honours_resume_from_and_early_stopping(tiny_recipe, tmp_path):
    """The same config keys drive the Trainer loop: exact resume from its checkpoint, early stop to the best."""
    common = ("train.loop=trainer", "train.save_steps=3", "train.save_total_limit=10", "train.eval_steps=3",
              "train.keep_checkpoints=true")  # fmt: skip
    full = train(tiny_recipe(*common, f"train.output_dir={tmp_path / 'full'}"))
    start = tmp_path / "full" / "checkpoints" / "checkpoint-15"
    resumed = train(tiny_recipe(*common, f"train.output_dir={tmp_path / 'again'}", f"train.resume_from={start}"))
    _assert_identical(_weights(tmp_path / "again"), _weights(tmp_path / "full"))
    assert resumed["eval"] == full["eval"]

    early = (
        "train.learning_rate=2e-2",
        "train.eval_steps=1",
        "train.best_metric=loss",
        "train.early_stopping_patience=2",
        "train.keep_checkpoints=true",
    )
    by_trainer = train(tiny_recipe(*early, "train.loop=trainer", f"train.output_dir={tmp_path / 'trainer'}"))
    by_accelerate = train(tiny_recipe(*early, "train.loop=accelerate", f"train.output_dir={tmp_path / 'accelerate'}"))
    assert by_trainer["global_steps"] == by_accelerate["global_steps"] < 24
    checkpoints = sorted((tmp_path / "trainer" / "checkpoints").iterdir(), key=lambda p: int(p.name.split("-")[1]))
    state = json.loads((checkpoints[-1] / "trainer_state.json").read_text())
    best = tmp_path / "trainer" / "checkpoints" / Path(state["best_model_checkpoint"]).name  # recorded pre-rename
    _assert_identical(_weights(tmp_path / "trainer"), _weights(best))
    _assert_identical(_weights(tmp_path / "accelerate"), _weights(best))  # same best step, same weights


@pytest.mark.parametrize("loop", ["accelerate", "trainer"])
def test_an_unusable_rng_file_stops_the_resume_unless_inexact_is_allowed(tiny_recipe, tmp_path, loop, caplog):
    """Accelerate and Trainer skip a bad RNG file with an INFO line and resume inexactly; we refuse, naming it."""
    common = (f"train.loop={loop}", "train.epochs=1", "train.save_steps=3", "train.save_total_limit=10",
              "train.keep_checkpoints=true")  # fmt: skip
    train(tiny_recipe(*common, f"train.output_dir={tmp_path / 'full'}"))
    checkpoint = tmp_path / "full" / "checkpoints" / "checkpoint-6"
    rng_file = checkpoint / ("random_states_0.pkl" if loop == "accelerate" else "rng_state.pth")
    assert rng_file.is_file()
    good = rng_file.read_bytes()
    problems = {
        "missing": lambda: rng_file.unlink(),
        "truncated": lambda: rng_file.write_bytes(good[: len(good) // 2]),
        "not RNG states": lambda: torch.save({"something": torch.zeros(1)}, rng_file),
    }
    for n, (problem, spoil) in enumerate(problems.items()):
        rng_file.write_bytes(good)
        spoil()
        resume = (f"train.resume_from={checkpoint}", f"train.output_dir={tmp_path / f'again{n}'}")
        with pytest.raises(CheckpointError, match=rf"{rng_file.name}.*allow_inexact_resume=true"):
            train(tiny_recipe(*common, *resume))
        assert not (tmp_path / f"again{n}").exists(), problem  # refused before anything was written
    caplog.set_level("WARNING", logger="hftransfer")
    resumed = train(tiny_recipe(*common, *resume, "train.allow_inexact_resume=true"))
    assert resumed["global_steps"] == 12
    assert any(rng_file.name in r.getMessage() and "allow_inexact_resume" in r.getMessage() for r in caplog.records)
