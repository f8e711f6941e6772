"""accelerate_configs/fsdp.yaml end to end: 2 CPU processes (gloo; FSDP2 runs on CPU with this torch) train a tiny
recipe, and the saved folder loads and scores like the same run under DDP. On the GPU machine,
bench/device_check.sh runs the same config on CUDA with one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hftransfer.artifacts.saved import load_run
from hftransfer.evaluation.scoring import evaluate_run

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_config(source: str, tmp_path: Path, processes: int = 2) -> Path:
    """The repo's accelerate config on `processes` CPU processes (what a GPU machine runs, minus the GPUs)."""
    config = yaml.safe_load((REPO / "accelerate_configs" / source).read_text())
    config.update(num_processes=processes, use_cpu=True, gpu_ids=None)
    path = tmp_path / f"cpu-{source}"
    path.write_text(yaml.safe_dump(config))
    return path


def launch(config_file: Path, out: Path, model: Path, train_file: Path, dev_file: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file)]
    command += ["--main_process_port", str(_free_port()), "-m", "hftransfer", "train"]
    command += [
        f"model.name_or_path={model}", f"data.train_file={train_file}", f"data.validation_file={dev_file}",
        f"train.output_dir={out}", "train.loop=accelerate", "train.epochs=2", "train.batch_size=8",
        "train.learning_rate=1e-3", "train.precision=fp32", "train.seed=0",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "results.json").read_text())


@pytest.mark.slow
def test_fsdp_run_on_two_cpu_processes_scores_like_ddp(tiny_bert_dir, toy_text_files, tmp_path):
    assert (REPO / "accelerate_configs" / "fsdp.yaml").is_file()
    fsdp = launch(cpu_config("fsdp.yaml", tmp_path), tmp_path / "fsdp", tiny_bert_dir, *toy_text_files)
    ddp = launch(cpu_config("ddp.yaml", tmp_path), tmp_path / "ddp", tiny_bert_dir, *toy_text_files)
    assert fsdp["global_steps"] == ddp["global_steps"] == 12
    # Sharded vs replicated data parallelism: the same averaged gradients, float noise apart.
    assert fsdp["train_losses"] == pytest.approx(ddp["train_losses"], abs=1e-4)
    for key in ("accuracy", "num_samples"):
        assert fsdp["eval"][key] == ddp["eval"][key]
    assert fsdp["eval"]["roc_auc"] == pytest.approx(ddp["eval"]["roc_auc"], abs=1e-3)
    # The FSDP run saved whole (gathered) weights that load and score as it recorded.
    rescored = evaluate_run(load_run(tmp_path / "fsdp"))
    assert rescored["accuracy"] == fsdp["eval"]["accuracy"]
    assert rescored["roc_auc"] == pytest.approx(fsdp["eval"]["roc_auc"], abs=1e-6)
