"""`hftransfer compare` on the tiny BERT: four strategies, one report, finished runs reused, bad input stops early."""

from __future__ import annotations

import json
import shutil

import pytest

from hftransfer.cli import main
from hftransfer.compare import CompareError, parse_strategies, run_comparison
from hftransfer.compare.plan import plan_runs
from hftransfer.compare.plots import ACCURACY_PLOT, CURVES_PLOT, MISSING_NOTE, plots_available
from hftransfer.config.recipe import load_config
from hftransfer.training import pipeline as training
from tests.conftest import write_toy_text_files

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def base_overrides(tiny_bert_dir, tmp_path_factory) -> list[str]:
    train, dev = write_toy_text_files(tmp_path_factory.mktemp("compare-data"))
    return [
        f"model.name_or_path={tiny_bert_dir}",
        f"data.train_file={train}",
        f"data.validation_file={dev}",
        "train.epochs=1",
        "train.batch_size=16",
        "train.logging_steps=2",
    ]


@pytest.fixture(scope="module")
def compared(base_overrides, tmp_path_factory):
    """One in-process comparison of all four strategies, shared by the checks below."""
    out = tmp_path_factory.mktemp("compare") / "report"
    overrides = [*base_overrides, "distill:strategy.distill.check_teacher=false"]  # a 1-epoch tiny teacher is weak
    report = run_comparison(None, ["lora", "distill", "frozen", "full"], overrides, out, in_process=True)
    return out, overrides, report


def _runs(report: dict) -> dict[str, dict]:
    return {run["strategy"]: run for run in report["runs"]}


def test_compare_writes_table_json_and_plots(compared):
    out, _, report = compared
    runs = _runs(report)
    assert [r["strategy"] for r in report["runs"]] == ["lora", "frozen", "full", "distill"]  # teacher before student
    assert runs["lora"]["trainable_params"] < runs["frozen"]["trainable_params"] < runs["full"]["trainable_params"]
    assert runs["distill"]["total_params"] < runs["full"]["total_params"]  # student cut from the full run
    for run in report["runs"]:
        assert 0.0 <= run["accuracy"] <= 1.0 and run["checkpoint_size_bytes"] > 0 and run["train_runtime_s"] > 0
        assert run["latency_ms"]["1"] > 0 and run["latency_ms"]["64"] > 0
        assert not run["reused"]
    assert json.loads((out / "report.json").read_text())["runs"] == report["runs"]
    table = (out / "report.md").read_text()
    for name in ("full", "frozen", "lora", "distill"):
        assert f"| {name} | {runs[name]['accuracy']:.4f} |" in table
    if plots_available():
        for name in (ACCURACY_PLOT, CURVES_PLOT):
            assert (out / name).read_bytes().startswith(PNG_MAGIC)
            assert f"]({name})" in table
    else:
        assert MISSING_NOTE in table


def test_each_run_gets_its_strategy_settings_on_the_same_data(compared):
    out, _, report = compared
    saved = {name: load_config(out / "runs" / name / "config.yaml") for name in _runs(report)}
    assert {c.data.train_file for c in saved.values()} == {saved["full"].data.train_file}
    assert {c.train.seed for c in saved.values()} == {42}
    assert saved["lora"].train.learning_rate == 2e-3  # compare's LoRA default; the recipe's rate elsewhere
    assert saved["full"].train.learning_rate == saved["frozen"].train.learning_rate == 5e-5
    distill = saved["distill"]
    assert distill.strategy.distill.teacher == distill.model.name_or_path == str(out / "runs" / "full")
    assert distill.strategy.distill.student_layers == [0]  # every other block of the 2-block tiny BERT
    history = json.loads((out / "runs" / "full" / "results.json").read_text())["log_history"]
    assert any("eval_loss" in e for e in history) and any("loss" in e for e in history)


