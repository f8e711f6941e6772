"""Model cards: valid hub metadata for every strategy and task, a body with the run's numbers, and usage
snippets that really load the model and agree with `hftransfer predict`."""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import write_tsv
from huggingface_hub import ModelCard

from hftransfer.artifacts.card import render_model_card, write_model_card
from hftransfer.artifacts.saved import load_run
from hftransfer.config.recipe import load_config
from hftransfer.evaluation.inference import dataset_logits
from hftransfer.evaluation.scoring import encode_run_split, predict_records
from hftransfer.models.tasks import get_task
from hftransfer.training.pipeline import train

TEXTS = ["the film was great and great", "the film was awful awful", "the film was good"]


@pytest.fixture(scope="module")
def toy_files(tmp_path_factory) -> tuple[Path, Path]:
    rng = random.Random(1)
    folder = tmp_path_factory.mktemp("card-data")

    def rows(n: int) -> list[list]:
        out = []
        for _ in range(n):
            label = rng.randint(0, 2)
            word = rng.choice([["awful", "bad"], ["fine", "okay"], ["great", "good"]][label])
            out.append([f"the film was {word} {word}", ["negative", "neutral", "positive"][label]])
        return out

    return write_tsv(folder / "train.tsv", ["sentence", "label"], rows(24)), write_tsv(
        folder / "dev.tsv", ["sentence", "label"], rows(12)
    )


def _train(tiny_bert_dir, toy_files, out: Path, *overrides: str) -> dict:
    train_file, dev_file = toy_files
    config = load_config(
        None,
        [
            f"model.name_or_path={tiny_bert_dir}",
            f"data.train_file={train_file}",
            f"data.validation_file={dev_file}",
            f"train.output_dir={out}",
            "train.max_steps=2",
            "train.batch_size=8",
            "train.learning_rate=1e-3",
            *overrides,
        ],
    )
    return train(config)


