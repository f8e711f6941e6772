"""The `hftransfer` entry point end to end on a tiny model: train, outputs, evaluate, predict, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from transformers import ResNetConfig, ResNetForImageClassification

from hftransfer.artifacts.saved import load_run
from hftransfer.cli import main
from hftransfer.config.recipe import load_config, save_config
from hftransfer.training.pipeline import train
from tests.conftest import recipe_maker, write_toy_text_files

REPO = Path(__file__).resolve().parents[1]
RESULT_KEYS = {
    "strategy",
    "loop",
    "model",
    "dataset",
    "eval",
    "trainable_params",
    "total_params",
    "train_runtime_s",
    "train_samples_per_second",
}


@pytest.fixture(scope="module")
def trained(tiny_bert_dir, tmp_path_factory):
    """One tiny run shared by the read-only checks below (training is the slow part)."""
    folder = tmp_path_factory.mktemp("trained")
    make = recipe_maker(tiny_bert_dir, *write_toy_text_files(folder), folder / "out")
    config = make("train.epochs=4", "train.learning_rate=1e-2")
    return config, train(config)


def test_train_writes_a_complete_output_folder(trained):
    config, _ = trained
    out = config.train.output_dir
    files = {p.name for p in Path(out).iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "config.yaml", "results.json", "labels.json"} <= files
    saved = json.loads(Path(out, "results.json").read_text())
    assert set(saved) >= RESULT_KEYS
    assert {"accuracy", "f1", "precision", "recall", "roc_auc", "confusion_matrix", "per_class"} <= set(saved["eval"])
    assert saved["trainable_params"] == saved["total_params"] > 0
    assert not Path(out + ".incomplete").exists()


def test_tiny_model_learns_the_toy_task(trained):
    _, results = trained
    losses = results["train_losses"]
    assert np.mean(losses[-4:]) < np.mean(losses[:4])
    assert results["eval"]["accuracy"] >= 0.8


def test_rerunning_the_saved_config_reproduces_the_run(trained, tmp_path):
    config, results = trained
    again = load_run(config.train.output_dir).config
    again.train.output_dir = str(tmp_path / "again")
    assert train(again)["eval"] == results["eval"]


def test_evaluate_command_rescored_metrics_match_training(trained, capsys):
    config, results = trained
    assert main(["evaluate", config.train.output_dir]) == 0
    rescored = json.loads(capsys.readouterr().out)
    assert rescored["accuracy"] == pytest.approx(results["eval"]["accuracy"])
    assert rescored["roc_auc"] == pytest.approx(results["eval"]["roc_auc"])


def test_evaluate_on_another_file(trained, capsys):
    config, _ = trained
    assert main(["evaluate", config.train.output_dir, "--file", config.data.train_file]) == 0
    assert json.loads(capsys.readouterr().out)["num_samples"] == 96


def test_predict_from_args_file_and_stdin_agree(trained, tmp_path, capsys, monkeypatch):
    config, _ = trained
    texts = ["the film was great and great", "the film was awful awful"]
    assert main(["predict", config.train.output_dir, *texts]) == 0
    from_args = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["label"] for r in from_args] == ["1", "0"]
    assert all(abs(sum(r["scores"].values()) - 1) < 1e-5 for r in from_args)

    source = tmp_path / "texts.txt"
    source.write_text("\n".join(texts) + "\n")
    out = tmp_path / "pred.jsonl"
    assert main(["predict", config.train.output_dir, "--file", str(source), "--output", str(out)]) == 0
    assert [json.loads(line) for line in out.read_text().splitlines()] == from_args

    with open(source) as stdin:
        monkeypatch.setattr(sys, "stdin", stdin)
        assert main(["predict", config.train.output_dir]) == 0
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == from_args


def test_existing_output_folder_is_never_overwritten_silently(tiny_recipe, tmp_path, capsys):
    config = tiny_recipe("train.max_steps=1")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier results")
    recipe = tmp_path / "recipe.yaml"
    save_config(config, recipe)
    assert main(["train", str(recipe)]) == 2
    assert "overwrite_output_dir" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "earlier results"

    assert main(["train", str(recipe), "train.overwrite_output_dir=true"]) == 0
    assert not (out / "keep.txt").exists() and (out / "results.json").exists()


def test_unknown_key_fails_before_any_model_loads(capsys):
    assert main(["train", "train.epocs=1", "model.name_or_path=/does/not/exist"]) == 2
    assert "Did you mean 'epochs'" in capsys.readouterr().err


def test_num_labels_contradicting_the_data(tiny_recipe, capsys, tmp_path):
    recipe = tmp_path / "r.yaml"
    save_config(tiny_recipe("model.num_labels=3"), recipe)
    assert main(["train", str(recipe)]) == 2
    assert "model.num_labels is 3 but the training data has 2 classes" in capsys.readouterr().err


def test_non_classification_checkpoint_is_rejected(tiny_recipe, tmp_path, capsys):
    vision = tmp_path / "resnet"
    ResNetForImageClassification(ResNetConfig(hidden_sizes=[8, 16], depths=[1, 1], embedding_size=8)).save_pretrained(
        vision
    )
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(tiny_recipe().model.name_or_path).save_pretrained(vision)
    recipe = tmp_path / "r.yaml"
    save_config(tiny_recipe(f"model.name_or_path={vision}", "task=text-classification"), recipe)
    assert main(["train", str(recipe)]) == 2
    assert "no sequence-classification head" in capsys.readouterr().err


def test_python_dash_m_entry_point_runs():
    done = subprocess.run([sys.executable, "-m", "hftransfer", "train", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "overrides" in done.stdout


def test_config_prints_every_key_with_type_default_and_help(capsys):
    recipe = str(REPO / "recipes" / "text-sst2-minilm-full.yaml")
    assert main(["config", recipe, "num_train_epochs=1"]) == 0
    out = capsys.readouterr().out
    line = next(row for row in out.splitlines() if row.strip().startswith("epochs:"))
    assert line.split("#")[0].strip() == "epochs: 1.0" and "float, default 3.0" in line
    assert "Evaluate every N steps" in out and "trainer_args: {}" in out
    assert main(["config", recipe, "--yaml", "bf16=true"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["train"]["precision"] == "bf16" and "bf16" not in resolved
    assert load_config(None, []).train.epochs == 3.0
    assert main(["config", "epochs=1"]) == 2
    assert "Did you mean 'train.epochs'" in capsys.readouterr().err


def test_help_and_version_load_neither_torch_nor_transformers():
    code = (
        "import sys, contextlib, io\n"
        "import hftransfer.cli as cli\n"
        "for argv in (['--help'], ['train', '--help'], ['--version']):\n"
        "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "        cli.main(argv)\n"
        "    assert out.getvalue(), argv\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers'))\n"
        "assert not heavy, heavy[:5]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    out = subprocess.run([sys.executable, "-m", "hftransfer", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("hftransfer ")


def test_verbosity_flags_and_environment_set_both_loggers(monkeypatch):
    import logging

    from transformers.utils import logging as hf_logging

    from hftransfer.cli import configure_logging

    monkeypatch.delenv("HFTRANSFER_VERBOSITY", raising=False)
    before = hf_logging.get_verbosity()
    try:
        assert configure_logging(0, 0) == "info"
        assert configure_logging(1, 0) == "debug" and hf_logging.get_verbosity() == logging.INFO
        assert configure_logging(0, 2) == "error" and hf_logging.get_verbosity() == logging.ERROR
        monkeypatch.setenv("HFTRANSFER_VERBOSITY", "warning")
        assert configure_logging(0, 0) == "warning" and logging.getLogger("hftransfer").level == logging.WARNING
    finally:
        hf_logging.set_verbosity(before)
        monkeypatch.delenv("HFTRANSFER_VERBOSITY")
        configure_logging(0, 0)
    assert len(logging.getLogger("hftransfer").handlers) == 1
    assert not logging.getLogger().handlers or all(h.__class__.__module__ != "hftransfer.cli" for h in
                                                   logging.getLogger().handlers)  # fmt: skip
    assert "-q" in subprocess.run([sys.executable, "-m", "hftransfer", "train", "--help"], capture_output=True,
                                  text=True).stdout  # fmt: skip
