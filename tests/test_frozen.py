"""The frozen strategy: trainable sets per mode, frozen weights untouched, eval-mode frozen parts,
gradual unfreezing on schedule, layer-wise learning rates, and mean pooling."""

from __future__ import annotations

from collections.abc import Callable
from unittest import mock

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import BertConfig, BertForSequenceClassification, GPT2Config, GPT2ForSequenceClassification

from hftransfer.artifacts.saved import load_run
from hftransfer.config.schema import ConfigError
from hftransfer.evaluation.scoring import evaluate_run
from hftransfer.models.layers import LayerGroupError
from hftransfer.models.pooling import apply_pooling, masked_mean
from hftransfer.strategies.frozen.feature_cache import FrozenPrefixCache
from hftransfer.strategies.frozen.strategy import FrozenConfig, FrozenFineTuning
from hftransfer.training.pipeline import train


def tiny_bert(layers: int = 4) -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=2,
    )
    return BertForSequenceClassification(config)


def trainable_prefixes(model) -> set[str]:
    """Which top-level groups train: 'embeddings', 'layer.<i>', 'pooler', 'classifier'."""
    out = set()
    for name, p in model.named_parameters():
        if p.requires_grad:
            parts = name.split(".")
            out.add(
                f"layer.{parts[3]}"
                if parts[1:3] == ["encoder", "layer"]
                else parts[1]
                if parts[0] == "bert"
                else parts[0]
            )
    return out


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (FrozenConfig(mode="head_only"), {"pooler", "classifier"}),
        (FrozenConfig(frozen_blocks=1), {"layer.1", "layer.2", "layer.3", "pooler", "classifier"}),
        (FrozenConfig(frozen_blocks=-1), {"layer.3", "pooler", "classifier"}),
        (FrozenConfig(), {"layer.2", "layer.3", "pooler", "classifier"}),  # default: bottom half
        (FrozenConfig(frozen_blocks=0), {"layer.0", "layer.1", "layer.2", "layer.3", "pooler", "classifier"}),
    ],
)
def test_trainable_set_is_what_the_mode_says(config, expected):
    model = FrozenFineTuning(config).prepare(tiny_bert())
    assert trainable_prefixes(model) == expected


def test_frozen_blocks_out_of_range_and_unknown_architecture_fail_clearly():
    with pytest.raises(ConfigError, match="frozen_blocks=5 does not fit a model with 4 blocks"):
        FrozenFineTuning(FrozenConfig(frozen_blocks=5)).prepare(tiny_bert())
    gpt2 = GPT2ForSequenceClassification(GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=50, n_positions=16))
    with pytest.raises(LayerGroupError, match="'gpt2' models \\(GPT2ForSequenceClassification\\)"):
        FrozenFineTuning(FrozenConfig()).prepare(gpt2)


def test_frozen_parts_run_in_eval_mode_while_training():
    model = FrozenFineTuning(FrozenConfig(frozen_blocks=2)).prepare(tiny_bert())
    model.train()
    captured: dict[str, list[torch.Tensor]] = {"frozen": [], "trained": []}
    model.bert.encoder.layer[1].register_forward_hook(lambda m, a, out: captured["frozen"].append(out[0]))
    model.bert.encoder.layer[3].register_forward_hook(lambda m, a, out: captured["trained"].append(out[0]))
    ids = torch.randint(0, 50, (4, 12))
    model(input_ids=ids)
    model(input_ids=ids)
    assert not model.bert.embeddings.training and not model.bert.encoder.layer[1].training
    assert model.bert.encoder.layer[2].training and model.classifier.training
    assert torch.equal(*captured["frozen"])  # no dropout below the cut
    assert not torch.equal(*captured["trained"])  # dropout still active above it


