"""The Python front door (`hftransfer.finetune`) and the pieces in a hand-written Trainer setup."""

from __future__ import annotations

import random

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, BertForSequenceClassification, Trainer, TrainingArguments

import hftransfer
from hftransfer.config import ConfigError, StrategyConfig, load_config
from hftransfer.data import DynamicPaddingCollator, prepare_text_data
from hftransfer.errors import UserError
from hftransfer.models.loading import ModelError
from hftransfer.strategies import build_strategy
from hftransfer.strategies.distill.config import DistillConfig
from hftransfer.strategies.distill.strategy import DistillStrategy
from hftransfer.strategies.frozen.config import FrozenConfig
from hftransfer.strategies.lora.config import LoraConfig
from hftransfer.training.pipeline import train

FAST = {"num_train_epochs": 2, "learning_rate": 1e-3, "precision": "fp32", "per_device_train_batch_size": 8}


def _reviews(n: int, seed: int = 0) -> pd.DataFrame:
    """A notebook's DataFrame: a `review` text column and string `stars` labels (no recipe names anywhere)."""
    rng = random.Random(seed)
    good, bad = ["great", "good", "lovely", "superb"], ["awful", "bad", "boring", "terrible"]
    rows = []
    for _ in range(n):
        positive = rng.random() < 0.5
        word = rng.choice(good if positive else bad)
        rows.append(
            {"review": f"the film was {word} {'and ' * rng.randint(0, 3)}{word}", "stars": "5" if positive else "1"}
        )
    return pd.DataFrame(rows)


def test_finetune_a_dataframe_and_reproduce_it_from_the_saved_recipe(tiny_bert_dir, tmp_path):
    run = hftransfer.finetune(tiny_bert_dir, _reviews(96), _reviews(32, seed=1), label_column="stars", **FAST)
    assert run.config.data.text_columns == ["review"]  # the one text column, found without being named
    assert run.labels.names == ("1", "5") and run.output_dir is None
    assert run.metrics["num_samples"] == 32 and run.results["global_steps"] == 24
    predictions = run.predict(["the film was superb", "the film was awful"])
    assert [set(p["scores"]) for p in predictions] == [{"1", "5"}] * 2
    assert predictions[0]["review"] == "the film was superb"

    recipe = run.save_recipe(tmp_path / "notebook.yaml")
    assert (tmp_path / "notebook-data" / "train.jsonl").is_file()
    again = train(load_config(recipe, [f"train.output_dir={tmp_path / 'again'}"]))
    assert again["eval"] == run.metrics  # the recipe (data written beside it) reproduces the run exactly
    saved = load_file(tmp_path / "again" / "model.safetensors")
    trained = run.model.state_dict()
    assert all(torch.equal(saved[name], trained[name]) for name in saved)


