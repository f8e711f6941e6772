"""`hftransfer compare --variant`: named override sets as runs, a run starting from another's output, the variant x
strategy grid, and learning curves that say why a run has no line."""

from __future__ import annotations

import json

import pytest

from hftransfer.cli import main
from hftransfer.compare import CompareError
from hftransfer.compare.plan import Variant, parse_variant, plan_runs
from hftransfer.compare.plots import CURVES_PLOT, plots_available
from hftransfer.config.recipe import load_config
from tests.conftest import write_toy_text_files


@pytest.fixture(scope="module")
def base(tiny_bert_dir, tmp_path_factory) -> list[str]:
    train, dev = write_toy_text_files(tmp_path_factory.mktemp("variant-data"))
    return [f"model.name_or_path={tiny_bert_dir}", f"data.train_file={train}", f"data.validation_file={dev}",
            "train.epochs=1", "train.batch_size=16", "train.precision=fp32"]  # fmt: skip


def test_parse_variant_splits_overrides_at_keys_not_inside_values():
    assert parse_variant("joint:domain.source_file=a.tsv, domain.target_weight=1") == Variant(
        "joint", ("domain.source_file=a.tsv", "domain.target_weight=1")
    )
    assert parse_variant("pair:data.text_columns=[premise,hypothesis],train.seed=3").overrides == (
        "data.text_columns=[premise,hypothesis]",
        "train.seed=3",
    )
    assert parse_variant("target-only:") == parse_variant("target-only") == Variant("target-only")
    with pytest.raises(CompareError, match="strategy's name"):
        parse_variant("lora:train.seed=1")
    with pytest.raises(CompareError, match="not key=value"):
        parse_variant("x:train.seed")
    with pytest.raises(CompareError, match="NAME:key=value"):
        parse_variant("bad name:train.seed=1")


def test_plans_resolve_run_references_order_dependencies_and_refuse_bad_ones(base, tmp_path):
    runs = tmp_path / "runs"
    target = Variant("target", ("model.name_or_path={run:source}", "train.learning_rate=1e-4"))
    plans = plan_runs(None, None, base, tmp_path, [target, Variant("source")])
    assert [p.name for p in plans] == ["source", "target"]  # the run read trains first
    assert plans[1].config.model.name_or_path == str(runs / "source") and plans[1].depends_on == ["source"]
    assert {p.config.strategy.name for p in plans} == {"full"}  # variants alone: the recipe's strategy

    grid = plan_runs(None, ["full", "distill"], base, tmp_path, [Variant("a"), target, Variant("source")])
    by_name = {p.name: p for p in grid}
    order = list(by_name)
    assert sorted(order) == sorted(f"{v}/{s}" for v in ("a", "target", "source") for s in ("full", "distill"))
    assert order.index("source/full") < order.index("target/full") and order[0] == "a/full"
    assert order.index("source/distill") < order.index("target/distill") > order.index("target/full")
    assert by_name["target/distill"].config.model.name_or_path == str(runs / "source" / "distill")
    assert by_name["a/distill"].config.strategy.distill.teacher == str(runs / "a" / "full")
    assert by_name["a/distill"].depends_on == ["a/full"]

    with pytest.raises(CompareError, match="reads run 'nowhere'"):
        plan_runs(None, None, base, tmp_path, [Variant("x", ("model.name_or_path={run:nowhere}",))])
    with pytest.raises(CompareError, match="circle"):
        plan_runs(None, None, base, tmp_path, [Variant("x", ("model.name_or_path={run:y}",)),
                                               Variant("y", ("model.name_or_path={run:x}",))])  # fmt: skip
    with pytest.raises(CompareError, match="unique"):
        plan_runs(None, None, base, tmp_path, [Variant("x"), Variant("x")])
    with pytest.raises(CompareError, match="names strategy or variant 'z'"):
        plan_runs(None, None, [*base, "z:train.seed=1"], tmp_path, [Variant("x")])
    assert not runs.exists()


def test_compare_variants_end_to_end_one_starting_from_another(base, tmp_path, capsys):
    out = tmp_path / "report"
    args = ["compare", "--out", str(out), "--in-process", "--no-latency",
            "--variant", "then-target:model.name_or_path={run:source-only},train.learning_rate=5e-4",
            "--variant", "source-only:train.learning_rate=2e-3", *base,
            "train.logging_steps=50", "source-only:train.logging_steps=1"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    runs = {r["name"]: r for r in report["runs"]}
    assert list(runs) == ["source-only", "then-target"]
    assert runs["then-target"]["starts_from"] == str(out / "runs" / "source-only")
    saved = load_config(out / "runs" / "then-target" / "config.yaml")
    assert saved.model.name_or_path == str(out / "runs" / "source-only")
    assert (saved.train.learning_rate, runs["source-only"]["learning_rate"]) == (5e-4, 2e-3)
    assert report["variants"]["source-only"] == ["train.learning_rate=2e-3"]
    md = (out / "report.md").read_text()
    for name in ("source-only", "then-target"):
        assert f"| {name} | full | {runs[name]['accuracy']:.4f} |" in md and f"| {name} | full |" in printed
    assert f"then-target: model.name_or_path={out / 'runs' / 'source-only'}" in md
    # 6 steps of 16 rows < logging_steps 50: no train-loss line for then-target, and the report says why
    steps = runs["then-target"]["global_steps"]
    gap = f"then-target: no train loss logged ({steps} optimizer steps < train.logging_steps=50)"
    assert gap in md and any(gap in note for note in report["plot_notes"])
    assert not any(note.startswith("source-only") for note in report["plot_notes"])
    if plots_available():
        assert (out / CURVES_PLOT).is_file()
