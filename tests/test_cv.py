"""`hftransfer cv`: stratified seeded folds, an end-to-end run on the tiny BERT with a test file, bad input exits 2."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hftransfer.cli import main
from hftransfer.errors import UserError
from hftransfer.training import crossval
from hftransfer.training.crossval import folds
from tests.conftest import write_toy_text_files, write_tsv

LABELS = ["a"] * 23 + ["b"] * 17 + ["c"] * 9 + ["d"] * 5


def test_folds_are_disjoint_stratified_and_cover_every_row_once():
    labels = np.array(LABELS)
    cuts = folds(labels, 5, seed=3)
    assert len(cuts) == 5
    held = np.concatenate([h for _, h in cuts])
    assert sorted(held) == list(range(len(labels)))  # every row held out exactly once
    for train, h in cuts:
        assert not set(train) & set(h) and len(train) + len(h) == len(labels)
    for name in "abcd":
        per_fold = [int((labels[h] == name).sum()) for _, h in cuts]
        assert max(per_fold) - min(per_fold) <= 1, (name, per_fold)
        assert sum(per_fold) == LABELS.count(name)


def test_folds_depend_on_the_seed_only():
    same = [h.tolist() for _, h in folds(LABELS, 4, seed=7)]
    assert same == [h.tolist() for _, h in folds(LABELS, 4, seed=7)]
    assert same != [h.tolist() for _, h in folds(LABELS, 4, seed=8)]
    assert [h.tolist() for _, h in folds(np.array([0, 1] * 10), 2, 0)] != [list(range(10)), list(range(10, 20))]


def test_folds_refuse_too_few_folds_or_rows_naming_the_class():
    with pytest.raises(UserError, match=r"--folds must be at least 2.*got 1"):
        folds(LABELS, 1)
    with pytest.raises(UserError, match=r"--folds 6 needs .*class 'd' has only 5 rows; use --folds 5 or fewer"):
        folds(LABELS, 6)


@pytest.fixture(scope="module")
def cv_run(tiny_bert_dir, tmp_path_factory):
    """One 2-fold cv through the CLI with a test file and kept fold models, shared by the checks below."""
    folder = tmp_path_factory.mktemp("cv")
    train, dev = write_toy_text_files(folder)
    out = folder / "cv-out"
    args = ["cv", "--folds", "2", "--out", str(out), "--keep-models", f"model.name_or_path={tiny_bert_dir}",
            f"data.train_file={train}", f"data.validation_file={dev}", f"data.test_file={dev}", "train.epochs=1",
            "train.batch_size=16", "train.learning_rate=1e-3", "train.precision=fp32"]  # fmt: skip
    return out, args


def test_cv_cli_writes_per_fold_and_mean_metrics(cv_run, capsys):
    out, args = cv_run
    assert main(args) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "cv.json").read_text())
    assert report["folds"] == 2 and report["seed"] == 42 and report["pool"]["rows"] == 96  # validation not pooled
    per_fold = report["per_fold"]
    assert [f["fold"] for f in per_fold] == [1, 2]
    assert sum(f["held_out_rows"] for f in per_fold) == 96
    assert all(f["train_rows"] + f["held_out_rows"] == 96 for f in per_fold)
    assert sum(f["eval"]["num_samples"] for f in per_fold) == 96  # each fold scored on exactly its held-out rows
    accuracies = [f["eval"]["accuracy"] for f in per_fold]
    assert report["mean"]["accuracy"]["mean"] == pytest.approx(np.mean(accuracies))
    assert report["mean"]["accuracy"]["sd"] == pytest.approx(np.std(accuracies, ddof=1))
    assert "| mean ± sd |" in printed and f"{np.mean(accuracies):.4f} ± {np.std(accuracies, ddof=1):.4f}" in printed
    for f in per_fold:
        assert f["test"]["num_samples"] == 32 and (out / f"fold-{f['fold']}" / "results.json").is_file()
        saved = json.loads((out / f"fold-{f['fold']}" / "results.json").read_text())
        assert saved["eval"]["accuracy"] == f["eval"]["accuracy"]


def test_cv_test_score_is_the_mean_of_the_fold_models_probabilities(cv_run):
    from hftransfer.artifacts.saved import load_run
    from hftransfer.evaluation.inference import dataset_logits
    from hftransfer.evaluation.metrics import classification_metrics, softmax
    from hftransfer.evaluation.scoring import encode_run_split
    from hftransfer.models.tasks import get_task

    out, _ = cv_run
    report = json.loads((out / "cv.json").read_text())  # written by the test above (module fixture order)
    probabilities = []
    for fold in (1, 2):
        run = load_run(out / f"fold-{fold}")
        encoded = encode_run_split(run, "test")
        collator = get_task(run.config.task).collator(run.tokenizer, run.config.data)
        probabilities.append(softmax(dataset_logits(run.model, encoded, collator)))
    expected = classification_metrics(encoded["labels"], np.mean(probabilities, axis=0), label_names=run.labels.names)
    ensemble = report["test"]["averaged_predictions"]
    assert ensemble["accuracy"] == pytest.approx(expected["accuracy"])
    assert ensemble["roc_auc"] == pytest.approx(expected["roc_auc"], abs=1e-6)
    assert report["test"]["per_fold_mean"]["accuracy"]["mean"] == pytest.approx(
        np.mean([f["test"]["accuracy"] for f in report["per_fold"]])
    )


def test_cv_bad_input_exits_2_before_any_model_loads(tiny_bert_dir, tmp_path, capsys, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("a model loaded")

    monkeypatch.setattr(crossval, "run_pipeline", no_training)
    rows = [[f"text {i}", "common"] for i in range(10)] + [["odd one", "rare"], ["odd two", "rare"]]
    train = write_tsv(tmp_path / "train.tsv", ["sentence", "label"], rows)
    base = [f"model.name_or_path={tiny_bert_dir}", f"data.train_file={train}", "train.epochs=1"]
    out = tmp_path / "out"
    assert main(["cv", "--folds", "1", "--out", str(out), *base]) == 2
    assert "--folds must be at least 2" in capsys.readouterr().err
    assert main(["cv", "--folds", "3", "--out", str(out), *base]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("hftransfer cv: error:")]
    assert len(errors) == 1 and "--folds 3" in errors[0] and "class 'rare' has only 2 rows" in errors[0]
    assert not out.exists()
    (out / "fold-1").mkdir(parents=True)
    assert main(["cv", "--folds", "2", "--out", str(out), *base]) == 2
    assert "is not empty" in capsys.readouterr().err


def test_pool_is_the_whole_train_split_even_without_a_validation_file(tiny_recipe):
    from hftransfer.models.tasks import resolve_task

    config = resolve_task(tiny_recipe("data.validation_file=null", "data.max_train_samples=90"))
    pool, test, labels, where = crossval._pool(config)
    assert len(pool) == 90 and test is None  # no data.validation_size share held out of it
    assert labels.names == ("0", "1") and where["source"] == config.data.train_file
