"""The standard client: every strategy's output folder, with either pooling, read by the real
`transformers.pipeline`. A folder predicts there exactly as `hftransfer predict` does, or plain `pipeline` refuses
it (transformers' trust_remote_code message) and `trust_remote_code=True` predicts as hftransfer does. Also: the
card's Hub metadata and the line `push` prints, hftransfer's own loads of finished runs without transformers' load
report, and missing folders named in one line."""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
from pathlib import Path

import pytest
import transformers
import yaml
from conftest import MINILM, recipe_maker, save_tiny_bert, write_tsv
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, pipeline

from hftransfer.artifacts.client import AS_IS, HFTRANSFER_ONLY, REMOTE_CODE, client_kind
from hftransfer.artifacts.saved import load_run
from hftransfer.cli import main
from hftransfer.config.locations import resolve_location
from hftransfer.evaluation.scoring import predict_records
from hftransfer.models.remote_code import MODELING_FILE
from hftransfer.models.tasks import TEXT, get_task
from hftransfer.training.pipeline import train

TEXTS = ["the film was great great", "the film was awful", "it was fine, okay", "ok"]
CLASSES = ["negative", "neutral", "positive"]
STRATEGY_SETTINGS = {
    "full": [],
    "frozen": ["strategy.frozen.mode=head_only"],
    "lora": ["train.learning_rate=1e-2"],
    "distill": ["strategy.distill.check_teacher=false", "strategy.distill.measure_latency=false"],
}
CASES = [(strategy, pooling) for strategy in STRATEGY_SETTINGS for pooling in ("cls", "mean")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """One finished run per strategy and pooling on a tiny 2-label BERT, trained on 3 classes (so a head sized
    from the base alone would not even fit); the distilled students learn from the mean-pooled full run."""
    root = tmp_path_factory.mktemp("client")
    base = save_tiny_bert(root / "base", AutoTokenizer.from_pretrained(resolve_location(MINILM)))
    rng = random.Random(3)
    words = [["awful", "bad"], ["fine", "okay"], ["great", "good"]]
    rows = [[f"the film was {rng.choice(words[y])} {rng.choice(words[y])}", CLASSES[y]] for y in [0, 1, 2] * 8]
    train_file = write_tsv(root / "train.tsv", ["sentence", "label"], rows)
    dev_file = write_tsv(root / "dev.tsv", ["sentence", "label"], rows[:9])
    folders = {}
    for strategy, pooling in sorted(CASES, key=lambda case: case[0] == "distill"):  # the teacher trains first
        out = root / f"{strategy}-{pooling}"
        teacher = [f"strategy.distill.teacher={folders['full', 'mean']}"] if strategy == "distill" else []
        recipe = recipe_maker(base, train_file, dev_file, out)
        train(recipe("train.max_steps=2", f"strategy.name={strategy}", f"model.pooling={pooling}",
                     *STRATEGY_SETTINGS[strategy], *teacher))  # fmt: skip
        folders[strategy, pooling] = out
    return {"folders": folders, "base": base}


def _hftransfer_scores(folder: Path) -> list[dict[str, float]]:
    return [record["scores"] for record in predict_records(load_run(folder), TEXTS)]


def _pipeline_scores(folder: Path, **kwargs) -> list[dict[str, float]]:
    classifier = pipeline("text-classification", model=str(folder), **kwargs)
    return [{r["label"]: r["score"] for r in row} for row in classifier(TEXTS, top_k=None)]


def _assert_same(got: list[dict[str, float]], expected: list[dict[str, float]]) -> None:
    for one, other in zip(got, expected, strict=True):
        assert set(one) == set(other) == set(CLASSES)
        assert max(one, key=one.get) == max(other, key=other.get)
        assert one == pytest.approx(other, abs=1e-5)


@pytest.mark.parametrize(("strategy", "pooling"), CASES, ids=[f"{s}-{p}" for s, p in CASES])
def test_pipeline_predicts_as_hftransfer_or_refuses_without_remote_code(runs, strategy, pooling):
    folder = runs["folders"][strategy, pooling]
    expected = _hftransfer_scores(folder)
    kind = client_kind(folder)
    if pooling == "cls" and strategy != "lora":
        assert kind == AS_IS and not (folder / MODELING_FILE).exists()
        _assert_same(_pipeline_scores(folder), expected)  # a plain transformers model
        return
    # Mean pooling (BERT's pooler unused) or an adapter (no base weights, no class names in the base).
    assert kind == REMOTE_CODE and (folder / MODELING_FILE).is_file()
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        pipeline("text-classification", model=str(folder))
    _assert_same(_pipeline_scores(folder, trust_remote_code=True), expected)


def test_merged_exports_load_in_pipeline_as_their_pooling_allows(runs, tmp_path):
    for pooling in ("cls", "mean"):
        out = tmp_path / f"merged-{pooling}"
        assert main(["export", str(runs["folders"]["lora", pooling]), "--merge", "--out", str(out)]) == 0
        expected = _hftransfer_scores(out)
        if pooling == "cls":
            assert client_kind(out) == AS_IS
            _assert_same(_pipeline_scores(out), expected)
        else:
            assert client_kind(out) == REMOTE_CODE
            _assert_same(_pipeline_scores(out, trust_remote_code=True), expected)


def test_marked_folders_are_read_by_hftransfer_as_their_base_architecture(runs):
    folder = runs["folders"]["full", "mean"]
    assert json.loads((folder / "config.json").read_text())["model_type"] == "hftransfer-bert"
    run = load_run(folder)
    assert type(run.model) is BertForSequenceClassification and run.model.config.model_type == "bert"
    assert run.model.bert.pooler is None  # pooled by hftransfer's own code, not the folder's file
    model, _read = get_task(TEXT).feature_model(str(folder), "last")  # rank/shift read it too
    assert model.config.model_type == "bert"


LOADED = [("lora", "cls"), ("lora", "mean"), ("full", "mean"), ("distill", "mean")]


@pytest.mark.parametrize("case", LOADED, ids=[f"{s}-{p}" for s, p in LOADED])
def test_own_loads_of_finished_runs_print_no_load_report(runs, case, capsys, caplog):
    """transformers' red MISSING table reads as if training was lost: hftransfer's loads never print it."""
    folder = runs["folders"][case]
    transformers.logging.set_verbosity_warning()  # the tests' default (error) would hide the report anyway
    try:
        with caplog.at_level(logging.INFO):
            # The capture sees the report where there is one: the base checkpoint with a new head, loaded plainly.
            BertForSequenceClassification.from_pretrained(runs["base"], num_labels=3, ignore_mismatched_sizes=True)
            assert "LOAD REPORT" in caplog.text
            caplog.clear()
            assert main(["evaluate", str(folder)]) == 0
            assert main(["predict", str(folder), TEXTS[0]]) == 0
    finally:
        transformers.logging.set_verbosity_error()
    captured = capsys.readouterr()
    said = captured.out + captured.err + caplog.text
    assert "accuracy" in said
    for alarm in ("LOAD REPORT", "MISSING", "newly initialized", "New weights", "trust_remote_code", "custom code"):
        assert alarm not in said


def _front_matter(folder: Path) -> dict:
    return yaml.safe_load(re.match(r"---\n(.*?)\n---\n", (folder / "README.md").read_text(), re.S).group(1))


def test_card_metadata_turns_the_widget_off_where_pipeline_needs_remote_code(runs):
    plain = _front_matter(runs["folders"]["full", "cls"])
    assert "inference" not in plain and "custom_code" not in plain["tags"]
    assert plain["library_name"] == "transformers" and plain["pipeline_tag"] == "text-classification"
    for case, library in ((("full", "mean"), "transformers"), (("lora", "cls"), "peft")):
        folder = runs["folders"][case]
        meta = _front_matter(folder)
        assert meta["inference"] is False and "custom_code" in meta["tags"] and meta["library_name"] == library
        card = (folder / "README.md").read_text()
        snippet = re.search(r"## How to use\n\n```python\n(.*?)```", card, re.S).group(1)
        assert f'pipeline("text-classification", model="{folder}", trust_remote_code=True)' in snippet
        assert "apply_pooling" not in card and "widget is off" in card
        scope: dict = {}
        exec(re.sub(r"print\(classifier\(.*\)\)", "", snippet), scope)  # the snippet as a user pastes it
        got = [{r["label"]: r["score"] for r in row} for row in scope["classifier"](TEXTS, top_k=None)]
        _assert_same(got, _hftransfer_scores(folder))


def test_push_says_which_kind_the_folder_is(runs, tmp_path, capsys):
    lines = {}
    for case in (("full", "cls"), ("full", "mean"), ("lora", "mean")):
        staged = tmp_path / "-".join(case)
        assert main(["push", str(runs["folders"][case]), "--repo-id", "me/model", "--dry-run", str(staged)]) == 0
        out = capsys.readouterr().out
        lines[case] = [line for line in out.splitlines() if line.startswith("The model ")]
        assert len(lines[case]) == 1
    assert lines["full", "cls"] == ["The model loads in transformers.pipeline as is."]
    for case in (("full", "mean"), ("lora", "mean")):
        assert lines[case][0].startswith("The model needs trust_remote_code=True")
        assert "the Hub widget is off" in lines[case][0]
        assert {MODELING_FILE, "config.json"} <= {p.name for p in (tmp_path / "-".join(case)).iterdir()}


def _as_hub_repo(staged: Path, cache: Path, repo_id: str) -> None:
    """`staged` as the Hub cache holds a downloaded repo: offline, `pipeline(model=repo_id)` then takes the Hub
    path of transformers (an id, not a local folder)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "1" * 40
    shutil.copytree(staged, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


PUSHED = [("lora", "cls"), ("lora", "mean"), ("full", "mean"), ("full", "cls")]


@pytest.mark.parametrize("case", PUSHED, ids=[f"{s}-{p}" for s, p in PUSHED])
def test_pushed_repos_behave_on_the_hub_path_as_their_folders(runs, case, tmp_path, monkeypatch):
    """On the Hub, pipeline() swaps an adapter repo for the base its adapter_config.json names (only a local
    folder with a config.json is read as itself): a pushed adapter names the repo as its own base, so its marked
    config applies there as well."""
    from huggingface_hub import constants

    from hftransfer.artifacts import hub

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    folder, repo_id, staged = runs["folders"][case], "me/" + "-".join(case), tmp_path / "staged"
    hub.dry_run(folder, staged, repo_id=repo_id)
    if case[0] == "lora":
        assert json.loads((staged / "adapter_config.json").read_text())["base_model_name_or_path"] == repo_id
        assert json.loads((staged / "config.json").read_text())["hftransfer_base_model"] == str(runs["base"])
    _as_hub_repo(staged, tmp_path / "cache", repo_id)
    if case == ("full", "cls"):
        _assert_same(_pipeline_scores(repo_id), _hftransfer_scores(folder))
        return
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        pipeline("text-classification", model=repo_id)
    _assert_same(_pipeline_scores(repo_id, trust_remote_code=True), _hftransfer_scores(folder))


def test_folder_written_before_marking_is_marked_in_the_pushed_copy(runs, tmp_path):
    """An older mean-pooled folder (plain BERT config.json) would load wrongly in pipeline: push marks its copy."""
    old = tmp_path / "old"
    shutil.copytree(runs["folders"]["full", "mean"], old)
    (old / MODELING_FILE).unlink()
    config = json.loads((old / "config.json").read_text())
    plain = {k: v for k, v in config.items() if not k.startswith(("hftransfer_", "auto_map"))}
    plain.update(model_type="bert", architectures=["BertForSequenceClassification"])
    BertConfig.from_dict(plain).save_pretrained(old)
    assert client_kind(old) == HFTRANSFER_ONLY
    staged = tmp_path / "staged"
    assert main(["push", str(old), "--repo-id", "me/model", "--dry-run", str(staged)]) == 0
    assert client_kind(staged) == REMOTE_CODE
    _assert_same(_pipeline_scores(staged, trust_remote_code=True), _hftransfer_scores(old))


@pytest.mark.parametrize(
    "command",
    [
        ["evaluate", "{missing}"],
        ["predict", "{missing}", "some text"],
        ["export", "{missing}", "--out", "{tmp}/x"],
        ["push", "{missing}", "--repo-id", "me/model", "--dry-run", "{tmp}/y"],
    ],
    ids=["evaluate", "predict", "export", "push"],
)
def test_a_missing_output_folder_is_named_in_one_line(command, tmp_path, capsys):
    missing = tmp_path / "outputs" / "not-trained-yet"
    assert main([part.format(missing=missing, tmp=tmp_path) for part in command]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{missing} does not exist" in err


def test_a_missing_model_or_teacher_folder_is_named_in_one_line(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()  # `outputs/...` is then a folder, even though it looks like a Hub id
    data = write_tsv(tmp_path / "d.tsv", ["sentence", "label"], [["a b", 0], ["c d", 1]])
    base = ["train", f"data.train_file={data}", f"data.validation_file={data}", "train.output_dir=out"]
    teacher = ["strategy.name=distill", "strategy.distill.teacher=outputs/teacher"]
    for overrides, key, name in (
        ([f"model.name_or_path={runs['base']}", *teacher], "strategy.distill.teacher", "outputs/teacher"),
        (["model.name_or_path=outputs/model"], "model.name_or_path", "outputs/model"),
        (["model.name_or_path=../elsewhere/model"], "model.name_or_path", "../elsewhere/model"),
    ):
        assert main([*base, *overrides]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and f"{key}: folder {name} does not exist" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.incomplete").exists()
    assert main(["rank", "--data", str(data), "--models", "./outputs/model"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "folder outputs/model does not exist" in err
