"""The Accelerate loop against the Trainer loop, against itself with accumulation, and under `accelerate launch`."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from hftransfer.artifacts.layout import LOG_HISTORY_FILE
from hftransfer.config.recipe import load_config
from hftransfer.errors import UserError
from hftransfer.training.pipeline import train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_bert_no_dropout(tiny_bert_dir, tmp_path_factory) -> Path:
    """The tiny BERT without dropout: runs that split batches differently can then agree to float precision."""
    folder = tmp_path_factory.mktemp("tiny-bert-no-dropout")
    config = BertConfig.from_pretrained(tiny_bert_dir, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(folder)
    return folder


def _history(results: dict, key: str) -> list[float]:
    return [entry[key] for entry in results["log_history"] if key in entry and "eval_loss" not in entry]


def _run(config) -> dict:
    results = train(config)
    results["log_history"] = json.loads((Path(config.train.output_dir) / LOG_HISTORY_FILE).read_text())
    return results


def _weights(output_dir: str | Path) -> dict[str, torch.Tensor]:
    return load_file(Path(output_dir) / "model.safetensors")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_trainer_and_accelerate_loops_take_the_same_steps(tiny_recipe, tmp_path, monkeypatch, precision):
    """Same batches, groups, schedule, clipping, dropout masks and autocast: step losses and final metrics agree."""
    captured = {}
    from hftransfer.training.loops import LOOPS

    trainer_loop = LOOPS["trainer"]

    def keep_history(*args):  # the Trainer loop keeps its log history in memory only
        outcome = trainer_loop(*args)
        captured["log_history"] = outcome.log_history
        return outcome

    monkeypatch.setitem(LOOPS, "trainer", keep_history)
    # 12 batches of 8 per epoch in groups of 5: two full groups and a short one of 2, for two epochs.
    common = (
        "train.gradient_accumulation_steps=5",
        "train.warmup_ratio=0.2",
        "train.max_grad_norm=0.5",
        f"train.precision={precision}",
    )
    by_trainer = train(tiny_recipe(*common, "train.loop=trainer", f"train.output_dir={tmp_path / 'trainer'}"))
    by_trainer["log_history"] = captured["log_history"]
    by_accelerate = _run(tiny_recipe(*common, "train.loop=accelerate", f"train.output_dir={tmp_path / 'accelerate'}"))

    assert by_trainer["global_steps"] == by_accelerate["global_steps"] == 6
    assert by_trainer["precision"] == by_accelerate["precision"] == precision
    for run in (by_trainer, by_accelerate):  # two epochs, each timed without its evaluation
        assert len(run["epoch_train_s"]) == 2 and 0 < sum(run["epoch_train_s"]) <= run["train_runtime_s"]
    for key in ("loss", "grad_norm", "learning_rate"):
        np.testing.assert_allclose(_history(by_accelerate, key), _history(by_trainer, key), rtol=0, atol=1e-6)
    trainer_evals = [e["eval_loss"] for e in by_trainer["log_history"] if "eval_loss" in e]
    accelerate_evals = [e["eval_loss"] for e in by_accelerate["log_history"] if "eval_loss" in e]
    np.testing.assert_allclose(accelerate_evals, trainer_evals, rtol=0, atol=1e-6)
    for key in ("accuracy", "f1", "roc_auc", "num_samples"):
        assert by_accelerate["eval"][key] == pytest.approx(by_trainer["eval"][key], abs=1e-6)
    assert by_accelerate["eval"]["confusion_matrix"] == by_trainer["eval"]["confusion_matrix"]
    trainer_weights, accelerate_weights = _weights(tmp_path / "trainer"), _weights(tmp_path / "accelerate")
    assert trainer_weights.keys() == accelerate_weights.keys()
    for name, tensor in trainer_weights.items():
        torch.testing.assert_close(accelerate_weights[name], tensor, rtol=0, atol=1e-6)


def test_checkpointing_and_label_smoothing_take_the_same_steps_in_both_loops(tiny_recipe, tmp_path, monkeypatch):
    """`train.trainer_args` that both loops apply: gradient checkpointing (recomputation, same numbers) and label
    smoothing (in the strategy's loss) give the same step losses in either loop; smoothing reaches the loss."""
    calls = []
    original = BertForSequenceClassification.activation_checkpointing_enable

    def spy(self, *args, **kwargs):
        calls.append(type(self).__name__)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(BertForSequenceClassification, "activation_checkpointing_enable", spy)
    common = ("train.epochs=1", "train.trainer_args.gradient_checkpointing=true")
    smoothed = ("train.trainer_args.label_smoothing_factor=0.2",)
    runs = {
        loop: train(tiny_recipe(*common, *smoothed, f"train.loop={loop}", f"train.output_dir={tmp_path / loop}"))
        for loop in ("trainer", "accelerate")
    }
    assert calls == ["BertForSequenceClassification"] * 2
    np.testing.assert_allclose(_history(runs["accelerate"], "loss"), _history(runs["trainer"], "loss"), atol=1e-6)
    plain = train(tiny_recipe(*common, "train.loop=accelerate", f"train.output_dir={tmp_path / 'plain'}"))
    # Same weights and batch at step 1: only the smoothing term differs (which way depends on the random start).
    assert _history(plain, "loss")[0] != pytest.approx(_history(runs["accelerate"], "loss")[0], abs=1e-7)


def test_trainer_args_the_accelerate_loop_cannot_apply_fail_with_the_recipe(tiny_recipe):
    with pytest.raises(UserError, match="torch_compile"):
        tiny_recipe("train.loop=accelerate", "train.trainer_args.torch_compile=true")


def test_accumulating_4_batches_of_8_matches_batches_of_32(tiny_recipe, tiny_bert_no_dropout, tmp_path):
    """88 rows: groups of 4x8 (the last 3x8) must take the steps of batches of 32 (the last 24)."""
    common = (
        f"model.name_or_path={tiny_bert_no_dropout}",
        "data.batching=random",  # batches of 32 are then exactly four consecutive batches of 8
        "data.max_train_samples=88",
        "train.loop=accelerate",
        "train.epochs=2",
        "train.max_grad_norm=0",  # no clipping, so the logged norm shows any mis-scaled group
        "train.learning_rate=3e-3",
    )
    accumulated = _run(tiny_recipe(*common, "train.batch_size=8", "train.gradient_accumulation_steps=4",
                                   f"train.output_dir={tmp_path / 'ga'}"))  # fmt: skip
    large = _run(tiny_recipe(*common, "train.batch_size=32", f"train.output_dir={tmp_path / 'large'}"))

    assert accumulated["global_steps"] == large["global_steps"] == 6
    for key in ("loss", "grad_norm", "learning_rate"):
        np.testing.assert_allclose(_history(accumulated, key), _history(large, key), rtol=1e-5, atol=1e-7)
    for name, tensor in _weights(tmp_path / "large").items():
        torch.testing.assert_close(_weights(tmp_path / "ga")[name], tensor, rtol=1e-4, atol=1e-6)
    assert accumulated["eval"]["accuracy"] == large["eval"]["accuracy"]


def test_unknown_or_missing_tracker_fails_before_training(tiny_recipe, tmp_path):
    with pytest.raises(UserError, match="not a tracker"):
        train(tiny_recipe("train.loop=accelerate", "train.report_to=[not-a-tracker]"))
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match="pip install tensorboard"):
            train(tiny_recipe("train.loop=accelerate", "train.report_to=[tensorboard]", "train.max_steps=1"))
    else:
        train(tiny_recipe("train.loop=accelerate", "train.report_to=[tensorboard]", "train.max_steps=2"))
        assert list((tmp_path / "out" / "logs").rglob("events.out.tfevents.*"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cli_args(config) -> list[str]:
    """A RunConfig's non-default keys as `key=value` overrides for a subprocess."""
    train_cfg, data = config.train, config.data
    return [
        f"model.name_or_path={config.model.name_or_path}",
        f"data.train_file={data.train_file}",
        f"data.validation_file={data.validation_file}",
        f"train.epochs={train_cfg.epochs}",
        f"train.batch_size={train_cfg.batch_size}",
        f"train.eval_batch_size={train_cfg.eval_batch_size}",
        f"train.learning_rate={train_cfg.learning_rate}",
        f"train.logging_steps={train_cfg.logging_steps}",
        f"train.loop={train_cfg.loop}",
        f"train.precision={train_cfg.precision}",
        f"train.output_dir={train_cfg.output_dir}",
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    "strategy",
    [
        (),
        # Mean pooling leaves the checkpoint's pooler unused: DDP must not need find_unused_parameters.
        ("strategy.name=frozen", "strategy.frozen.mode=head_only", "model.pooling=mean"),
        ("strategy.name=lora", "model.pooling=mean"),
    ],
    ids=["full", "head-only", "lora"],
)
def test_two_processes_give_the_metrics_of_one(tiny_recipe, tiny_bert_no_dropout, tmp_path, strategy):
    """DDP on 2 CPU processes (gloo) vs. one process accumulating the same 2 batches per step.

    Eval batches of 12 over 32 rows make the last round uneven, so Accelerate pads it with repeated
    rows; `gather_for_metrics` must drop them (32 samples counted, metrics equal to one process).
    """
    common = (
        f"model.name_or_path={tiny_bert_no_dropout}",
        "train.loop=accelerate",
        "train.eval_batch_size=12",
        *strategy,
    )
    two = tiny_recipe(*common, f"train.output_dir={tmp_path / 'two'}")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launch += ["--main_process_port", str(_free_port()), "-m", "hftransfer", "train", *_cli_args(two), *strategy]
    done = subprocess.run(launch, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("Wrote ") == 1  # only the main process writes the output folder
    by_two = json.loads((tmp_path / "two" / "results.json").read_text())
    two_history = json.loads((tmp_path / "two" / LOG_HISTORY_FILE).read_text())

    by_one = _run(tiny_recipe(*common, "train.gradient_accumulation_steps=2", f"train.output_dir={tmp_path / 'one'}"))

    two_evals = [e for e in two_history if "eval_loss" in e]
    one_evals = [e for e in by_one["log_history"] if "eval_loss" in e]
    assert [e["step"] for e in two_evals] == [e["step"] for e in one_evals] == [6, 12]
    assert all(e["eval_num_samples"] == 32 for e in two_evals)
    for two_eval, one_eval in zip(two_evals, one_evals, strict=True):
        for key in ("eval_accuracy", "eval_f1", "eval_roc_auc", "eval_num_samples"):
            assert two_eval[key] == pytest.approx(one_eval[key], abs=1e-9)
        # All-reduce vs. accumulation sums in another order: float noise only (a DDP bug shows at ~1e-2).
        assert two_eval["eval_loss"] == pytest.approx(one_eval["eval_loss"], rel=1e-4)
    # The gathered in-loop eval of the 2-process run equals a one-process pass over the same final weights.
    final = two_evals[-1]
    for key in ("accuracy", "f1", "roc_auc", "num_samples"):
        assert final[f"eval_{key}"] == pytest.approx(by_two["eval"][key], abs=1e-9)
    two_losses = [e["loss"] for e in two_history if "loss" in e]
    np.testing.assert_allclose(two_losses, _history(by_one, "loss"), rtol=1e-4, atol=0)


@pytest.mark.slow
def test_accelerate_launch_with_the_repo_config_runs_a_recipe(tiny_recipe, tmp_path):
    config = tiny_recipe("train.loop=accelerate", "train.epochs=1")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(REPO / "accelerate_config.yaml")]
    launch += ["-m", "hftransfer", "train", *_cli_args(config)]
    done = subprocess.run(launch, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["loop"] == "accelerate" and results["global_steps"] == 12
    assert results["eval"]["num_samples"] == 32


_LAUNCHED_RUNS = """
import sys
from hftransfer.config.recipe import load_config
from hftransfer.training.pipeline import train
for recipe in sys.argv[1:]:
    train(load_config(recipe))
"""


def _short_batch_positions(config) -> list[int]:
    """Where the epoch's short batch falls in the (seed, epoch)-drawn bucketed order, for epochs 0 and 1."""
    from hftransfer.data.loaders import train_batch_sampler
    from hftransfer.training.pipeline import prepare

    rows = prepare(config).data.train
    sampler = train_batch_sampler(rows, config.data, config.train.batch_size, config.train.seed)
    positions = []
    for epoch in range(math.ceil(config.train.epochs)):
        sampler.set_epoch(epoch)
        positions += [i for i, batch in enumerate(sampler) if len(batch) < config.train.batch_size]
    return positions


@pytest.mark.slow
def test_two_processes_train_every_bucketed_batch_in_both_loops(tiny_bert_no_dropout, toy_text_files, tmp_path):
    """Issue "Reliability" item 1: with length-bucketed batches, a short batch in process 1's slot used to cost a
    whole round (Accelerate's even-batch sharding), so the last step, final evaluation and final checkpoint never
    came. Row counts and batch sizes where the short batch falls on process 1, and one where process 1 gets a
    stand-in in the last round: every step is taken, the final evaluation is logged, and the weights equal one
    process accumulating the same batches, in both loops."""
    from conftest import recipe_maker

    from hftransfer.config.recipe import save_config

    train_file, dev_file = toy_text_files
    lines = train_file.read_text().splitlines()
    cases = {"93x8": (93, 8, 1), "90x8-acc2": (90, 8, 2), "75x6": (75, 6, 1)}  # rows, batch, accumulation
    launched, expected, by_one = [], {}, {}
    for name, (rows, batch, accumulation) in cases.items():
        data = tmp_path / f"train-{rows}.tsv"
        data.write_text("\n".join(lines[: rows + 1]) + "\n")
        make = recipe_maker(tiny_bert_no_dropout, data, dev_file, tmp_path / "unused")
        for loop in ("accelerate", "trainer"):
            common = (f"train.batch_size={batch}", f"train.loop={loop}", "train.save_steps=1000",
                      "train.eval_steps=1000")  # fmt: skip
            two = make(*common, f"train.gradient_accumulation_steps={accumulation}",
                       f"train.output_dir={tmp_path / f'two-{name}-{loop}'}")  # fmt: skip
            save_config(two, tmp_path / f"{name}-{loop}.yaml")
            launched.append(str(tmp_path / f"{name}-{loop}.yaml"))
            one = make(*common, f"train.gradient_accumulation_steps={2 * accumulation}",
                       f"train.output_dir={tmp_path / f'one-{name}-{loop}'}")  # fmt: skip
            by_one[name, loop] = train(one)
        expected[name] = 2 * math.ceil(math.ceil(rows / batch) / (2 * accumulation))  # 2 epochs
    positions = {name: _short_batch_positions(load_config(launched[2 * i])) for i, name in enumerate(cases)}
    assert any(p % 2 == 1 for p in positions["93x8"] + positions["90x8-acc2"]), positions  # short batch on process 1
    assert math.ceil(75 / 6) % 2 == 1  # 13 batches: process 1 gets a stand-in in the last round

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    script = tmp_path / "launched_runs.py"
    script.write_text(_LAUNCHED_RUNS)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launch += ["--main_process_port", str(_free_port()), str(script), *launched]
    done = subprocess.run(launch, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, [line for line in done.stderr.splitlines() if "Error" in line][:10]

    for (name, loop), one in by_one.items():
        folder = tmp_path / f"two-{name}-{loop}"
        results = json.loads((folder / "results.json").read_text())
        history = results["log_history"]  # both loops record it in results.json
        steps = [e["step"] for e in history if "loss" in e and "eval_loss" not in e]
        assert steps == [e["step"] for e in one["log_history"] if "loss" in e and "eval_loss" not in e]
        assert results["global_steps"] == one["global_steps"] == expected[name], (name, loop)
        assert steps == list(range(1, expected[name] + 1)), (name, loop)  # logging_steps=1: every step taken once
        evals = [e for e in history if "eval_loss" in e]
        assert evals and evals[-1]["step"] == expected[name], (name, loop)  # the final evaluation came
        assert evals[-1]["eval_num_samples"] == 32
        one_weights = _weights(tmp_path / f"one-{name}-{loop}")
        for key, tensor in _weights(folder).items():
            torch.testing.assert_close(tensor, one_weights[key], rtol=1e-4, atol=1e-6, msg=key)
