"""Choosing before training: transferability estimators, domain-shift statistics, frozen features, and the
`rank`/`shift` commands on tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_tsv
from scipy.stats import multivariate_normal
from test_images import save_tiny_resnet, write_folder
from transformers import AutoImageProcessor, AutoModel, AutoTokenizer, BertConfig, BertModel, ResNetModel

from hftransfer.analysis.features import DataSpec, extract_features, read_rows
from hftransfer.analysis.shift import CLOSE, FAR, ProxyADistance, _unbiased_mmd2, interpret, mmd_test, proxy_a_distance
from hftransfer.analysis.transferability import class_evidence, h_score, linear_probe, logme
from hftransfer.cli import main
from hftransfer.config.recipe import DataConfig, save_config
from hftransfer.data.images import decode

# --- estimators on synthetic features ----------------------------------------------------------------------------


def clusters(rng: np.random.Generator, rows: int, dims: int, classes: int, spread: float):
    """Labels and features whose first `classes` dims hold a class-dependent offset of size `spread`."""
    labels = rng.integers(0, classes, rows)
    features = rng.normal(size=(rows, dims))
    features[np.arange(rows), labels] += spread
    return features, labels


@pytest.mark.parametrize(("rows", "dims"), [(40, 5), (12, 30)])
def test_logme_is_the_maximised_gaussian_marginal_likelihood(rows, dims):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(rows, dims))
    target = (rng.random(rows) < 0.5).astype(float)
    u, s, _ = np.linalg.svd(features, full_matrices=False)
    found = class_evidence(u, s, dims, target)

    def evidence(alpha: float, beta: float) -> float:  # y ~ N(0, F F^T / alpha + I / beta), per row
        covariance = features @ features.T / alpha + np.eye(rows) / beta
        return multivariate_normal(np.zeros(rows), covariance).logpdf(target) / rows

    assert found.log_evidence == pytest.approx(evidence(found.alpha, found.beta), abs=1e-9)
    for alpha_factor, beta_factor in [(1.3, 1), (0.7, 1), (1, 1.25), (1, 0.8)]:  # a maximum: no neighbour is higher
        assert evidence(found.alpha * alpha_factor, found.beta * beta_factor) < found.log_evidence + 1e-6


def test_estimators_rank_informative_features_above_noise_and_random_labels():
    rng = np.random.default_rng(1)
    features, labels = clusters(rng, rows=300, dims=24, classes=3, spread=3.0)
    shuffled = rng.permutation(labels)
    noise = rng.normal(size=features.shape)
    for score in (logme, h_score, lambda f, y: linear_probe(f, y).accuracy):
        good = score(features, labels)
        assert good > score(features, shuffled)
        assert good > score(noise, labels)
    assert linear_probe(features, labels).accuracy > 0.9
    assert linear_probe(noise, labels).accuracy < 0.5


def test_h_score_shrinkage_keeps_ranking_when_dims_exceed_rows():
    rng = np.random.default_rng(2)
    features, labels = clusters(rng, rows=60, dims=120, classes=2, spread=3.0)
    shuffled = rng.permutation(labels)
    # Bao et al.'s original saturates at classes - 1 for any labels: every split is separable in-sample.
    assert h_score(features, shuffled, shrinkage=0.0) == pytest.approx(1.0, abs=1e-6)
    assert h_score(features, labels) > 1.5 * h_score(features, shuffled)
    assert logme(features, labels) > logme(features, shuffled)


def test_estimators_reject_bad_input():
    features = np.ones((10, 3))
    with pytest.raises(ValueError, match="one label per feature row"):
        logme(features, np.zeros(9, dtype=int))
    with pytest.raises(ValueError, match="single class"):
        h_score(features, np.zeros(10, dtype=int))
    with pytest.raises(ValueError, match="rarest class has 1 rows"):
        linear_probe(np.random.default_rng(0).normal(size=(10, 3)), np.r_[np.zeros(9, dtype=int), 1])


# --- domain shift --------------------------------------------------------------------------------------------------


def test_proxy_a_distance_is_zero_for_one_distribution_two_for_disjoint_and_between_for_overlap():
    rng = np.random.default_rng(3)
    same = proxy_a_distance(rng.normal(size=(300, 10)), rng.normal(size=(250, 10)))
    assert same.pad < 0.3
    assert same.ci_low <= same.pad <= same.ci_high
    disjoint = proxy_a_distance(rng.normal(size=(300, 10)), rng.normal(size=(300, 10)) + 10.0)
    assert disjoint.pad > 1.95 and disjoint.ci_high <= 2.0
    shifted = rng.normal(size=(300, 10))
    shifted[:, 0] += 1.0  # best linear classifier errs Phi(-0.5) = 0.31 -> PAD about 0.77
    overlap = proxy_a_distance(rng.normal(size=(300, 10)), shifted)
    assert 0.4 < overlap.pad < 1.1
    assert overlap.ci_low < overlap.pad < overlap.ci_high


def test_mmd_matches_a_direct_unbiased_estimate_and_its_test_separates():
    rng = np.random.default_rng(4)
    kernel = rng.random((7, 7))
    kernel = (kernel + kernel.T) / 2
    np.fill_diagonal(kernel, 0.0)
    first = np.array([1, 0, 1, 1, 0, 0, 1.0])
    x, y = np.flatnonzero(first == 1), np.flatnonzero(first == 0)
    direct = (
        sum(kernel[i, j] for i in x for j in x if i != j) / (len(x) * (len(x) - 1))
        + sum(kernel[i, j] for i in y for j in y if i != j) / (len(y) * (len(y) - 1))
        - 2 * sum(kernel[i, j] for i in x for j in y) / (len(x) * len(y))
    )
    assert _unbiased_mmd2(kernel, first[:, None])[0] == pytest.approx(direct)

    same = mmd_test(rng.normal(size=(150, 8)), rng.normal(size=(120, 8)), permutations=200)
    assert same.p_value > 0.05 and abs(same.mmd2) < 0.02
    apart = mmd_test(rng.normal(size=(150, 8)), rng.normal(size=(120, 8)) + 3.0, permutations=200)
    assert apart.p_value == pytest.approx(1 / 201) and apart.mmd2 > 0.5


@pytest.mark.parametrize(("pad", "verdict"), [(0.2, "close"), (1.0, "moderate"), (1.8, "far")])
def test_interpretation_follows_documented_thresholds(pad, verdict):
    assert CLOSE < 1.0 < FAR
    line = interpret(ProxyADistance(pad, 0.5 - pad / 4, pad - 0.1, pad + 0.1, 0.95, 5))
    assert line.startswith(verdict)
    assert ("freeze more" in line) == (verdict == "close") and ("fine-tune more" in line) == (verdict == "far")


# --- features ------------------------------------------------------------------------------------------------------


def test_text_features_are_masked_means_independent_of_batching(tiny_bert_dir, toy_text_files):
    spec = DataSpec(str(toy_text_files[0]), max_rows=20)
    rows = read_rows(spec, DataConfig(), "text-classification")
    alone = extract_features(str(tiny_bert_dir), rows, DataConfig(), "text-classification", batch_size=1)
    batched = extract_features(str(tiny_bert_dir), rows, DataConfig(), "text-classification", batch_size=8)
    assert alone.shape == (20, 32)
    np.testing.assert_allclose(alone, batched, atol=1e-5)  # padding never leaks into the mean
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    model = AutoModel.from_pretrained(tiny_bert_dir).eval()
    with torch.no_grad():
        states = model(**tokenizer(rows[0]["sentence"], return_tensors="pt")).last_hidden_state
    np.testing.assert_allclose(alone[0], states[0].mean(dim=0).numpy(), atol=1e-5)


def test_layer_mean_features_average_every_hidden_state_independent_of_batching(tiny_bert_dir, toy_text_files):
    spec = DataSpec(str(toy_text_files[0]), max_rows=12)
    rows = read_rows(spec, DataConfig(), "text-classification")
    alone, batched = (
        extract_features(str(tiny_bert_dir), rows, DataConfig(), "text-classification", batch_size=b, layers="mean")
        for b in (1, 8)
    )
    np.testing.assert_allclose(alone, batched, atol=1e-5)  # padding never leaks into any layer's mean
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    model = AutoModel.from_pretrained(tiny_bert_dir).eval()
    with torch.no_grad():
        states = model(**tokenizer(rows[3]["sentence"], return_tensors="pt"), output_hidden_states=True).hidden_states
    assert len(states) == 3  # embedding output + 2 blocks
    expected = torch.stack([layer[0].mean(dim=0) for layer in states]).mean(dim=0)
    np.testing.assert_allclose(alone[3], expected.numpy(), atol=1e-5)
    last = extract_features(str(tiny_bert_dir), rows, DataConfig(), "text-classification")
    assert not np.allclose(alone, last, atol=1e-3)  # the choice changes what is scored


@pytest.fixture(scope="module")
def image_setup(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("rank-images")
    return save_tiny_resnet(root / "resnet"), write_folder(root / "train", 5, seed=0)


def test_image_features_are_what_the_head_reads(image_setup, tmp_path):
    model_dir, folder = image_setup
    out = tmp_path / "rank.json"
    assert main(["rank", "--data", str(folder), "--models", str(model_dir), "--folds", "2", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["task"] == "image-classification" and report["rows"] == 15
    assert report["classes"] == ["blue", "green", "red"]
    assert report["candidates"][0]["dims"] == 16  # the last stage's width, pooled
    assert (report["candidates"][0]["layers"], report["candidates"][0]["hidden_size"]) == (2, 16)  # 1 + 1 blocks
    assert report["feature_layers"] == "last"  # auto: image stages differ in width, so no layer mean
    assert main(["rank", "--data", str(folder), "--models", str(model_dir), "--layers", "mean"]) == 2

    rows = read_rows(DataSpec(str(folder), max_rows=3), DataConfig(), "image-classification")
    features = extract_features(str(model_dir), rows, DataConfig(), "image-classification")
    pixels = AutoImageProcessor.from_pretrained(model_dir)(images=[decode(rows[1]["image"])], return_tensors="pt")
    with torch.no_grad():
        pooled = ResNetModel.from_pretrained(model_dir).eval()(**pixels).pooler_output.flatten(1)
    np.testing.assert_allclose(features[1], pooled[0].numpy(), atol=1e-5)


# --- commands ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def second_bert(tmp_path_factory, tiny_bert_dir) -> Path:
    """Another tiny BERT (other width and weights) with the same tokenizer."""
    folder = tmp_path_factory.mktemp("second-bert")
    torch.manual_seed(1)
    config = BertConfig.from_pretrained(tiny_bert_dir, hidden_size=16, num_hidden_layers=1, intermediate_size=32)
    BertModel(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def twin_bert(tmp_path_factory, tiny_bert_dir) -> Path:
    """tiny_bert_dir's architecture with other weights."""
    folder = tmp_path_factory.mktemp("twin-bert")
    torch.manual_seed(2)
    BertModel(BertConfig.from_pretrained(tiny_bert_dir)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(folder)
    return folder


def test_rank_cli_orders_by_logme_and_reports_every_score(tiny_bert_dir, second_bert, toy_text_files, tmp_path, capsys):
    out = tmp_path / "ranking.json"
    models = [str(second_bert), str(tiny_bert_dir)]
    assert main(["rank", "--data", str(toy_text_files[0]), "--models", *models, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["rows"] == 96 and report["classes"] == ["0", "1"]
    scores = [c["logme"] for c in report["candidates"]]
    assert scores == sorted(scores, reverse=True)
    assert [c["rank"] for c in report["candidates"]] == [1, 2]
    assert {c["model"] for c in report["candidates"]} == set(models)
    assert {c["dims"] for c in report["candidates"]} == {16, 32}
    assert {(c["layers"], c["hidden_size"]) for c in report["candidates"]} == {(1, 16), (2, 32)}
    for c in report["candidates"]:
        assert f"| {c['rank']} | {c['model']} | {c['logme']:.4f} |" in printed
    # Candidates of different depth: the report and the printed table warn that frozen scores ignore it.
    assert "(blocks x width: 1x16, 2x32)" in report["caveat"] and report["caveat"] in printed
    # The table's LogME is LogME of the model's frozen features on these rows: for text, by default, the mean
    # over all layers; --layers last scores the last layer alone.
    assert report["feature_layers"] == "mean" and "features: mean over all layers" in printed
    top = report["candidates"][0]["model"]
    spec = DataSpec(str(toy_text_files[0]))
    rows = read_rows(spec, DataConfig(), "text-classification")
    for layers in ("mean", "last"):
        features = extract_features(top, rows, DataConfig(), "text-classification", layers=layers)
        expected = logme(features, np.asarray(rows["label"]))
        if layers == "last":
            assert (
                main(["rank", "--data", str(toy_text_files[0]), "--models", top, "--layers", "last", "--out", str(out)])
                == 0
            )
            report = json.loads(out.read_text())
            assert report["feature_layers"] == "last"
        assert next(c for c in report["candidates"] if c["model"] == top)["logme"] == pytest.approx(expected, rel=1e-6)


def test_rank_has_no_size_caveat_for_candidates_of_one_architecture(tiny_bert_dir, twin_bert, toy_text_files, capsys):
    out = toy_text_files[0].parent / "twins.json"
    models = [str(tiny_bert_dir), str(twin_bert)]
    assert main(["rank", "--data", str(toy_text_files[0]), "--models", *models, "--folds", "2", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert {(c["layers"], c["hidden_size"]) for c in report["candidates"]} == {(2, 32)}
    assert report["caveat"] is None and "Caveat" not in capsys.readouterr().out


def test_rank_reads_a_recipe_split(tiny_recipe, tiny_bert_dir, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    save_config(tiny_recipe(), recipe)
    out = tmp_path / "ranking.json"
    args = ["rank", "--data", str(recipe), "--split", "validation", "--models", str(tiny_bert_dir), "--out", str(out)]
    assert main([*args, "--folds", "3"]) == 0
    report = json.loads(out.read_text())
    assert report["rows"] == 32 and report["split"] == "validation"


def test_rank_fails_early_on_bad_input(tiny_bert_dir, toy_text_files, tmp_path, capsys):
    data = str(toy_text_files[0])
    assert main(["rank", "--data", data, "--models", str(tmp_path / "nowhere")]) == 2
    assert "Cannot read checkpoint" in capsys.readouterr().err
    assert main(["rank", "--data", data, "--models", str(tiny_bert_dir), "--label-column", "stars"]) == 2
    assert "--label-column" in capsys.readouterr().err
    unlabelled = write_tsv(tmp_path / "texts.tsv", ["review"], [["fine"], ["bad"]])
    assert main(["rank", "--data", str(unlabelled), "--models", str(tiny_bert_dir)]) == 2
    assert "--text-columns" in capsys.readouterr().err


def test_shift_cli_compares_two_sets_and_interprets(tiny_bert_dir, toy_text_files, tmp_path, capsys):
    other = tmp_path / "docs.txt"
    other.write_text("\n".join(f"Return the {i}th element of the list, or raise IndexError." for i in range(40)))
    out = tmp_path / "shift.json"
    args = ["shift", "--source", str(toy_text_files[0]), "--target", str(other), "--model", str(tiny_bert_dir)]
    assert main([*args, "--permutations", "50", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    pad, mmd = report["proxy_a_distance"], report["mmd"]
    assert report["rows"] == {"source": 96, "target": 40}
    assert 0.0 <= pad["ci_low"] <= pad["pad"] <= pad["ci_high"] <= 2.0
    assert pad["pad"] > FAR  # templated code docs vs film reviews: separable even in random features
    assert 0 < mmd["p_value"] <= 1 and mmd["permutations"] == 50
    assert report["interpretation"].startswith("far")
    assert "proxy A-distance" in capsys.readouterr().out
