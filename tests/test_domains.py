"""Transfer across domains (issue 17): the joint source+target objective, L2-SP, DANN and reweighting, held to
invariants: λ=0 is a source-only run step for step, α=β=0 is plain fine-tuning, the reversal layer's gradient,
exact resume, a saved folder that is a plain target model, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer
from transformers.utils import logging as transformers_logging

from hftransfer.artifacts.saved import load_run
from hftransfer.cli import main
from hftransfer.config.locations import resolve_location
from hftransfer.config.recipe import DomainConfig, load_config
from hftransfer.domains import DomainObjective, GradientReversal, dann_weight, l2sp_penalty, reverse_gradient
from hftransfer.strategies.full.strategy import FullFineTuning
from hftransfer.training.pipeline import Given, train
from tests.conftest import MINILM, recipe_maker, save_tiny_bert, write_toy_text_files, write_tsv


@pytest.fixture(scope="module")
def no_dropout_bert(tmp_path_factory) -> Path:
    """Dropout off: a second stream's forward pass then draws nothing from the global RNG."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_location(MINILM))
    folder = tmp_path_factory.mktemp("tiny-bert-no-dropout")
    return save_tiny_bert(folder, tokenizer, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def write_source(path: Path, n: int = 64, labels: tuple = (0, 1)) -> Path:
    """Another domain of the toy task: books instead of films, other words."""
    rng = random.Random(1)
    words = {labels[1]: ["wonderful", "gripping", "moving"], labels[0]: ["dull", "tedious", "clumsy"]}
    rows = []
    for _ in range(n):
        label = labels[rng.randint(0, 1)]
        rows.append([f"this book is {rng.choice(words[label])} {'really ' * rng.randint(0, 2)}", label])
    return write_tsv(path, ["sentence", "label"], rows)


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    train, dev = write_toy_text_files(tmp_path)
    pool = tmp_path / "pool.txt"
    pool.write_text("\n".join(f"the film felt {w} {i}" for i, w in enumerate(["good", "bad", "odd", "fine"] * 6)))
    return {"train": train, "dev": dev, "source": write_source(tmp_path / "source.tsv"), "pool": pool}


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def _assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


# --- the pieces -------------------------------------------------------------------------------------------------


def test_gradient_reversal_negates_and_scales_exactly():
    x = torch.randn(4, 3, requires_grad=True)
    upstream = torch.randn(4, 3)
    y = reverse_gradient(x, 0.37)
    assert torch.equal(y, x)
    (y * upstream).sum().backward()
    assert torch.equal(x.grad, -0.37 * upstream)
    layer, x.grad = GradientReversal(2.0), None
    (layer(x) * upstream).sum().backward()
    assert torch.equal(x.grad, -2.0 * upstream)
    assert dann_weight(0.0, 0.5) == 0.0
    assert dann_weight(1.0, 0.5) == pytest.approx(0.5 * (2 / (1 + torch.e**-10) - 1))
    assert dann_weight(0.3, 1.0) == pytest.approx(2 / (1 + torch.e**-3) - 1)


def test_l2sp_gradient_is_alpha_times_distance_and_beta_times_weight():
    theta = torch.randn(5, requires_grad=True)
    start = torch.randn(5)
    head = torch.randn(3, requires_grad=True)
    l2sp_penalty([(theta, start)], [head], alpha=0.3, beta=0.05).backward()
    torch.testing.assert_close(theta.grad, 0.3 * (theta.detach() - start), rtol=0, atol=1e-7)
    torch.testing.assert_close(head.grad, 0.05 * head.detach(), rtol=0, atol=1e-7)
    theta.grad = None
    l2sp_penalty([(theta, start)], [], alpha=0.0, beta=0.0).backward()
    assert torch.equal(theta.grad, torch.zeros(5))


def test_the_domain_classifier_trains_at_its_own_learning_rate(tiny_bert_dir):
    """Research code hands in the bare model; the loops hand in the model wrapped with the strategy's modules."""
    from transformers import AutoModelForSequenceClassification

    from hftransfer.config.recipe import TrainConfig
    from hftransfer.training.loops.common import with_trainable_modules
    from hftransfer.training.optim import build_optimizer

    for rate, expected in ((None, 1e-4), (3e-3, 3e-3)):
        for wrapped in (False, True):
            domain = DomainConfig(unlabelled_target_file="pool.txt", adversarial_weight=1, adversary_learning_rate=rate)
            objective = DomainObjective(FullFineTuning(), domain)
            model = objective.prepare(AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2))
            handed = with_trainable_modules(model, objective) if wrapped else model
            optimizer = build_optimizer(objective, handed, TrainConfig(learning_rate=1e-4))
            rates = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
            assert {rates[id(p)] for p in objective.domain_classifier.parameters()} == {expected}
            assert {rates[id(p)] for p in model.parameters()} == {1e-4}
            every = [*model.parameters(), *objective.domain_classifier.parameters()]
            assert len(rates) == len(every) == sum(len(g["params"]) for g in optimizer.param_groups)


