"""`hftransfer shift` on a trained output folder: a LoRA run (merged on the fly) measured after its base model, on
two splits of one recipe that the report names. PAD itself on synthetic features: tests/test_rank_shift.py."""

from __future__ import annotations

import json

from hftransfer.analysis.shift import models_to_measure
from hftransfer.cli import main
from hftransfer.config.recipe import save_config
from hftransfer.training.pipeline import train


def test_shift_measures_a_trained_lora_folder_after_its_base_and_names_both_splits(
    tiny_recipe, tiny_bert_dir, tmp_path, capsys
):
    config = tiny_recipe("strategy.name=lora", "train.epochs=1", "train.batch_size=16")
    train(config)
    run = config.train.output_dir
    recipe = tmp_path / "recipe.yaml"
    save_config(config, recipe)
    out = tmp_path / "shift.json"
    args = ["shift", "--source", str(recipe), "--target", str(recipe), "--target-split", "validation",
            "--model", run, "--permutations", "20", "--folds", "3", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    models = report["models"]
    assert [m["model"] for m in models] == [str(tiny_bert_dir), run]  # the base first: before, then after training
    assert models[0]["role"].startswith(f"base of {run}") and models[1]["role"].startswith("trained output folder")
    assert report["model"] == run and report["proxy_a_distance"] == models[1]["proxy_a_distance"]
    for entry in models:
        pad = entry["proxy_a_distance"]
        assert 0.0 <= pad["ci_low"] <= pad["pad"] <= pad["ci_high"] <= 2.0 and pad["folds"] == 3
    assert report["rows"] == {"source": 96, "target": 32}
    train_file, dev_file = config.data.train_file, config.data.validation_file
    assert f"source: {recipe}, split 'train' (data.train_file={train_file}), 96 rows" in printed
    assert f"target: {recipe}, split 'validation' (data.validation_file={dev_file}), 32 rows" in printed
    assert report["target"]["split"] == "validation" and dev_file in report["target"]["reads"]
    assert printed.count("proxy A-distance:") == 2
    assert f"training moved PAD {models[0]['proxy_a_distance']['pad']:.3f}" in printed

    assert models_to_measure([run], with_bases=False) == [(run, models[1]["role"])]
    assert main([*args[:-2], "--no-base"]) == 0
    assert capsys.readouterr().out.count("proxy A-distance:") == 1
