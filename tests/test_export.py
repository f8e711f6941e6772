"""`hftransfer export --onnx`: the graph reproduces the training run's eval and `predict`, for full
(mean-pooled) and LoRA runs; without onnx installed the command says what to install."""

from __future__ import annotations

import builtins
import json
import random
from pathlib import Path

import numpy as np
import pytest
from conftest import write_tsv

from hftransfer.artifacts.onnx import ExportError, export_onnx
from hftransfer.artifacts.saved import load_run
from hftransfer.cli import main
from hftransfer.config.recipe import load_config
from hftransfer.evaluation.metrics import classification_metrics, softmax
from hftransfer.evaluation.scoring import predict_records
from hftransfer.training.pipeline import train


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("export-data")
    rng = random.Random(3)
    words = ["good", "great", "bad", "dull"]
    rows = [[f"it was {' '.join(rng.choices(words, k=rng.randint(1, 6)))}", rng.randint(0, 1)] for _ in range(40)]
    return write_tsv(folder / "train.tsv", ["sentence", "label"], rows[:28]), write_tsv(
        folder / "dev.tsv", ["sentence", "label"], rows[28:]
    )


def _run(tiny_bert_dir, data, out: Path, *overrides: str) -> Path:
    train(
        load_config(
            None,
            [
                f"model.name_or_path={tiny_bert_dir}",
                f"data.train_file={data[0]}",
                f"data.validation_file={data[1]}",
                f"train.output_dir={out}",
                "train.max_steps=2",
                "train.batch_size=8",
                "train.learning_rate=1e-3",
                *overrides,
            ],
        )
    )
    return out


def _onnx_scores(folder: Path, texts: list[str]) -> np.ndarray:
    """Probabilities from onnxruntime alone, one unpadded text at a time (a different batching than the check)."""
    import onnxruntime as ort
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    logits = []
    for text in texts:
        encoded = tokenizer(text, return_tensors="np")
        logits.append(session.run(["logits"], {n: encoded[n] for n in names})[0][0])
    return softmax(np.stack(logits))


def _dev(data) -> tuple[list[str], list[int]]:
    rows = [line.split("\t") for line in data[1].read_text().splitlines()[1:]]
    return [text for text, _ in rows], [int(label) for _, label in rows]


def test_full_mean_pooled_export_reproduces_the_training_eval(tiny_bert_dir, data, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    out = _run(tiny_bert_dir, data, tmp_path / "full", "model.pooling=mean")
    onnx_dir = tmp_path / "onnx"
    assert main(["export", str(out), "--out", str(onnx_dir), "--onnx"]) == 0
    assert "onnxruntime matches torch on 12 validation rows" in capsys.readouterr().out
    assert {"model.onnx", "config.json", "tokenizer.json", "labels.json", "config.yaml"} <= {
        p.name for p in onnx_dir.iterdir()
    }
    report = json.loads((onnx_dir / "onnx_check.json").read_text())
    assert report["max_abs_diff"] <= 1e-4 and report["same_predictions"]

    texts, labels = _dev(data)
    scores = _onnx_scores(onnx_dir, texts)
    results = json.loads((out / "results.json").read_text())
    again = classification_metrics(labels, scores)
    assert again["confusion_matrix"] == results["eval"]["confusion_matrix"]
    # Not ROC-AUC: a barely trained tiny model gives near-tied scores, whose order 1e-6 of float noise may flip.
    predicted = [[r["scores"][n] for n in ("0", "1")] for r in predict_records(load_run(out), texts)]
    np.testing.assert_allclose(scores, predicted, atol=1e-5)


@pytest.mark.slow
def test_lora_export_merges_the_adapter(tiny_bert_dir, data, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    out = _run(tiny_bert_dir, data, tmp_path / "lora", "strategy.name=lora", "strategy.lora.r=4")
    done = export_onnx(out, tmp_path / "onnx")
    assert done.rows_checked == 12 and done.max_abs_diff <= 1e-4
    texts, _ = _dev(data)
    predicted = [[r["scores"][n] for n in ("0", "1")] for r in predict_records(load_run(out), texts)]
    np.testing.assert_allclose(_onnx_scores(tmp_path / "onnx", texts), predicted, atol=1e-5)


def test_missing_onnx_is_a_clear_error(monkeypatch, tmp_path, capsys):
    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name.split(".")[0] in ("onnx", "onnxruntime"):
            raise ImportError(f"No module named '{name}'", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    with pytest.raises(ExportError, match="pip install onnx onnxruntime"):
        export_onnx(tmp_path / "any-run", tmp_path / "onnx")
    assert main(["export", str(tmp_path / "any-run"), "--out", str(tmp_path / "onnx"), "--onnx"]) == 2
    assert "pip install onnx onnxruntime" in capsys.readouterr().err
    assert not (tmp_path / "onnx").exists()