def test_second_compare_reuses_finished_runs_and_resumes_unfinished_ones(compared, monkeypatch):
    out, overrides, first = compared
    stamps = {r["strategy"]: r["finished_at"] for r in first["runs"]}
    real_train = training.train

    def no_training(config):
        raise AssertionError(f"retrained {config.strategy.name}")

    monkeypatch.setattr(training, "train", no_training)
    again = run_comparison(None, ["full", "frozen", "lora", "distill"], overrides, out, in_process=True, latency=False)
    assert all(r["reused"] for r in again["runs"])
    assert {r["strategy"]: r["finished_at"] for r in again["runs"]} == stamps

    # An interrupted frozen run: its published folder is gone and a half-written .incomplete one is left.
    shutil.rmtree(out / "runs" / "frozen")
    (out / "runs" / "frozen.incomplete").mkdir()
    (out / "runs" / "frozen.incomplete" / "model.safetensors").write_bytes(b"half")
    trained = []

    def counting(config):
        trained.append(config.strategy.name)
        return real_train(config)

    monkeypatch.setattr(training, "train", counting)
    resumed = run_comparison(
        None, ["full", "frozen", "lora", "distill"], overrides, out, in_process=True, latency=False
    )
    assert trained == ["frozen"]
    assert [r["strategy"] for r in resumed["runs"] if not r["reused"]] == ["frozen"]
    assert not (out / "runs" / "frozen.incomplete").exists()

    # A retrained teacher makes the finished distill run stale: it is retrained too.
    shutil.rmtree(out / "runs" / "full")
    trained.clear()
    run_comparison(None, ["full", "frozen", "lora", "distill"], overrides, out, in_process=True, latency=False)
    assert trained == ["full", "distill"]

    # Other settings than the finished runs had: refused before anything trains.
    monkeypatch.setattr(training, "train", no_training)
    with pytest.raises(CompareError, match=r"train\.epochs"):
        run_comparison(None, ["full", "distill"], [*overrides, "train.epochs=2"], out, in_process=True, latency=False)


def test_unknown_strategy_fails_early_with_the_valid_names(tmp_path, capsys):
    with pytest.raises(CompareError, match=r"'bogus'.*valid: distill, frozen, full, lora"):
        parse_strategies("full,bogus")
    out, recipe = tmp_path / "report", tmp_path / "recipe.yaml"
    recipe.write_text("train:\n  epochs: 1\n")
    assert main(["compare", str(recipe), "--strategies", "full,bogus", "--out", str(out), "train.epochs=2"]) == 2
    assert "valid: distill, frozen, full, lora" in capsys.readouterr().err
    assert not out.exists()


def test_bad_plans_fail_before_training(base_overrides, tmp_path):
    with pytest.raises(CompareError, match=r"distill needs a teacher.*add 'full'"):
        plan_runs(None, ["frozen", "distill"], base_overrides, tmp_path)
    with pytest.raises(CompareError, match="not in --strategies"):
        plan_runs(None, ["full"], [*base_overrides, "lora:strategy.lora.r=4"], tmp_path)
    with pytest.raises(CompareError, match="names strategy 'lorra'"):
        plan_runs(None, ["full"], [*base_overrides, "lorra:strategy.lora.r=4"], tmp_path)
    with pytest.raises(Exception, match=r"strategy\.lora\.rank"):  # a bad key for one strategy: the schema's error
        plan_runs(None, ["lora"], [*base_overrides, "lora:strategy.lora.rank=4"], tmp_path)
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_cli_compare_in_subprocesses_measures_peak_memory(base_overrides, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["compare", "--strategies", "frozen", "--out", str(out), "--no-latency", *base_overrides])
    assert code == 0
    run = json.loads((out / "report.json").read_text())["runs"][0]
    assert run["peak_rss_bytes"] > 50 * 2**20  # a Python process with torch loaded
    assert "| frozen |" in capsys.readouterr().out
    assert (out / "work" / "frozen.log").read_text()


def test_latency_groups_runs_by_inputs_not_by_tokenizer_call_state(tmp_path):
    from types import SimpleNamespace

    from hftransfer.compare.measure import _input_key

    config = load_config(None, [])
    folders = [tmp_path / name for name in ("a", "b", "c", "images")]
    for folder, padding in zip(folders[:3], (None, {"strategy": "BatchLongest"}, None), strict=True):
        folder.mkdir()
        (folder / "tokenizer.json").write_text(json.dumps({"model": {"vocab": {"x": 0}}, "padding": padding}))
    (folders[2] / "tokenizer.json").write_text(json.dumps({"model": {"vocab": {"y": 0}}, "padding": None}))
    folders[3].mkdir()  # an image run: a preprocessor_config.json, no tokenizer files
    (folders[3] / "preprocessor_config.json").write_text("{}")
    keys = [_input_key(SimpleNamespace(folder=f, config=config)) for f in folders]
    assert keys[0] == keys[1] and len({keys[0], keys[2], keys[3]}) == 3