@pytest.fixture(scope="module")
def full_run(tiny_bert_dir, toy_files, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "full-run"
    _train(tiny_bert_dir, toy_files, out, "hub.base_model=google-bert/bert-base-uncased", "hub.license=apache-2.0")
    return out


@pytest.fixture(scope="module")
def lora_run(tiny_bert_dir, toy_files, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "lora-run"
    _train(tiny_bert_dir, toy_files, out, "strategy.name=lora", "model.pooling=mean")
    return out


def _front_matter(card_text: str) -> dict:
    match = re.match(r"---\n(.*?)\n---\n", card_text, re.S)
    assert match, "card must start with a YAML block"
    return yaml.safe_load(match.group(1))


def _snippet(card_text: str) -> str:
    return re.search(r"## How to use\n\n```python\n(.*?)```", card_text, re.S).group(1)


def _run_snippet(card_text: str, text: str) -> dict[str, float]:
    """Execute the card's usage code, with its example replaced by `text`, and return label -> score."""
    code = re.sub(r"print\(classifier\(.*\)\)", "", _snippet(card_text))
    scope: dict = {}
    exec(code, scope)  # the snippet as a user would paste it
    return {r["label"]: r["score"] for r in scope["classifier"](text, top_k=None)}


def _predicted(folder: Path, text: str) -> dict[str, float]:
    (record,) = predict_records(load_run(folder), [text])
    return record["scores"]


def test_full_run_writes_a_card_with_valid_hub_metadata(full_run):
    results = json.loads((full_run / "results.json").read_text())
    text = (full_run / "README.md").read_text()
    meta = _front_matter(text)
    assert meta["base_model"] == "google-bert/bert-base-uncased"
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-classification"
    assert meta["license"] == "apache-2.0"
    assert {"hftransfer", "full"} <= set(meta["tags"])
    assert {"accuracy", "f1", "roc_auc"} <= set(meta["metrics"])

    card = ModelCard.load(full_run / "README.md")  # huggingface_hub's own parser, model-index included
    scores = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert scores["accuracy"] == pytest.approx(results["eval"]["accuracy"], abs=1e-4)
    assert scores["roc_auc"] == pytest.approx(results["eval"]["roc_auc"], abs=1e-4)
    assert {r.task_type for r in card.data.eval_results} == {"text-classification"}


def test_card_body_reports_the_run(full_run):
    results = json.loads((full_run / "results.json").read_text())
    text = (full_run / "README.md").read_text()
    assert f"{results['trainable_params']:,} of {results['total_params']:,}" in text
    assert results["hardware"] in text and "## Limitations" in text
    for name, row in zip(results["eval"]["per_class"], results["eval"]["confusion_matrix"], strict=True):
        assert f"| `{name}` | " + " | ".join(str(v) for v in row) + " |" in text
    assert re.search(r"training time \| \d+\.\d s", text)
    assert f"{results['global_steps']} (max_steps=2)" in text


def test_full_card_snippet_matches_predict(full_run):
    text = (full_run / "README.md").read_text()
    assert f'pipeline("text-classification", model="{full_run}")' in _snippet(text)
    for sample in TEXTS[:2]:
        from_card, from_predict = _run_snippet(text, sample), _predicted(full_run, sample)
        assert from_card.keys() == from_predict.keys() == {"negative", "neutral", "positive"}
        for label, score in from_predict.items():
            assert from_card[label] == pytest.approx(score, abs=1e-5)


def test_adapter_card_uses_peft_and_its_snippet_matches_predict(lora_run):
    text = (lora_run / "README.md").read_text()
    meta = _front_matter(text)
    assert meta["library_name"] == "peft" and {"lora", "peft", "custom_code"} <= set(meta["tags"])
    assert meta["inference"] is False  # the Hub widget runs no remote code
    assert "trust_remote_code=True" in _snippet(text) and "mean-pooled" in text
    from_card, from_predict = _run_snippet(text, TEXTS[0]), _predicted(lora_run, TEXTS[0])
    assert from_card == pytest.approx(from_predict, abs=1e-5)


def test_merged_card_is_a_transformers_model_that_needs_remote_code_for_mean_pooling(lora_run):
    text = render_model_card(lora_run, model_ref="me/merged", merged=True)
    meta = _front_matter(text)
    assert meta["library_name"] == "transformers" and "merged-adapter" in meta["tags"]
    assert "PeftModel" not in _snippet(text) and "trust_remote_code=True" in _snippet(text)


def test_distilled_and_image_outputs_render(full_run, tmp_path):
    """Folders other strategies/tasks write, built directly: metadata stays valid, the body adapts."""
    distilled = tmp_path / "distilled"
    shutil.copytree(full_run, distilled)
    results = json.loads((distilled / "results.json").read_text())
    results["strategy"] = "distill"
    results["distill"] = {
        "teacher_model": "outputs/teacher",
        "temperature": 2.0,
        "alpha": 0.5,
        "teacher": {"accuracy": 0.91, "f1": 0.9, "params": 22_700_000},
        "student": {"accuracy": 0.88, "f1": 0.87, "params": 4_400_000},
    }
    (distilled / "results.json").write_text(json.dumps(results))
    text = (write_model_card(distilled, model_ref="me/student")).read_text()
    assert "distill" in _front_matter(text)["tags"]
    assert "| teacher | 0.91 | 0.9 | 22700000 |" in text and "`outputs/teacher`" in text

    image = tmp_path / "image"
    shutil.copytree(full_run, image)
    recipe = yaml.safe_load((image / "config.yaml").read_text())
    recipe["task"] = "image-classification"
    (image / "config.yaml").write_text(yaml.safe_dump(recipe))
    text = render_model_card(image, model_ref="me/resnet")
    assert _front_matter(text)["pipeline_tag"] == "image-classification"
    assert 'pipeline("image-classification", model="me/resnet")' in text
    assert {r.task_type for r in ModelCard(text).data.eval_results} == {"image-classification"}


def test_card_for_a_folder_without_results_is_a_clear_error(tmp_path):
    from hftransfer.artifacts.card import CardError

    with pytest.raises(CardError, match=r"results\.json"):
        render_model_card(tmp_path)


def test_predict_round_trip_matches_the_training_run_eval(full_run, toy_files):
    """`hftransfer predict` on the dev texts reproduces the eval the training run recorded.

    The 2-step tiny model scores every text within ~1e-4 of the others, so ROC-AUC is decided by float noise
    between batchings; the probabilities themselves are compared to the eval path's instead.
    """
    from hftransfer.evaluation.metrics import classification_metrics, softmax

    results = json.loads((full_run / "results.json").read_text())
    _, dev_file = toy_files
    rows = [line.split("\t") for line in dev_file.read_text().splitlines()[1:]]
    run = load_run(full_run)
    records = list(predict_records(run, [text for text, _ in rows], batch_size=5))
    names = list(run.labels.names)
    scores = np.array([[r["scores"][n] for n in names] for r in records])
    labels = [names.index(label) for _, label in rows]
    again = classification_metrics(labels, scores, label_names=names)
    assert again["confusion_matrix"] == results["eval"]["confusion_matrix"]
    assert again["accuracy"] == results["eval"]["accuracy"]

    encoded = encode_run_split(run, "validation")
    collator = get_task(run.config.task).collator(run.tokenizer, run.config.data)
    eval_scores = softmax(dataset_logits(run.model, encoded, collator, batch_size=64))
    np.testing.assert_allclose(scores, eval_scores, atol=1e-6)


@pytest.mark.slow
def test_image_run_card_snippet_matches_predict(tmp_path):
    """A real tiny-ResNet image run: image metadata, and the card's pipeline labels an image like `predict`."""
    from test_images import save_tiny_resnet, write_folder

    model = save_tiny_resnet(tmp_path / "resnet")
    train_dir, val_dir = write_folder(tmp_path / "train", 4, seed=0), write_folder(tmp_path / "val", 2, seed=1)
    out = tmp_path / "image-run"
    train(
        load_config(
            None,
            [
                f"model.name_or_path={model}",
                f"data.train_dir={train_dir}",
                f"data.validation_dir={val_dir}",
                f"train.output_dir={out}",
                "train.max_steps=2",
                "train.batch_size=6",
            ],
        )
    )
    text = (out / "README.md").read_text()
    meta = _front_matter(text)
    assert meta["pipeline_tag"] == "image-classification" and "image-classification" in meta["tags"]
    assert "local image folders `train` / `val`" in text
    image = str(next(p for p in sorted((val_dir / "red").iterdir()) if p.suffix == ".png"))
    from_card, from_predict = _run_snippet(text, image), _predicted(out, image)
    assert from_card == pytest.approx(from_predict, abs=1e-4)
