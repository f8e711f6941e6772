"""Distillation: the loss, the frozen teacher, layer-subset students, safety checks, caching and the CLI."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file
from test_accelerate_loop import _LAUNCHED_RUNS, _free_port
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, BertModel, BertTokenizer

from hftransfer.artifacts.saved import load_run
from hftransfer.cli import main
from hftransfer.config.recipe import load_config, save_config
from hftransfer.config.schema import ConfigError
from hftransfer.data import DynamicPaddingCollator, LabelMap, prepare_text_data
from hftransfer.data.text import tokenize_split, tokenizer_difference
from hftransfer.errors import UserError
from hftransfer.models.students import StudentError, keep_layers
from hftransfer.models.tasks import resolve_task
from hftransfer.strategies import build_strategy
from hftransfer.strategies.distill.strategy import (
    DistillConfig,
    DistillStrategy,
    default_layer_map,
    distillation_loss,
    hidden_state_loss,
)
from hftransfer.strategies.distill.teacher_cache import TEACHER_LOGITS, cache_teacher_logits
from hftransfer.strategies.distill.teachers import (
    TeacherError,
    check_label_mapping,
    check_teacher_accuracy,
)
from hftransfer.training.pipeline import prepare, train

REPO = Path(__file__).resolve().parents[1]
RECIPE = Path(__file__).parent.parent / "recipes" / "text-sst2-minilm-distill.yaml"


def _toy_rows(rng: random.Random, n: int) -> list[str]:
    good, bad = ["great", "good", "lovely", "superb"], ["awful", "bad", "boring", "terrible"]
    lines = []
    for _ in range(n):
        label = rng.randint(0, 1)
        word = rng.choice(good if label else bad)
        lines.append(f"the film was {word} {'and ' * rng.randint(0, 3)}{word}\t{label}")
    return lines


@pytest.fixture(scope="module")
def toy_files(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("toy")
    rng = random.Random(0)
    files = []
    for name, n in (("train.tsv", 128), ("dev.tsv", 64)):
        path = folder / name
        path.write_text("\n".join(["sentence\tlabel", *_toy_rows(rng, n)]) + "\n")
        files.append(path)
    return files[0], files[1]


def _data_overrides(toy_files, out: Path) -> list[str]:
    train_file, dev_file = toy_files
    return [
        f"data.train_file={train_file}",
        f"data.validation_file={dev_file}",
        f"train.output_dir={out}",
        "train.batch_size=16",
        "train.learning_rate=1e-3",
        "train.logging_steps=1",
        "train.seed=0",
        "train.precision=fp32",  # teacher logits are compared exactly; bf16 autocast has its own tests
    ]


@pytest.fixture(scope="module")
def teacher_dir(tiny_bert_dir, toy_files, tmp_path_factory) -> Path:
    """A seeded tiny BERT fine-tuned on the toy task with the full strategy: a real hftransfer output folder."""
    start = tmp_path_factory.mktemp("teacher-start")
    torch.manual_seed(0)  # the session's tiny_bert_dir is unseeded; a fixed start makes the teacher reproducible
    BertForSequenceClassification(BertConfig.from_pretrained(tiny_bert_dir)).save_pretrained(start)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(start)
    out = tmp_path_factory.mktemp("teacher") / "run"
    overrides = [
        f"model.name_or_path={start}",
        *_data_overrides(toy_files, out),
        "train.epochs=5",
        "train.batch_size=8",
    ]
    config = load_config(None, overrides)
    results = train(config)
    assert results["eval"]["accuracy"] >= 0.9, "the teacher fixture must actually know the task"
    return out


def _sha(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


def _tiny_classifier(
    layers: int = 2, width: int = 32, seed: int = 0, vocab_size: int = 30522
) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=width,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * width,
        max_position_embeddings=64,
        num_labels=2,
    )
    return BertForSequenceClassification(config).eval()


def _batch(tokenizer, texts: list[str], labels: list[int]) -> dict[str, torch.Tensor]:
    rows = [{**tokenizer(t), "labels": y} for t, y in zip(texts, labels, strict=True)]
    return DynamicPaddingCollator(tokenizer)(rows)


# --- the loss --------------------------------------------------------------------------------------------------


def test_loss_matches_a_hand_computation_including_t_squared():
    s = np.array([[1.0, 2.0, 0.5], [0.1, -1.0, 2.0]])
    t = np.array([[0.3, 2.5, -1.0], [1.5, 0.0, 0.2]])
    y = np.array([1, 0])
    temperature, alpha = 3.0, 0.3

    def softmax(x):
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    p_t, p_s = softmax(t / temperature), softmax(s / temperature)
    kl = np.mean(np.sum(p_t * (np.log(p_t) - np.log(p_s)), axis=1))
    ce = np.mean(-np.log(softmax(s)[np.arange(2), y]))
    expected = alpha * temperature**2 * kl + (1 - alpha) * ce

    total, kd, cross = distillation_loss(
        torch.tensor(s), torch.tensor(t), torch.tensor(y), temperature=temperature, alpha=alpha
    )
    assert kd.item() == pytest.approx(temperature**2 * kl, rel=1e-6)
    assert cross.item() == pytest.approx(ce, rel=1e-6)
    assert total.item() == pytest.approx(expected, rel=1e-6)
    # Identical logits leave only the cross-entropy part.
    same, kd_same, _ = distillation_loss(torch.tensor(s), torch.tensor(s), torch.tensor(y), 3.0, 0.3)
    assert kd_same.item() == pytest.approx(0.0, abs=1e-7)
    assert same.item() == pytest.approx(0.7 * ce, rel=1e-6)


@pytest.mark.parametrize(
    ("kept", "student_depth", "teacher_depth", "expected"),
    [
        ([0, 2, 4], 3, 6, [[1, 1], [2, 3], [3, 5]]),  # each kept block to the teacher block it was cut from
        ([3, 4, 5], 3, 6, [[1, 4], [2, 5], [3, 6]]),
        (None, 3, 6, [[1, 2], [2, 4], [3, 6]]),  # a given student: spread evenly, last to last
        (None, 4, 6, [[1, 2], [2, 3], [3, 4], [4, 6]]),
    ],
)
def test_default_layer_map(kept, student_depth, teacher_depth, expected):
    assert default_layer_map(kept, student_depth, teacher_depth) == expected


def test_hidden_state_loss_ignores_padding():
    student = torch.tensor([[[1.0, 0.0], [5.0, 5.0]]])
    teacher = torch.tensor([[[0.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[1, 0]])
    assert hidden_state_loss(student, teacher, mask, "mse").item() == pytest.approx(0.5)
    assert hidden_state_loss(teacher + 1, teacher + 2, mask, "cosine").item() == pytest.approx(0.0, abs=1e-6)


# --- the teacher stays frozen ----------------------------------------------------------------------------------


@pytest.mark.parametrize("hidden_loss", ["none", "mse"])
def test_teacher_never_gets_gradients_and_its_weights_do_not_change(tiny_bert_dir, hidden_loss):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    teacher = _tiny_classifier(layers=2, width=48, seed=1)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = _tiny_classifier(layers=1, width=32, seed=2).train()
    student_before = {k: v.clone() for k, v in student.state_dict().items()}
    strategy = DistillStrategy(DistillConfig(hidden_loss=hidden_loss), teacher=teacher)
    student = strategy.prepare(student)
    groups = strategy.parameter_groups(student, 1e-3, 0.01)
    optimizer = torch.optim.AdamW(groups, lr=1e-3)
    batch = _batch(tokenizer, ["a great film", "an awful, boring film indeed"], [1, 0])
    for _ in range(3):
        loss, logits = strategy.loss(student, batch)
        assert logits.shape == (2, 2)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert not teacher.training
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert not all(torch.equal(student_before[k], v) for k, v in student.state_dict().items())
    optimized = {id(p) for g in groups for p in g["params"]}
    assert not optimized & {id(p) for p in teacher.parameters()}
    if hidden_loss == "mse":  # widths differ (32 vs 48): a trained projection bridges them
        assert strategy.projection is not None
        assert {id(p) for p in strategy.projection.parameters()} <= optimized


# --- layer-subset students -------------------------------------------------------------------------------------


def test_layer_subset_student_copies_the_chosen_blocks_embeddings_and_head(tmp_path):
    teacher = _tiny_classifier(layers=4)
    student = keep_layers(copy.deepcopy(teacher), [1, 3])
    assert student.config.num_hidden_layers == 2 and len(student.bert.encoder.layer) == 2
    t_state, s_state = teacher.state_dict(), student.state_dict()
    for key, value in s_state.items():
        source = key
        if key.startswith("bert.encoder.layer."):
            index, rest = key[len("bert.encoder.layer.") :].split(".", 1)
            source = f"bert.encoder.layer.{[1, 3][int(index)]}.{rest}"
        assert torch.equal(value, t_state[source]), key
    assert any(k.startswith("classifier.") for k in s_state) and any(k.startswith("bert.embeddings.") for k in s_state)
    student.save_pretrained(tmp_path)  # the smaller config round-trips
    reloaded = BertForSequenceClassification.from_pretrained(tmp_path).eval()
    ids = torch.tensor([[101, 2307, 2143, 102]])
    assert torch.allclose(reloaded(input_ids=ids).logits, student(input_ids=ids).logits)


@pytest.mark.parametrize("layers", [[], [4], [2, 1], [1, 1]])
def test_bad_layer_lists_are_refused(layers):
    with pytest.raises(StudentError, match="student_layers"):
        keep_layers(_tiny_classifier(layers=4), layers)


# --- safety checks ---------------------------------------------------------------------------------------------


def test_label_mapping_checks():
    data = LabelMap(names=("negative", "positive"), raw_values=(0, 1))
    check_label_mapping(LabelMap(("negative", "positive"), (0, 1)), data, "t")
    check_label_mapping(LabelMap(("LABEL_0", "LABEL_1"), ("LABEL_0", "LABEL_1")), data, "t")  # placeholders pass
    with pytest.raises(TeacherError, match="wrong classes"):
        check_label_mapping(LabelMap(("positive", "negative"), (0, 1)), data, "t")
    with pytest.raises(TeacherError, match="3 classes"):
        check_label_mapping(LabelMap(("a", "b", "c"), (0, 1, 2)), data, "t")


def test_tokenizer_difference_names_what_differs(tiny_bert_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    assert tokenizer_difference(tokenizer, AutoTokenizer.from_pretrained(tiny_bert_dir), "t", 128) is None
    other = AutoTokenizer.from_pretrained(tiny_bert_dir)
    other.add_tokens(["overhyped"])
    assert tokenizer_difference(tokenizer, other, "t", 128) == "different vocabularies"
    short = AutoTokenizer.from_pretrained(tiny_bert_dir, model_max_length=16)
    assert tokenizer_difference(tokenizer, short, "t", 128) == "the teacher reads at most 16 tokens"
    assert tokenizer_difference(tokenizer, short, "t", 16) is None  # both truncate to data.max_length
    with pytest.raises(UserError, match="no tokenizer files"):
        tokenizer_difference(tokenizer, None, "t", 128)


def test_chance_level_teacher_is_refused():
    references = np.array([0] * 60 + [1] * 40)
    always_zero = np.tile([1.0, 0.0], (100, 1))
    with pytest.raises(TeacherError, match="chance level"):
        check_teacher_accuracy(references, always_zero, "t")
    flipped = np.eye(2)[1 - references]
    with pytest.raises(TeacherError, match="another order"):
        check_teacher_accuracy(references, flipped, "t")
    good = np.eye(2)[references]
    assert check_teacher_accuracy(references, good, "t") == {"accuracy": 1.0, "chance_accuracy": 0.6}


def test_pipeline_stops_early_on_wrong_labels_tokenizer_or_untrained_teacher(teacher_dir, toy_files, tmp_path):
    base = ["strategy.name=distill", f"strategy.distill.teacher={teacher_dir}", f"model.name_or_path={teacher_dir}"]

    def run(*extra: str, out: str = "out"):
        return train(load_config(None, [*base, *_data_overrides(toy_files, tmp_path / out), "train.epochs=1", *extra]))

    with pytest.raises(TeacherError, match="wrong classes"):
        run("data.label_names=[bad, good]")  # the teacher's classes are '0', '1'

    student = tmp_path / "other-tokenizer"
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    tokenizer.add_tokens(["overhyped"])
    model = BertForSequenceClassification.from_pretrained(teacher_dir)
    model.resize_token_embeddings(len(tokenizer))
    model.save_pretrained(student)
    tokenizer.save_pretrained(student)
    with pytest.raises(TeacherError, match=r"different vocabularies.*cache_teacher_logits=true"):
        run(f"model.name_or_path={student}", "strategy.distill.cache_teacher_logits=false", out="out2")

    untrained = tmp_path / "untrained"
    model = BertForSequenceClassification.from_pretrained(teacher_dir)
    torch.nn.init.zeros_(model.classifier.weight)
    torch.nn.init.zeros_(model.classifier.bias)  # every row ties: always class 0
    model.save_pretrained(untrained)
    tokenizer.from_pretrained(teacher_dir).save_pretrained(untrained)
    with pytest.raises(TeacherError, match="chance level"):
        run(f"strategy.distill.teacher={untrained}", out="out3")

    headless = tmp_path / "headless"
    BertModel(BertForSequenceClassification.from_pretrained(teacher_dir).config).save_pretrained(headless)
    with pytest.raises(TeacherError, match="no trained classification head"):
        run(f"strategy.distill.teacher={headless}", out="out4")
    assert not any((tmp_path / name).exists() for name in ("out", "out2", "out3", "out4"))


def test_distill_needs_a_teacher_in_the_recipe():
    with pytest.raises(ConfigError, match=r"strategy\.distill\.teacher"):
        load_config(None, ["strategy.name=distill"])
    config = load_config(RECIPE)
    assert config.strategy.name == "distill" and config.strategy.distill.student_layers == [0, 2, 4]


# --- cached teacher logits -------------------------------------------------------------------------------------


def test_cached_and_live_teacher_logits_give_the_same_loss(tiny_bert_dir, toy_files):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    config = load_config(None, _data_overrides(toy_files, Path("unused"))).data
    texts = [line.split("\t")[0] for line in toy_files[0].read_text().splitlines()[1:17]]
    raw = Dataset.from_dict({"sentence": texts, "labels": [i % 2 for i in range(16)]})
    encoded = tokenize_split(raw, tokenizer, config, "train")
    teacher = _tiny_classifier(layers=2, seed=3)
    collator = DynamicPaddingCollator(tokenizer)
    cached = cache_teacher_logits(teacher, encoded, collator, batch_size=5)

    batch = collator([cached[i] for i in range(8)])
    assert batch[TEACHER_LOGITS].dtype == torch.float32 and batch[TEACHER_LOGITS].shape == (8, 2)
    student = _tiny_classifier(layers=1, seed=4)  # eval mode: no dropout noise between the two passes
    strategy = DistillStrategy(DistillConfig(temperature=2.0, alpha=0.7), teacher=teacher)
    strategy.prepare(student)
    cached_loss, _ = strategy.loss(student, batch)
    live_loss, _ = strategy.loss(student, {k: v for k, v in batch.items() if k != TEACHER_LOGITS})
    assert torch.allclose(cached_loss, live_loss, atol=1e-5)
    assert not torch.allclose(
        batch[TEACHER_LOGITS], student(**{k: batch[k] for k in tokenizer.model_input_names}).logits
    )


def test_mask_augment_feeds_teacher_and_student_the_same_masked_real_tokens(tiny_bert_dir, toy_files):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    texts = [line.split("\t")[0] for line in toy_files[0].read_text().splitlines()[1:17]]
    batch = _batch(tokenizer, texts, [i % 2 for i in range(16)])
    teacher, student = _tiny_classifier(layers=2, seed=3), _tiny_classifier(layers=1, seed=4).train()
    strategy = DistillStrategy(DistillConfig(mask_augment=0.4, cache_teacher_logits=False), teacher=teacher)
    strategy.prepare(student)
    strategy._mask_token = strategy._mask_token_ids(tokenizer)
    seen = {}
    for name, model in (("teacher", teacher), ("student", student)):
        model.register_forward_pre_hook(
            lambda _m, _args, kwargs, name=name: seen.setdefault(name, []).append(kwargs["input_ids"].clone()),
            with_kwargs=True,
        )
    torch.manual_seed(0)
    strategy.loss(student, batch)
    masked = seen["student"][0]
    torch.testing.assert_close(seen["teacher"][0], masked)  # the teacher labels the very rows the student reads
    changed = masked != batch["input_ids"]
    real = batch["attention_mask"].bool() & ~torch.isin(batch["input_ids"], torch.tensor(tokenizer.all_special_ids))
    assert (masked[changed] == tokenizer.mask_token_id).all() and not (changed & ~real).any()
    assert 0.25 < changed.sum() / real.sum() < 0.55  # ~40% of the real tokens, never [CLS]/[SEP]/padding
    student.eval()  # evaluation reads the rows as they are
    strategy.loss(student, batch)
    torch.testing.assert_close(seen["student"][-1], batch["input_ids"])
    with pytest.raises(ConfigError, match="mask_augment"):
        DistillConfig(mask_augment=1.0)


# --- end to end ------------------------------------------------------------------------------------------------


def test_cli_distills_a_layer_subset_student_and_reports_teacher_vs_student(teacher_dir, toy_files, tmp_path, capsys):
    out = tmp_path / "student"
    teacher_hash = _sha(teacher_dir)
    args = [
        "train",
        "strategy.name=distill",
        f"strategy.distill.teacher={teacher_dir}",
        f"model.name_or_path={teacher_dir}",
        "strategy.distill.student_layers=[1]",
        *_data_overrides(toy_files, out),
        "train.epochs=2",
    ]
    assert main(args) == 0
    report = capsys.readouterr().out
    assert "retention" in report and "latency b64" in report

    results = json.loads((out / "results.json").read_text())
    d = results["distill"]
    assert results["strategy"] == "distill" and d["teacher_logits"] == "cached"
    assert d["student"]["accuracy"] == results["eval"]["accuracy"]
    teacher_results = json.loads((teacher_dir / "results.json").read_text())
    assert d["teacher"]["accuracy"] == pytest.approx(teacher_results["eval"]["accuracy"])
    assert d["retention"] == pytest.approx(d["student"]["accuracy"] / d["teacher"]["accuracy"])
    assert d["student"]["params"] < d["teacher"]["params"]
    assert 0 < d["student"]["size_bytes"] < d["teacher"]["size_bytes"]
    assert set(d["latency_ms"]["student"]) == {"1", "64"} and d["speedup_batch64"] > 0
    assert _sha(teacher_dir) == teacher_hash  # the teacher's weights are untouched

    saved = load_run(out)
    assert saved.model.config.num_hidden_layers == 1
    assert main(["evaluate", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(results["eval"]["accuracy"])


def test_build_strategy_gives_the_distill_strategy():
    config = load_config(None, ["strategy.name=distill", "strategy.distill.teacher=somewhere"]).strategy
    strategy = build_strategy(config)
    assert isinstance(strategy, DistillStrategy) and strategy.config.teacher == "somewhere"


def test_lora_adapter_run_teaches_as_its_merged_model(tiny_bert_dir, toy_files, tmp_path):
    from hftransfer.strategies.distill.teachers import load_teacher

    out = tmp_path / "lora"
    overrides = ["strategy.name=lora", f"model.name_or_path={tiny_bert_dir}", *_data_overrides(toy_files, out)]
    train(load_config(None, [*overrides, "train.max_steps=2"]))
    teacher = load_teacher(str(out))
    assert "peft" not in type(teacher.model).__module__ and teacher.labels.names == ("0", "1")
    assert all(not p.requires_grad for p in teacher.model.parameters())
    ids = torch.tensor([[101, 2307, 2143, 102]])
    expected = load_run(out).model(input_ids=ids).logits
    assert torch.allclose(teacher.model(input_ids=ids).logits, expected, atol=1e-5)


# --- a student with its own tokenizer --------------------------------------------------------------------------

TOY_WORDS = ["film", "terrible", "the", "and", "lovely", "awful", "was", "good", "boring", "superb", "bad", "great"]


@pytest.fixture(scope="module")
def own_vocab_student(tmp_path_factory) -> Path:
    """A tiny BERT whose word-level tokenizer knows only the toy words: every id differs from the teacher's."""
    folder = tmp_path_factory.mktemp("own-vocab-student")
    vocab = {word: i for i, word in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *TOY_WORDS])}
    tokenizer = BertTokenizer(vocab=vocab, model_max_length=64)
    _tiny_classifier(layers=1, width=16, seed=1, vocab_size=len(vocab)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _own_vocab_overrides(teacher_dir, own_vocab_student, toy_files, out: Path) -> list[str]:
    return [
        "strategy.name=distill",
        f"strategy.distill.teacher={teacher_dir}",
        f"model.name_or_path={own_vocab_student}",
        *_data_overrides(toy_files, out),
    ]


def test_teacher_logits_come_from_its_own_encoding_of_the_same_rows(teacher_dir, own_vocab_student, toy_files):
    overrides = _own_vocab_overrides(teacher_dir, own_vocab_student, toy_files, Path("unused"))
    config = resolve_task(load_config(None, [*overrides, "data.max_length=9"]))  # the teacher's rows get truncated too
    student_tokenizer = AutoTokenizer.from_pretrained(own_vocab_student)
    data = prepare_text_data(config.data, student_tokenizer)
    strategy = build_strategy(config.strategy)
    model = strategy.prepare(BertForSequenceClassification.from_pretrained(own_vocab_student))
    data = strategy.prepare_data(model, data, student_tokenizer, config)

    teacher_tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    teacher = load_run(teacher_dir).model.eval()
    texts = [line.split("\t")[0] for line in toy_files[0].read_text().splitlines()[1:]]
    assert any(len(teacher_tokenizer(text)["input_ids"]) > 9 for text in texts)
    encoded = teacher_tokenizer(texts, truncation=True, max_length=9, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = teacher(**encoded).logits.numpy()
    assert np.allclose(np.asarray(data.train[TEACHER_LOGITS]), expected, atol=1e-4)
    # the student still reads its own ids, which the teacher's tokenizer would not produce
    assert data.train[0]["input_ids"] == student_tokenizer(texts[0], truncation=True, max_length=9)["input_ids"]
    assert data.train[0]["input_ids"] != encoded["input_ids"][0][encoded["attention_mask"][0].bool()].tolist()
    assert strategy._report["teacher_logits"] == "cached"


def test_student_with_its_own_tokenizer_distills_end_to_end(teacher_dir, own_vocab_student, toy_files, tmp_path):
    out = tmp_path / "student"
    results = train(
        load_config(None, [*_own_vocab_overrides(teacher_dir, own_vocab_student, toy_files, out), "train.epochs=1"])
    )
    d = results["distill"]
    assert d["teacher_logits"] == "cached"
    # scored on its own encoding of the validation rows: exactly as in its own run
    assert d["teacher"]["accuracy"] == pytest.approx(
        json.loads((teacher_dir / "results.json").read_text())["eval"]["accuracy"]
    )
    assert d["student"]["params"] < d["teacher"]["params"] and set(d["latency_ms"]["teacher"]) == {"1", "64"}
    losses = [entry[k] for entry in results["log_history"] for k in ("loss", "eval_loss") if k in entry]
    assert len(losses) > 1 and np.isfinite(losses).all()  # eval batches carry no teacher logits: cross-entropy
    saved = load_run(out)
    assert saved.tokenizer.get_vocab() == AutoTokenizer.from_pretrained(own_vocab_student).get_vocab()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("strategy.distill.hidden_loss=mse", r"different vocabularies\), so their token positions do not line up"),
        ("strategy.distill.cache_teacher_logits=false", r"cache_teacher_logits=true \(the default\)"),
    ],
)
def test_own_tokenizer_without_cached_logits_or_with_hidden_loss_fails_early(
    teacher_dir, own_vocab_student, toy_files, tmp_path, setting, message
):
    out = tmp_path / "out"
    with pytest.raises(TeacherError, match=message):
        train(load_config(None, [*_own_vocab_overrides(teacher_dir, own_vocab_student, toy_files, out), setting]))
    assert not out.exists()


