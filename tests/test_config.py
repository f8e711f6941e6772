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