def test_finetune_a_loaded_model_on_rows_with_a_strategy_config_writes_the_output_folder(tiny_bert_dir, tmp_path):
    model = BertForSequenceClassification.from_pretrained(tiny_bert_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    rows = _reviews(64).rename(columns={"review": "text", "stars": "label"}).to_dict("records")
    run = hftransfer.finetune(
        model, rows, strategy=LoraConfig(r=4), processor=tokenizer, output_dir=tmp_path / "out", **FAST
    )
    assert run.config.strategy.name == "lora" and run.config.strategy.lora.r == 4
    assert run.output_dir == tmp_path / "out" and (tmp_path / "out" / "adapter_config.json").is_file()
    assert run.metrics["num_samples"] == 7  # no eval given: data.validation_size (0.1) of train held out
    assert run.results["trainable_params"] < run.results["total_params"] / 2


def test_finetune_refuses_what_it_cannot_do_with_a_clear_message(tiny_bert_dir):
    frame = _reviews(32).rename(columns={"review": "text", "stars": "label"})
    with pytest.raises(ConfigError, match=r"Unknown option 'epoch'.*epochs"):
        hftransfer.finetune(tiny_bert_dir, frame, epoch=1)
    with pytest.raises(ConfigError, match=r"'revision' is in \['model.revision', 'hub.revision'\]"):
        hftransfer.finetune(tiny_bert_dir, frame, revision="main")
    three_outputs = BertForSequenceClassification.from_pretrained(
        tiny_bert_dir, num_labels=3, ignore_mismatched_sizes=True
    )
    with pytest.raises(ModelError, match="3 outputs but the data has 2 classes"):
        hftransfer.finetune(three_outputs, frame, processor=AutoTokenizer.from_pretrained(tiny_bert_dir), **FAST)
    with pytest.raises(ConfigError, match="pandas DataFrame"):
        hftransfer.finetune(tiny_bert_dir, 42)


def test_distil_from_an_in_memory_teacher(tiny_bert_dir, tmp_path):
    teacher = hftransfer.finetune(tiny_bert_dir, _reviews(96), _reviews(32, seed=1), label_column="stars",
                                  **{**FAST, "num_train_epochs": 5, "learning_rate": 3e-3})  # fmt: skip
    assert teacher.metrics["accuracy"] >= 0.9
    strategy = DistillStrategy(
        DistillConfig(measure_latency=False), teacher=teacher.model, teacher_tokenizer=teacher.processor
    )
    student = hftransfer.finetune(
        tiny_bert_dir, _reviews(96), _reviews(32, seed=1), strategy=strategy, label_column="stars", **FAST
    )
    assert student.config.strategy.name == "distill"
    assert student.results["distill"]["teacher"]["accuracy"] == pytest.approx(teacher.metrics["accuracy"])


def _own_setup(tiny_bert_dir, toy_text_files):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    train_file, dev_file = toy_text_files
    from hftransfer.config import DataConfig

    data = prepare_text_data(DataConfig(train_file=str(train_file), validation_file=str(dev_file)), tokenizer)
    model = BertForSequenceClassification.from_pretrained(tiny_bert_dir)
    return tokenizer, data, model


def test_strategy_trainer_runs_a_strategy_in_a_hand_written_trainer_setup(tiny_bert_dir, toy_text_files, tmp_path):
    tokenizer, data, model = _own_setup(tiny_bert_dir, toy_text_files)
    strategy = build_strategy(StrategyConfig("frozen", frozen=FrozenConfig(frozen_blocks=1, unfreeze_every=1,
                                                                          unfreeze_unit="steps")))  # fmt: skip
    model = strategy.prepare(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    args = TrainingArguments(str(tmp_path / "own"), max_steps=3, per_device_train_batch_size=8, report_to="none",
                             use_cpu=True, learning_rate=1e-3, save_strategy="no")  # fmt: skip
    common = {
        "train_dataset": data.train,
        "eval_dataset": data.validation,
        "data_collator": DynamicPaddingCollator(tokenizer),
    }
    with pytest.raises(UserError, match=r"frozen strategy.*StrategyTrainer"):  # a plain Trainer would never unfreeze
        Trainer(model, args, **common).train()
    trainer = hftransfer.StrategyTrainer(model, args, strategy=strategy, **common)
    trainer.train()
    assert not strategy.frozen  # its per-step hook ran: every block is unfrozen by now
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert any("layer.0." in k for k in changed)  # the block frozen at the start trained after unfreezing
    assert trainer.evaluate()["eval_num_samples"] == 32


def test_a_plain_trainer_refuses_a_distillation_student(tiny_bert_dir, toy_text_files, tmp_path):
    tokenizer, data, model = _own_setup(tiny_bert_dir, toy_text_files)
    teacher = BertForSequenceClassification.from_pretrained(tiny_bert_dir)
    strategy = DistillStrategy(DistillConfig(), teacher=teacher)
    model = strategy.prepare(model)
    args = TrainingArguments(str(tmp_path / "own"), max_steps=1, report_to="none", use_cpu=True, save_strategy="no")
    with pytest.raises(UserError, match="distill strategy"):
        Trainer(model, args, train_dataset=data.train, data_collator=DynamicPaddingCollator(tokenizer)).train()
    batch = DynamicPaddingCollator(tokenizer)([data.train[i] for i in range(4)])
    loss, _ = strategy.loss(model.train(), batch)  # the strategy's own loss is the way in
    assert torch.isfinite(loss)


def test_a_test_split_is_scored_at_the_end_beside_validation(tiny_recipe, toy_text_files, tmp_path):
    from hftransfer.artifacts.saved import load_run
    from hftransfer.evaluation.scoring import evaluate_run
    from hftransfer.training.pipeline import format_report

    _, dev = toy_text_files
    results = train(tiny_recipe("train.epochs=1", f"data.test_file={dev}", f"train.output_dir={tmp_path / 'out'}"))
    assert results["test"]["num_samples"] == 32
    assert results["test"] == evaluate_run(load_run(tmp_path / "out"), split="test")  # what `evaluate` says
    assert "test: accuracy=" in format_report(results)
    assert "| metric | validation | test |" in (tmp_path / "out" / "README.md").read_text()