# --- invariants of whole runs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("loop", ["accelerate", "trainer"])
def test_target_weight_zero_is_a_source_only_run_step_for_step(no_dropout_bert, files, tmp_path, loop):
    common = (f"train.loop={loop}", "train.epochs=1", "train.warmup_ratio=0")
    source_only = train(recipe_maker(no_dropout_bert, files["source"], files["dev"], tmp_path / "source")(*common))
    joint_recipe = recipe_maker(no_dropout_bert, files["train"], files["dev"], tmp_path / "joint")
    joint = train(joint_recipe(*common, f"domain.source_file={files['source']}", "domain.target_weight=0"))
    assert joint["global_steps"] == source_only["global_steps"] == 8  # the source is the main stream
    assert joint["train_losses"] == source_only["train_losses"]
    _assert_identical(_weights(tmp_path / "joint"), _weights(tmp_path / "source"))
    assert "target weight λ=0" in joint["data"]["domain"]
    if loop == "accelerate":  # λ > 0 does train on the target rows (same steps, other losses)
        joint_recipe = recipe_maker(no_dropout_bert, files["train"], files["dev"], tmp_path / "joint2")
        mixed = train(joint_recipe(*common, f"domain.source_file={files['source']}", "train.max_steps=1"))
        assert mixed["train_losses"][0] > source_only["train_losses"][0]  # L_s + L_t (the target's loss adds)


def test_l2sp_off_is_plain_finetuning_and_on_pulls_toward_the_start(no_dropout_bert, files, tmp_path):
    recipe = recipe_maker(no_dropout_bert, files["train"], files["dev"], tmp_path / "x")
    common = ("train.loop=accelerate", "train.max_steps=6", "train.learning_rate=5e-3")
    plain = recipe(*common, f"train.output_dir={tmp_path / 'plain'}")
    train(plain)
    wrapped = DomainObjective(FullFineTuning(), DomainConfig(l2sp_alpha=0.0, l2sp_beta=0.0))
    train(recipe(*common, f"train.output_dir={tmp_path / 'zero'}"), Given(strategy=wrapped))
    _assert_identical(_weights(tmp_path / "zero"), _weights(tmp_path / "plain"))

    train(recipe(*common, f"train.output_dir={tmp_path / 'l2sp'}", "domain.l2sp_alpha=50"))
    start = load_file(Path(no_dropout_bert) / "model.safetensors")
    plain_w, l2sp_w = _weights(tmp_path / "plain"), _weights(tmp_path / "l2sp")
    encoder = [k for k in start if k.startswith("bert.encoder.")]

    def distance(weights: dict) -> float:
        return sum(float((weights[k] - start[k]).pow(2).sum()) for k in encoder) ** 0.5

    assert 0 < distance(l2sp_w) < 0.7 * distance(plain_w)


def _resume_pair(recipe, tmp_path: Path, loop: str, extra: tuple[str, ...], name: str = "run") -> dict:
    common = (f"train.loop={loop}", "train.max_steps=6", "train.save_steps=3", "train.save_total_limit=10",
              "train.keep_checkpoints=true", *extra)  # fmt: skip
    full = train(recipe(*common, f"train.output_dir={tmp_path / f'{name}-full'}"))
    start = tmp_path / f"{name}-full" / "checkpoints" / "checkpoint-3"
    resumed = train(recipe(*common, f"train.output_dir={tmp_path / f'{name}-again'}", f"train.resume_from={start}"))
    _assert_identical(_weights(tmp_path / f"{name}-again"), _weights(tmp_path / f"{name}-full"))
    assert resumed["eval"] == full["eval"]
    assert resumed["train_losses"] == full["train_losses"][-len(resumed["train_losses"]) :]
    return full


