"""Quiet, tidy output folders: one log line per checkpoint, no checkpoints left in a finished run unless asked, no
empty folders, the same permissions on every file, the weight-loading report from the main process only."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path

import pytest

from hftransfer.artifacts.layout import default_modes
from hftransfer.training.pipeline import train


def _modes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): stat.S_IMODE(p.stat().st_mode) for p in folder.rglob("*")}


def test_accelerate_checkpoints_log_one_line_each_and_a_finished_run_drops_them(tiny_recipe, tmp_path, caplog):
    caplog.set_level(logging.INFO)  # as a notebook's logging.basicConfig(level=INFO) would: every logger at info
    train(tiny_recipe("train.loop=accelerate", "train.max_steps=3", "train.save_steps=1", "train.save_total_limit=5"))
    saves = [r for r in caplog.records if "checkpoint" in r.getMessage().lower()]
    assert [r.getMessage() for r in saves] == ["Saved checkpoint-1", "Saved checkpoint-2", "Saved checkpoint-3"]
    assert not [r for r in caplog.records if r.name.startswith("accelerate.checkpointing")]
    out = tmp_path / "out"
    assert not (out / "checkpoints").exists()  # finished: dropped (train.keep_checkpoints=false)
    file_mode, folder_mode = default_modes()
    assert set(_modes(out).values()) == {file_mode}  # model.safetensors too, not 0600 beside 0644
    assert stat.S_IMODE(out.stat().st_mode) == folder_mode


def test_keep_checkpoints_keeps_them_and_the_size_counts_only_the_model(tiny_recipe, tmp_path):
    results = train(tiny_recipe("train.loop=accelerate", "train.max_steps=2", "train.save_steps=1",
                                "train.keep_checkpoints=true"))  # fmt: skip
    out = tmp_path / "out"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-1", "checkpoint-2"]
    assert results["checkpoint_size_bytes"] == (out / "model.safetensors").stat().st_size
    file_mode, folder_mode = default_modes()
    assert {m for name, m in _modes(out).items() if (out / name).is_file()} == {file_mode}
    assert {m for name, m in _modes(out).items() if (out / name).is_dir()} == {folder_mode}


@pytest.mark.parametrize("loop", ["trainer", "accelerate"])
def test_a_run_without_checkpoints_leaves_no_checkpoints_folder(tiny_recipe, tmp_path, loop):
    train(tiny_recipe(f"train.loop={loop}", "train.max_steps=2", "train.keep_checkpoints=true"))
    assert not (tmp_path / "out" / "checkpoints").exists()  # not even empty
    assert json.loads((tmp_path / "out" / "results.json").read_text())["global_steps"] == 2


def test_only_the_main_process_reports_model_loading(tiny_bert_dir, monkeypatch):
    """transformers' load report (here: a new 3-class head) comes from the main process of `accelerate launch`."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    from hftransfer.training import runtime

    records: list[logging.LogRecord] = []
    collect = logging.Handler()
    collect.emit = records.append
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()
    hf_logging.add_handler(collect)  # transformers' loggers do not propagate to the root (caplog)
    try:
        for main_process in (False, True):
            records.clear()
            monkeypatch.setattr(runtime, "process_state", lambda m=main_process: type("S", (), {"is_main_process": m}))
            with runtime.reported_by_main_process():
                AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=3,
                                                                   ignore_mismatched_sizes=True)  # fmt: skip
            assert any("LOAD REPORT" in r.getMessage() for r in records) is main_process
        assert hf_logging.get_verbosity() == hf_logging.WARNING  # restored afterwards
    finally:
        hf_logging.remove_handler(collect)
        hf_logging.set_verbosity(verbosity)