def test_layerwise_learning_rates_follow_the_decay_formula():
    strategy = FrozenFineTuning(FrozenConfig(frozen_blocks=1, layerwise_lr_decay=0.5))
    model = strategy.prepare(tiny_bert())
    groups = strategy.parameter_groups(model, learning_rate=1.0, weight_decay=0.1)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    wd_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert id(p) not in lr_of, name
            continue
        depth = 4 - int(name.split(".")[3]) if ".encoder.layer." in name else 0  # head/pooler: 0, top block: 1
        assert lr_of[id(p)] == pytest.approx(0.5**depth), name
        assert wd_of[id(p)] == (0.0 if "bias" in name or "LayerNorm" in name else 0.1), name
    assert sorted({round(g["lr"], 6) for g in groups}) == [0.125, 0.25, 0.5, 1.0]


def test_gradual_unfreezing_follows_the_schedule():
    strategy = FrozenFineTuning(FrozenConfig(mode="head_only", unfreeze_every=2, unfreeze_unit="epochs"))
    model = strategy.prepare(tiny_bert())
    seen = {}
    for step in range(0, 40):
        strategy.on_step(model, step, steps_per_epoch=3)
        seen[step] = trainable_prefixes(model) - {"pooler", "classifier"}
    top_down = ["layer.3", "layer.2", "layer.1", "layer.0", "embeddings"]
    for step, trainable in seen.items():
        assert trainable == set(top_down[: min(step // 6, 5)]), step
    assert strategy.frozen == []


def test_trained_run_leaves_frozen_weights_bit_identical(tiny_recipe, tiny_bert_dir):
    config = tiny_recipe("strategy.name=frozen", "strategy.frozen.frozen_blocks=1", "train.max_steps=6")
    train(config)
    before = load_file(tiny_bert_dir / "model.safetensors")
    after = load_file(f"{config.train.output_dir}/model.safetensors")
    for name, tensor in after.items():
        frozen = name.startswith(("bert.embeddings.", "bert.encoder.layer.0."))
        assert torch.equal(tensor, before[name]) == frozen, name


def test_unfrozen_block_trains_only_after_its_turn(tiny_recipe, tiny_bert_dir):
    config = tiny_recipe(
        "strategy.name=frozen",
        "strategy.frozen.mode=head_only",
        "strategy.frozen.unfreeze_every=4",
        "strategy.frozen.unfreeze_unit=steps",
        "train.max_steps=6",
    )
    train(config)
    before = load_file(tiny_bert_dir / "model.safetensors")
    after = load_file(f"{config.train.output_dir}/model.safetensors")
    changed = {name for name in after if not torch.equal(after[name], before[name])}
    layer1 = {n for n in after if n.startswith("bert.encoder.layer.1.")}
    assert layer1 <= changed  # unfrozen at step 4, trained in steps 5-6
    assert not any(n.startswith(("bert.embeddings.", "bert.encoder.layer.0.")) for n in changed)


def test_mean_pooling_averages_over_the_attention_mask():
    model = apply_pooling(tiny_bert(2), "mean").eval()
    assert model.bert.pooler is None
    ids = torch.randint(1, 50, (2, 7))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    logits = model(input_ids=ids, attention_mask=mask).logits
    hidden = model.bert(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.allclose(logits, model.classifier(masked_mean(hidden, mask)), atol=1e-6)
    short = model(input_ids=ids[1:, :4], attention_mask=mask[1:, :4]).logits  # padding changes nothing
    assert torch.allclose(short, logits[1:], atol=1e-5)


def test_mean_pooling_survives_save_and_reload(tiny_recipe):
    config = tiny_recipe(
        "strategy.name=frozen", "strategy.frozen.mode=head_only", "model.pooling=mean", "train.max_steps=3"
    )
    results = train(config)
    run = load_run(config.train.output_dir)
    assert run.model.bert.pooler is None
    rescored = evaluate_run(run)
    assert rescored["accuracy"] == results["eval"]["accuracy"]
    assert rescored["roc_auc"] == pytest.approx(results["eval"]["roc_auc"], abs=1e-6)
    assert results["trainable_params"] == 32 * 2 + 2  # the linear probe only


def _train_counting_calls(config, watched: Callable[[nn.Module], nn.Module]) -> tuple[dict, FrozenFineTuning, list]:
    """Train with the recipe's frozen strategy, counting forward calls of the module `watched` picks out."""
    strategy = FrozenFineTuning(config.strategy.frozen)
    calls: list[int] = []
    original_prepare = strategy.prepare

    def prepare(model):
        model = original_prepare(model)
        watched(model).register_forward_hook(lambda *a: calls.append(1))
        return model

    strategy.prepare = prepare
    with mock.patch("hftransfer.training.pipeline.build_strategy", return_value=strategy):
        results = train(config)
    return results, strategy, calls


def test_head_only_feature_cache_runs_the_backbone_once_and_changes_nothing(tiny_recipe, toy_text_files, tmp_path):
    common = ["strategy.name=frozen", "strategy.frozen.mode=head_only", "model.pooling=mean", "train.epochs=2"]
    uncached = train(tiny_recipe(*common, "strategy.frozen.cache_features=false"))
    config = tiny_recipe(*common, f"train.output_dir={tmp_path / 'cached'}")
    cached, strategy, calls = _train_counting_calls(config, lambda model: model.bert)
    # Only epoch 1 (12 train batches, 1 eval batch; fewer where repeated sentences hit) runs the backbone,
    # plus the final eval pass, which runs the plain model; every distinct sentence is stored once.
    assert 1 <= strategy.cache.backbone_batches <= 13
    assert len(calls) == strategy.cache.backbone_batches + 1
    sentences = {line.split("\t")[0] for f in toy_text_files for line in f.read_text().splitlines()[1:]}
    assert len(strategy.cache.store) == len(sentences)
    assert cached["train_losses"] == pytest.approx(uncached["train_losses"], abs=1e-4)
    assert cached["eval"]["accuracy"] == uncached["eval"]["accuracy"]


@pytest.mark.parametrize(("precision", "tolerance"), [("fp32", 1e-5), ("bf16", 1e-2)])
def test_frozen_blocks_cache_runs_the_frozen_prefix_once_and_changes_nothing(
    tiny_recipe, tmp_path, precision, tolerance
):
    """Epochs after the first run only the trainable top: same losses, metrics and weights as without the cache
    (bf16: the cached states are the autocast ones, re-padded to other batch shapes, so to bf16 rounding)."""
    common = [
        "strategy.name=frozen",
        "strategy.frozen.frozen_blocks=1",
        "train.epochs=2",
        f"train.precision={precision}",
    ]
    plain = tiny_recipe(*common, "strategy.frozen.cache_features=false", f"train.output_dir={tmp_path / 'plain'}")
    uncached = train(plain)
    config = tiny_recipe(*common, f"train.output_dir={tmp_path / 'cached'}")
    cached, strategy, frozen_block_calls = _train_counting_calls(config, lambda model: model.bert.encoder.layer[0])
    assert isinstance(strategy.cache, FrozenPrefixCache) and strategy.cache.enabled
    # Epoch 1's 12 train batches and 1 eval batch fill the cache; epoch 2 and its eval only read it
    # (the final eval pass runs the plain model).
    assert 1 <= strategy.cache.backbone_batches <= 13
    assert len(frozen_block_calls) == strategy.cache.backbone_batches + 1
    assert cached["precision"] == precision
    assert cached["train_losses"] == pytest.approx(uncached["train_losses"], abs=tolerance)
    assert cached["eval"]["accuracy"] == uncached["eval"]["accuracy"]
    weights = load_file(tmp_path / "cached" / "model.safetensors")
    for name, tensor in load_file(tmp_path / "plain" / "model.safetensors").items():
        torch.testing.assert_close(weights[name], tensor, rtol=1e-4, atol=tolerance)