@pytest.mark.parametrize("loop", ["accelerate", "trainer"])
def test_resumed_joint_dann_run_ends_bit_identical(tiny_bert_dir, files, tmp_path, loop):
    """Dropout on; a source with its own head, the target's rows drawn beside it, DANN against the unlabelled pool,
    L2-SP and reweighted source rows: the extra modules, the drawn streams and the DANN schedule all resume."""
    recipe = recipe_maker(tiny_bert_dir, files["train"], files["dev"], tmp_path / "x")
    extra = (
        f"domain.source_file={write_source(tmp_path / 'src.tsv', labels=('neg', 'pos'))}",
        "domain.separate_heads=true",
        f"domain.unlabelled_target_file={files['pool']}",
        "domain.adversarial_weight=1.0",
        "domain.l2sp_alpha=0.1",
        "domain.l2sp_beta=0.01",
        "domain.reweight=true",
    )
    full = _resume_pair(recipe, tmp_path, loop, extra)
    facts = full["data"]["reweight"]
    assert 0 <= facts["min"] < 1 < facts["max"] and 0 < facts["effective_rows"] <= 64


def test_saved_folder_is_a_plain_target_model(tiny_bert_dir, files, tmp_path, capsys):
    """Own heads + DANN through `finetune`: the folder holds the target model only, and evaluate and
    predict read it as any run's."""
    import hftransfer

    out = tmp_path / "run"
    run = hftransfer.finetune(
        str(tiny_bert_dir),
        str(files["train"]),
        str(files["dev"]),
        output_dir=out,
        epochs=1,
        batch_size=8,
        precision="fp32",
        source_file=str(write_source(tmp_path / "src.tsv", labels=("neg", "pos"))),
        separate_heads=True,
        **{"domain.unlabelled_target_file": str(files["pool"]), "domain.adversarial_weight": 1.0},
    )
    weights = _weights(out)
    assert not any("domain" in k or "extras" in k for k in weights)
    assert weights["classifier.weight"].shape == (2, 32)
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "0", "1": "1"}  # the target's classes, not the source's neg/pos
    assert "own head per domain" in run.results["data"]["domain"]
    saved = load_run(out)
    assert type(saved.model).__name__ == "BertForSequenceClassification"
    assert main(["evaluate", str(out)]) == 0
    assert main(["predict", str(out), "the film was great"]) == 0
    assert "label" in capsys.readouterr().out


def test_source_with_unlabelled_target_only_trains_and_evaluates_on_the_target(tiny_bert_dir, files, tmp_path):
    """Unsupervised adaptation: no data.train_file; the source trains the shared head, DANN aligns it with the
    pool, data.validation_file scores it, and `hftransfer evaluate` reads the folder without a train split."""
    out = tmp_path / "uda"
    args = [
        "train",
        f"model.name_or_path={tiny_bert_dir}",
        f"data.validation_file={files['dev']}",
        f"train.output_dir={out}",
        "train.max_steps=3",
        "train.precision=fp32",
        f"domain.source_file={files['source']}",
        f"domain.unlabelled_target_file={files['pool']}",
        "domain.adversarial_weight=0.5",
    ]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["eval"]["num_samples"] == 32 and results["num_train_samples"] == 64
    assert "README.md" in {p.name for p in out.iterdir()}
    assert "Trained across domains: jointly with source source.tsv" in (out / "README.md").read_text()
    assert main(["evaluate", str(out)]) == 0


