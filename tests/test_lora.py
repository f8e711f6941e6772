"""The LoRA strategy: only adapter and head weights train, the adapter folder reloads to the same
logits, merged export matches the adapter, and a bad target module fails early."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from hftransfer.artifacts.saved import LABELS_FILE, RECIPE_FILE, load_run
from hftransfer.cli import main
from hftransfer.config.recipe import save_config
from hftransfer.data.labels import LabelMap
from hftransfer.models.loading import load_classifier
from hftransfer.strategies import build_strategy
from hftransfer.strategies.lora.strategy import AdapterError, LoraConfig, LoraFineTuning
from hftransfer.training.pipeline import train

LABELS = LabelMap(names=("0", "1"), raw_values=(0, 1))
TEXTS = ["the film was great", "awful and boring, truly terrible", "ok"]


def adapted(config):
    """The strategy's model on the recipe's base, with adapter and head weights moved off their init."""
    strategy = build_strategy(config.strategy)
    model = strategy.prepare(load_classifier(config.model, LABELS))
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)  # lora_B starts at zero: make the adapter matter
    return strategy, model.eval()


def save_like_a_run(strategy, model, config, folder: Path) -> Path:
    folder.mkdir()
    strategy.save(model, folder)
    AutoTokenizer.from_pretrained(config.model.name_or_path).save_pretrained(folder)
    save_config(config, folder / RECIPE_FILE)
    (folder / LABELS_FILE).write_text(json.dumps({"names": list(LABELS.names), "raw_values": [0, 1]}))
    return folder


def logits_of(model, tokenizer) -> torch.Tensor:
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model.eval()(**batch).logits


def test_only_adapter_and_head_weights_get_gradients(tiny_recipe):
    _, model = adapted(tiny_recipe("strategy.name=lora"))
    model.train()
    ids = torch.randint(0, 100, (4, 9))
    model(input_ids=ids).logits.sum().backward()
    with_grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert with_grads == trainable
    assert all(".lora_" in n or ".modules_to_save." in n for n in trainable), trainable
    assert any(".query.lora_A" in n for n in trainable) and any(".value.lora_B" in n for n in trainable)
    assert not any(".key." in n for n in trainable)
    assert {n for n in trainable if "modules_to_save" in n} == {
        "base_model.model.classifier.modules_to_save.default.weight",
        "base_model.model.classifier.modules_to_save.default.bias",
    }


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["strategy.lora.use_dora=true", "model.pooling=mean"],
        ["strategy.lora.method=ia3"],
    ],
    ids=["lora", "dora-mean-pooling", "ia3"],
)
def test_adapter_folder_reloads_to_identical_logits_and_merges(tiny_recipe, tmp_path, overrides):
    config = tiny_recipe("strategy.name=lora", *overrides)
    strategy, model = adapted(config)
    folder = save_like_a_run(strategy, model, config, tmp_path / "run")
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in folder.iterdir()}
    assert not (folder / "model.safetensors").exists()

    tokenizer = AutoTokenizer.from_pretrained(folder)
    expected = logits_of(model, tokenizer)
    assert torch.equal(logits_of(load_run(folder).model, tokenizer), expected)

    assert main(["export", str(folder), "--merge", "--out", str(tmp_path / "merged")]) == 0
    merged = load_run(tmp_path / "merged")
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    assert not hasattr(merged.model, "peft_config")
    assert torch.allclose(logits_of(merged.model, tokenizer), expected, atol=1e-5)


def test_export_of_an_adapter_without_merge_is_refused(tiny_recipe, tmp_path, capsys):
    config = tiny_recipe("strategy.name=lora")
    folder = save_like_a_run(*adapted(config), config, tmp_path / "run")
    assert main(["export", str(folder), "--out", str(tmp_path / "x")]) == 2
    assert "--merge" in capsys.readouterr().err


def test_bad_target_module_fails_early_listing_available_names(tiny_recipe):
    config = tiny_recipe("strategy.name=lora", "strategy.lora.target_modules=[query, qkv_proj]")
    model = load_classifier(config.model, LABELS)
    with pytest.raises(AdapterError, match=r"\['qkv_proj'\] match no module") as err:
        LoraFineTuning(config.strategy.lora).prepare(model)
    assert "'query'" in str(err.value) and "'value'" in str(err.value) and "'dense'" in str(err.value)


def test_empty_target_list_is_a_config_error():
    with pytest.raises(ValueError, match="target_modules is an empty list"):
        LoraConfig(target_modules=[])


def test_lora_run_end_to_end_and_evaluate_loads_the_adapter(tiny_recipe, capsys):
    config = tiny_recipe("strategy.name=lora", "train.learning_rate=1e-2", "train.max_steps=6")
    results = train(config)
    assert results["strategy"] == "lora"
    assert 0 < results["trainable_share"] < 0.5
    out = Path(config.train.output_dir)
    assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
    assert results["checkpoint_size_bytes"] == (out / "adapter_model.safetensors").stat().st_size
    capsys.readouterr()  # drop the training log lines
    assert main(["evaluate", str(out)]) == 0
    rescored = json.loads(capsys.readouterr().out)
    assert rescored["accuracy"] == results["eval"]["accuracy"]
    assert rescored["roc_auc"] == pytest.approx(results["eval"]["roc_auc"], abs=1e-6)
