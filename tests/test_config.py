"""Recipes: schema checks, overrides, and every shipped recipe validates."""

from __future__ import annotations

from pathlib import Path

import pytest

from hftransfer.config.recipe import RunConfig, load_config, save_config
from hftransfer.config.schema import ConfigError

RECIPES = sorted(Path(__file__).resolve().parent.parent.joinpath("recipes").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_validates(recipe):
    assert isinstance(load_config(recipe), RunConfig)


def test_overrides_are_typed_and_nested():
    config = load_config(None, ["train.learning_rate=3e-4", "train.epochs=1", "data.text_columns=[a, b]"])
    assert config.train.learning_rate == pytest.approx(3e-4)
    assert isinstance(config.train.epochs, float)
    assert config.data.text_columns == ["a", "b"]


def test_unknown_key_names_the_closest_valid_one():
    with pytest.raises(ConfigError, match=r"train\.learning_rat.*Did you mean 'learning_rate'"):
        load_config(None, ["train.learning_rat=1e-4"])


def test_unknown_key_in_yaml_is_rejected(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data:\n  text_column: sentence\n")
    with pytest.raises(ConfigError, match="Did you mean 'text_columns'"):
        load_config(recipe)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.batch_size=big", "expects an integer"),
        ("train.overwrite_output_dir=maybe", "expects true or false"),
        ("train.loop=keras", "must be one of"),
        ("train.batch_size=0", "at least 1"),
        ("strategy.name=magic", "unknown"),
    ],
)
def test_bad_values_fail_with_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_override_without_equals_sign_is_rejected():
    with pytest.raises(ConfigError, match=r"key\.sub=value"):
        load_config(None, ["train.epochs"])


def test_saved_config_round_trips(tmp_path):
    config = load_config(RECIPES[0], ["train.seed=7"])
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config


ALIAS_PAIRS = [
    (["num_train_epochs=3"], ["train.epochs=3"]),
    (["train.num_train_epochs=3"], ["train.epochs=3"]),
    (["per_device_train_batch_size=8", "train.per_device_eval_batch_size=16"],
     ["train.batch_size=8", "train.eval_batch_size=16"]),
    (["bf16=true"], ["train.precision=bf16"]),
    (["fp16=false"], ["train.precision=fp32"]),
    (["metric_for_best_model=eval_f1", "load_best_model_at_end=true"],
     ["train.best_metric=f1", "train.load_best_at_end=true"]),
    (["eval_strategy=steps", "eval_steps=50"], ["train.eval_steps=50"]),
    (["push_to_hub=true", "hub_model_id=me/model", "hub_private_repo=true"],
     ["hub.push=true", "hub.repo_id=me/model", "hub.private=true"]),
    (["learning_rate=2e-5", "dataloader_num_workers=2", "report_to=none"],
     ["train.learning_rate=2e-5", "train.num_workers=2", "train.report_to=[]"]),
]  # fmt: skip


@pytest.mark.parametrize(("aliases", "canonical"), ALIAS_PAIRS, ids=lambda pair: " ".join(pair))
def test_a_training_arguments_alias_saves_the_recipe_its_key_does(tmp_path, aliases, canonical):
    by_alias, by_key = tmp_path / "alias.yaml", tmp_path / "key.yaml"
    save_config(load_config(RECIPES[0], aliases), by_alias)
    save_config(load_config(RECIPES[0], canonical), by_key)
    assert by_alias.read_text() == by_key.read_text()


def test_aliases_in_a_recipe_file_land_on_their_keys(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("num_train_epochs: 2\nbf16: true\ntrain:\n  per_device_train_batch_size: 4\n")
    config = load_config(recipe)
    assert (config.train.epochs, config.train.precision, config.train.batch_size) == (2.0, "bf16", 4)
    save_config(config, tmp_path / "saved.yaml")
    saved = (tmp_path / "saved.yaml").read_text()
    assert "num_train_epochs" not in saved and "per_device" not in saved and "bf16:" not in saved


@pytest.mark.parametrize(
    "text",
    [
        "num_train_epochs: 2\ntrain:\n  epochs: 1\n",
        "train:\n  num_train_epochs: 2\n  epochs: 1\n",
        "bf16: true\nfp16: true\n",
        "bf16: false\ntrain:\n  precision: bf16\n",
    ],
)
def test_an_alias_contradicting_its_key_in_one_recipe_is_an_error(tmp_path, text):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    with pytest.raises(ConfigError, match="twice, differently"):
        load_config(recipe)


def test_an_alias_agreeing_with_its_key_is_fine(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("num_train_epochs: 2\ntrain:\n  epochs: 2.0\n")
    assert load_config(recipe).train.epochs == 2.0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("epochs=1", r"Did you mean 'train\.epochs'\? Keys live in their section"),
        ("epoch=1", r"Did you mean 'train\.epochs'\?"),
        ("batchsize=8", r"Did you mean 'train\.batch_size'\?"),
        ("train.num_train_epoch=1", r"Did you mean 'num_train_epochs' \(hftransfer's train\.epochs\)"),
        ("train.gradient_checkpointing=true", r"train\.trainer_args\.gradient_checkpointing=VALUE"),
        ("save_strategy=no", r"does not take: set train\.save_steps"),
        ("eval_strategy=steps", r"needs eval_steps"),
    ],
)
def test_unknown_keys_point_to_the_right_one(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_trainer_args_are_checked_against_the_installed_training_arguments():
    config = load_config(None, ["train.trainer_args.gradient_checkpointing=true", "train.trainer_args.run_name=x"])
    assert config.train.trainer_args == {"gradient_checkpointing": True, "run_name": "x"}
    with pytest.raises(ConfigError, match="Close names: optim"):
        load_config(None, ["train.trainer_args.optimm=adamw_torch"])
    with pytest.raises(ConfigError, match=r"hftransfer's train\.learning_rate"):
        load_config(None, ["train.trainer_args.learning_rate=1e-4"])
    with pytest.raises(ConfigError, match="torch_compile"):
        load_config(None, ["train.loop=accelerate", "train.trainer_args.torch_compile=true"])
    accelerate = ["train.loop=accelerate", "train.trainer_args.label_smoothing_factor=0.1"]
    assert load_config(None, accelerate).train.trainer_args == {"label_smoothing_factor": 0.1}


def test_label_smoothing_is_the_smoothed_cross_entropy_in_the_strategy_loss():
    import torch
    import torch.nn.functional as F

    from hftransfer.strategies.base import Runtime, Strategy

    class Fixed(torch.nn.Module):
        def forward(self, **inputs):
            return type("Out", (), {"logits": inputs["x"]})()

    strategy = Strategy()
    strategy.bind(Runtime(label_smoothing=0.2))
    x, y = torch.tensor([[2.0, -1.0], [0.5, 0.4]]), torch.tensor([0, 1])
    loss, _ = strategy.loss(Fixed(), {"x": x, "labels": y})
    torch.testing.assert_close(loss, F.cross_entropy(x, y, label_smoothing=0.2))
    assert not torch.isclose(loss, F.cross_entropy(x, y))