@pytest.mark.parametrize("strategy", ["lora", "frozen", pytest.param("distill", marks=pytest.mark.slow)])
def test_the_objective_wraps_every_strategy(tiny_bert_dir, files, tmp_path, strategy):
    """LoRA with own heads + DANN (saves an adapter), frozen with a source + DANN, distillation with DANN + L2-SP
    (a source is refused there: its teacher outputs are cached for the training rows)."""
    domain = {
        "lora": [f"domain.source_file={write_source(tmp_path / 'src.tsv', labels=('neg', 'pos'))}",
                 "domain.separate_heads=true", "domain.l2sp_beta=0.01"],
        "frozen": [f"domain.source_file={files['source']}", "domain.l2sp_alpha=0.1"],
        "distill": [f"strategy.distill.teacher={tiny_bert_dir}", "strategy.distill.check_teacher=false",
                    "domain.l2sp_alpha=0.1"],
    }[strategy]  # fmt: skip
    out = tmp_path / "out"
    recipe = recipe_maker(tiny_bert_dir, files["train"], files["dev"], out)
    dann = (f"domain.unlabelled_target_file={files['pool']}", "domain.adversarial_weight=1")
    results = train(recipe(f"strategy.name={strategy}", "train.loop=accelerate", "train.max_steps=2", *domain, *dann))
    assert results["strategy"] == strategy and "DANN" in results["data"]["domain"]
    saved = {p.name for p in out.iterdir()}
    assert ("adapter_model.safetensors" in saved) == (strategy == "lora")
    assert main(["evaluate", str(out)]) == 0


# --- bad input --------------------------------------------------------------------------------------------------


def _bad_cases(files: dict[str, Path], tmp_path: Path, tiny_bert_dir: Path) -> list[tuple[list[str], str]]:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    named = write_source(tmp_path / "named.tsv", labels=("neg", "pos"))
    no_train = ["data.train_file=null", f"domain.source_file={named}", "domain.separate_heads=true"]
    return [
        ([f"domain.source_file={named}"], "domain.source_file"),
        ([f"domain.unlabelled_target_file={empty}", "domain.adversarial_weight=1"], "domain.unlabelled_target_file"),
        (["domain.adversarial_weight=1"], "domain.adversarial_weight"),
        (["domain.target_weight=-1"], "domain.target_weight"),
        (no_train, "domain.separate_heads"),
        ([f"domain.source_file={tmp_path / 'missing.tsv'}"], "domain.source_file"),
        ([f"domain.unlabelled_target_file={files['pool']}", "domain.reweight=true", "strategy.name=distill",
          f"strategy.distill.teacher={tiny_bert_dir}"],
         "domain.reweight"),
    ]  # fmt: skip


def test_bad_domain_inputs_fail_in_one_line_naming_the_key(tiny_bert_dir, files, tmp_path, capsys):
    datasets.disable_progress_bars()  # they write to stderr, whose lines are counted
    transformers_logging.disable_progress_bar()
    try:
        _check_bad_cases(tiny_bert_dir, files, tmp_path, capsys)
    finally:
        datasets.enable_progress_bars()
        transformers_logging.enable_progress_bar()


def _check_bad_cases(tiny_bert_dir, files: dict[str, Path], tmp_path: Path, capsys) -> None:
    base = [
        "train",
        f"model.name_or_path={tiny_bert_dir}",
        f"data.train_file={files['train']}",
        f"data.validation_file={files['dev']}",
        "train.epochs=1",
        "train.precision=fp32",
    ]
    for n, (overrides, key) in enumerate(_bad_cases(files, tmp_path, tiny_bert_dir)):
        capsys.readouterr()
        code = main([*base, f"train.output_dir={tmp_path / f'out{n}'}", *overrides])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, (overrides, err)
        assert len(err) == 1 and key in err[0], (overrides, err)
        assert not (tmp_path / f"out{n}").exists() and not (tmp_path / f"out{n}.incomplete").exists()


# --- images -----------------------------------------------------------------------------------------------------


def test_dann_on_a_tiny_resnet_saves_a_plain_image_model(tmp_path, capsys):
    from tests.test_images import save_tiny_resnet, write_folder

    model = save_tiny_resnet(tmp_path / "resnet")
    train_dir, val_dir = write_folder(tmp_path / "train", 4, seed=0), write_folder(tmp_path / "val", 2, seed=1)
    pool = write_folder(tmp_path / "pool", 3, seed=2)
    out = tmp_path / "out"
    args = [
        "train",
        f"model.name_or_path={model}",
        f"data.train_dir={train_dir}",
        f"data.validation_dir={val_dir}",
        f"train.output_dir={out}",
        "train.epochs=2",
        "train.batch_size=4",
        "train.precision=fp32",
        f"domain.unlabelled_target_file={pool}",
        "domain.adversarial_weight=1.0",
        "domain.l2sp_alpha=0.01",
    ]
    assert main(args) == 0
    assert not any("domain" in k or "extras" in k for k in _weights(out))
    results = json.loads((out / "results.json").read_text())
    assert results["global_steps"] == 6 and "DANN" in results["data"]["domain"]
    capsys.readouterr()
    assert main(["predict", str(out), str(next((val_dir / "red").iterdir()))]) == 0
    assert "label" in capsys.readouterr().out