# --- the loop contract: one eval loss in both loops; the projection (an extra trainable module) under DDP and resume


def _safetensors(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


@pytest.fixture(scope="module")
def narrow_student(tiny_bert_dir, tmp_path_factory) -> Path:
    """A 16-wide student (the teacher is 32 wide) on the teacher's tokenizer, without dropout."""
    folder = tmp_path_factory.mktemp("narrow-student")
    torch.manual_seed(1)
    config = BertConfig.from_pretrained(
        tiny_bert_dir, hidden_size=16, intermediate_size=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(folder)
    return folder


def _recipe(student: Path, teacher: Path, files, out: Path, *extra: str):
    return load_config(
        None,
        [
            f"model.name_or_path={student}",
            *_data_overrides(files, out),
            "strategy.name=distill",
            f"strategy.distill.teacher={teacher}",
            "strategy.distill.hidden_loss=mse",
            "strategy.distill.measure_latency=false",
            "train.epochs=2",
            *extra,
        ],
    )


def test_a_narrow_student_declares_its_projection_as_a_trainable_module(
    narrow_student, teacher_dir, toy_files, tmp_path
):
    run = prepare(_recipe(narrow_student, teacher_dir, toy_files, tmp_path / "x"))
    assert isinstance(run.strategy, DistillStrategy)
    extras = run.strategy.trainable_modules()
    assert extras, "a 16-wide student under a 32-wide teacher needs a hidden-state projection"
    assert all(p.requires_grad for module in extras.values() for p in module.parameters())


def test_both_loops_report_the_same_eval_loss_and_pick_the_same_best_step(
    narrow_student, teacher_dir, toy_files, tmp_path
):
    """Eval loss is the task loss on the labels in both loops (not the KD loss), so best_metric=loss agrees."""
    common = ("train.eval_steps=2", "train.best_metric=loss", "train.save_steps=2", "train.save_total_limit=20",
              "train.learning_rate=3e-3")  # fmt: skip
    runs = {}
    for loop in ("trainer", "accelerate"):
        runs[loop] = train(
            _recipe(narrow_student, teacher_dir, toy_files, tmp_path / loop, f"train.loop={loop}", *common)
        )
    evals = {
        loop: [(e["step"], e["eval_loss"]) for e in r["log_history"] if "eval_loss" in e] for loop, r in runs.items()
    }
    assert [s for s, _ in evals["trainer"]] == [s for s, _ in evals["accelerate"]]
    for (_, a), (_, b) in zip(evals["trainer"], evals["accelerate"], strict=True):
        assert a == pytest.approx(b, abs=1e-5)
    best = {loop: min(e, key=lambda pair: pair[1])[0] for loop, e in evals.items()}
    assert best["trainer"] == best["accelerate"]
    for name, tensor in _safetensors(tmp_path / "trainer").items():  # both restored the same best checkpoint
        torch.testing.assert_close(_safetensors(tmp_path / "accelerate")[name], tensor, rtol=0, atol=1e-5)


@pytest.mark.parametrize("loop", ["accelerate", "trainer"])
def test_resumed_distillation_restores_the_projection_bit_identical(
    narrow_student, teacher_dir, toy_files, tmp_path, loop
):
    """A run resumed from a mid-run checkpoint ends bit-identical to the uninterrupted one: the projection's weights
    and optimizer state travel in the checkpoint (were they re-initialised, the student would drift)."""
    common = (f"train.loop={loop}", "train.save_steps=5", "train.save_total_limit=20", "train.keep_checkpoints=true")
    train(_recipe(narrow_student, teacher_dir, toy_files, tmp_path / "full", *common))
    checkpoint = tmp_path / "full" / "checkpoints" / "checkpoint-10"
    assert checkpoint.is_dir()
    train(
        _recipe(narrow_student, teacher_dir, toy_files, tmp_path / "again", *common, f"train.resume_from={checkpoint}")
    )
    full, again = _safetensors(tmp_path / "full"), _safetensors(tmp_path / "again")
    assert full.keys() == again.keys()
    assert all(torch.equal(full[k], again[k]) for k in full)


@pytest.mark.slow
def test_two_processes_distilling_into_a_narrow_student_match_one(narrow_student, teacher_dir, toy_files, tmp_path):
    """2 gloo processes vs one process accumulating the same 2 batches per step, in both loops: equal weights only if
    the projection's gradients are all-reduced like the student's."""
    launched, by_one = [], {}
    for loop in ("accelerate", "trainer"):
        two = _recipe(narrow_student, teacher_dir, toy_files, tmp_path / f"two-{loop}", f"train.loop={loop}")
        save_config(two, tmp_path / f"{loop}.yaml")
        launched.append(str(tmp_path / f"{loop}.yaml"))
        one = (f"train.loop={loop}", "train.gradient_accumulation_steps=2")
        by_one[loop] = train(_recipe(narrow_student, teacher_dir, toy_files, tmp_path / f"one-{loop}", *one))
    script = tmp_path / "launched_runs.py"
    script.write_text(_LAUNCHED_RUNS)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launch += ["--main_process_port", str(_free_port()), str(script), *launched]
    done = subprocess.run(launch, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, [line for line in done.stderr.splitlines() if "Error" in line][:10]
    for loop, one in by_one.items():
        results = json.loads((tmp_path / f"two-{loop}" / "results.json").read_text())
        assert results["global_steps"] == one["global_steps"]
        two_weights, one_weights = _safetensors(tmp_path / f"two-{loop}"), _safetensors(tmp_path / f"one-{loop}")
        for name, tensor in one_weights.items():
            torch.testing.assert_close(two_weights[name], tensor, rtol=1e-4, atol=1e-6, msg=f"{loop}: {name}")