# --- several processes ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_processes_take_the_steps_of_one_accumulating(no_dropout_bert, files, tmp_path):
    """DDP on 2 CPU processes (gloo) vs. one process accumulating 2 micro-batches: the source's batches, the drawn
    target and unlabelled batches (keyed by micro-step × processes + rank), the own heads and DANN's classifier
    inside DDP's forward all agree, to float noise."""
    from tests.test_accelerate_loop import REPO, _free_port

    args = [
        f"model.name_or_path={no_dropout_bert}",
        f"data.train_file={files['train']}",
        f"data.validation_file={files['dev']}",
        "train.loop=accelerate",
        "train.epochs=1",
        "train.batch_size=8",
        "train.learning_rate=1e-3",
        "train.logging_steps=1",
        "train.precision=fp32",
        f"domain.source_file={write_source(tmp_path / 'src.tsv', labels=('neg', 'pos'))}",
        "domain.separate_heads=true",
        f"domain.unlabelled_target_file={files['pool']}",
        "domain.adversarial_weight=1.0",
        "domain.l2sp_alpha=0.1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launch += ["--main_process_port", str(_free_port()), "-m", "hftransfer", "train", *args]
    launch += [f"train.output_dir={tmp_path / 'two'}"]
    done = subprocess.run(launch, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    by_two = json.loads((tmp_path / "two" / "results.json").read_text())

    one = load_config(None, [*args, "train.gradient_accumulation_steps=2", f"train.output_dir={tmp_path / 'one'}"])
    by_one = train(one)
    assert by_two["global_steps"] == by_one["global_steps"] == 4
    np.testing.assert_allclose(by_two["train_losses"], by_one["train_losses"], rtol=1e-4, atol=0)
    for key in ("accuracy", "f1", "roc_auc"):
        assert by_two["eval"][key] == pytest.approx(by_one["eval"][key], abs=1e-9)
    two_w, one_w = _weights(tmp_path / "two"), _weights(tmp_path / "one")
    for name in one_w:
        torch.testing.assert_close(two_w[name], one_w[name], rtol=1e-4, atol=1e-5)


def test_compare_puts_the_domain_methods_side_by_side(tiny_bert_dir, files, tmp_path, capsys):
    """Issue 17's comparison on one recipe: target only, source only, source then target, joint, joint + L2-SP and
    DANN as `compare --variant`s; each run's results say how it crossed domains, and the table names them all."""
    out, src, pool = tmp_path / "report", files["source"], files["pool"]
    variants = {
        "target-only": "",
        "source-only": f"data.train_file={src}",
        "source-then-target": "model.name_or_path={run:source-only}",
        "joint": f"domain.source_file={src},domain.target_weight=1",
        "joint-l2sp": f"domain.source_file={src},domain.l2sp_alpha=0.1,domain.l2sp_beta=0.01",
        "dann": f"data.train_file=null,domain.source_file={src},domain.unlabelled_target_file={pool},"
        "domain.adversarial_weight=1",
    }
    args = ["compare", "--out", str(out), "--in-process", "--no-latency",
            *(x for name, o in variants.items() for x in ("--variant", f"{name}:{o}")),
            f"model.name_or_path={tiny_bert_dir}", f"data.train_file={files['train']}",
            f"data.validation_file={files['dev']}", "train.max_steps=2", "train.precision=fp32"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert [r["name"] for r in report["runs"]] == list(variants)
    assert all(f"| {name} |" in printed for name in variants)
    domain = {n: json.loads((out / "runs" / n / "results.json").read_text()).get("data") or {} for n in variants}
    assert "domain" not in domain["target-only"] and "domain" not in domain["source-then-target"]
    assert {"joint", "joint-l2sp", "dann"} <= {n for n, d in domain.items() if "domain" in d}
    assert load_config(out / "runs" / "source-then-target" / "config.yaml").model.name_or_path == str(
        out / "runs" / "source-only"
    )
