"""Bad input, one table: every case must end in exit code 2 with exactly one line on stderr that names the problem,
no traceback, no training step, no change to an existing finished output folder, and no `.incomplete` left behind.

Cases run in-process through `hftransfer.cli.main` (a subprocess costs ~2 s of imports each).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from conftest import save_tiny_bert
from PIL import Image
from transformers import AutoTokenizer
from transformers.utils import logging as transformers_logging

from hftransfer.cli import main
from hftransfer.config.locations import resolve_location
from hftransfer.config.recipe import load_config
from hftransfer.data.files import handle_unlabelled, unlabelled_rows
from hftransfer.data.sources import DataError, load_splits
from hftransfer.training.pipeline import train
from tests.conftest import MINILM, recipe_maker, write_toy_text_files

HEADER = "sentence\tlabel\n"
ROWS = "".join(f"the film was {'good' if i % 2 else 'bad'} {i}\t{i % 2}\n" for i in range(24))
TOY = HEADER + ROWS
CSV = "sentence,label\n" + ROWS.replace("\t", ",")
JSONL = "".join(f'{{"sentence": "text {i}", "label": {i % 2}}}\n' for i in range(12))


@pytest.fixture(scope="module", autouse=True)
def quiet_progress_bars():
    """datasets' progress bars write to stderr, which the cases count lines of."""
    datasets.disable_progress_bars()
    transformers_logging.disable_progress_bar()
    yield
    datasets.enable_progress_bars()
    transformers_logging.enable_progress_bar()


@pytest.fixture(scope="module")
def finished(tiny_bert_dir, tmp_path_factory) -> tuple[Path, Path, Path]:
    """A finished run (toy data, one epoch): the folder bad train cases point at, and evaluate/predict read."""
    folder = tmp_path_factory.mktemp("finished")
    train_file, dev_file = write_toy_text_files(folder)
    out = folder / "run"
    train(recipe_maker(tiny_bert_dir, train_file, dev_file, out)("train.epochs=1"))
    return out, train_file, dev_file


@pytest.fixture(scope="module")
def tiny_resnet(tmp_path_factory) -> Path:
    from tests.test_images import save_tiny_resnet

    return save_tiny_resnet(tmp_path_factory.mktemp("resnet"))


def _png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (12, 12, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


@dataclass
class Ctx:
    tmp: Path
    model: Path
    run: Path
    train_file: Path
    dev_file: Path
    resnet: Path | None = None

    def file(self, name: str, content: str | bytes) -> str:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return str(path)

    def train(self, *overrides: str, fresh: bool = False) -> list[str]:
        """`train` on the tiny model and toy data; by default aimed at the finished run with overwrite on, so a
        failure that touched it would show."""
        out = (
            [f"train.output_dir={self.tmp / 'fresh'}"]
            if fresh
            else [
                f"train.output_dir={self.run}",
                "train.overwrite_output_dir=true",
            ]
        )
        base = [
            f"model.name_or_path={self.model}",
            f"data.train_file={self.train_file}",
            f"data.validation_file={self.dev_file}",
            "train.epochs=1",
            "train.batch_size=8",
            "train.precision=fp32",
        ]
        return ["train", *base, *out, *overrides]

    def images(self, classes: dict[str, int], nested: bool = False) -> str:
        root = self.tmp / "images"
        for name, count in classes.items():
            for i in range(count):
                _png(root / name / ("deeper" if nested and i % 2 else "") / f"{i}.png", i)
        return str(root)

    def image_train(self, *overrides: str) -> list[str]:
        return [
            "train",
            f"model.name_or_path={self.resnet}",
            f"train.output_dir={self.tmp / 'fresh'}",
            "train.epochs=1",
            "train.precision=fp32",
            *overrides,
        ]


@dataclass
class Case:
    id: str
    argv: Callable[[Ctx], list[str]]
    expect: str
    """A piece of the one error line (case-insensitive): what is wrong, where, or the fix."""
    images: bool = False
    gpu_absent: bool = False
    """Only a failure on a machine without CUDA."""
    missing_package: str | None = None
    """Only a failure where this package is not installed."""


def _train(c: Ctx, name: str, content: str | bytes) -> str:
    return f"data.train_file={c.file(name, content)}"


def _dev(c: Ctx, name: str, content: str | bytes) -> str:
    return f"data.validation_file={c.file(name, content)}"


CASES = [
    # --- recipe values, refused at recipe load -------------------------------------------------------------------
    Case("lr-zero", lambda c: c.train("train.learning_rate=0"), "train.learning_rate must be positive"),
    Case("lr-negative", lambda c: c.train("train.learning_rate=-1e-3"), "train.learning_rate must be positive"),
    Case("lr-nan", lambda c: c.train("train.learning_rate=.nan"), "'train.learning_rate' expects a finite number"),
    Case("lr-inf", lambda c: c.train("train.learning_rate=.inf"), "'train.learning_rate' expects a finite number"),
    Case("lr-text", lambda c: c.train("train.learning_rate=fast"), "'train.learning_rate' expects a number"),
    Case("epochs-zero", lambda c: c.train("train.epochs=0"), "train.epochs > 0"),
    Case("epochs-nan", lambda c: c.train("train.epochs=nan"), "'train.epochs' expects a finite number"),
    Case("batch-size-zero", lambda c: c.train("train.batch_size=0"), "train.batch_size must be at least 1"),
    Case(
        "eval-batch-negative", lambda c: c.train("train.eval_batch_size=-4"), "train.eval_batch_size must be at least"
    ),
    Case("accumulation-zero", lambda c: c.train("train.gradient_accumulation_steps=0"), "gradient_accumulation_steps"),
    Case("max-length-zero", lambda c: c.train("data.max_length=0"), "data.max_length must be at least 1"),
    Case("max-length-negative", lambda c: c.train("data.max_length=-8"), "data.max_length must be at least 1"),
    Case("max-train-samples-zero", lambda c: c.train("data.max_train_samples=0"), "data.max_train_samples"),
    Case("warmup-above-one", lambda c: c.train("train.warmup_ratio=1.5"), "train.warmup_ratio"),
    Case("weight-decay-negative", lambda c: c.train("train.weight_decay=-0.1"), "train.weight_decay must be >= 0"),
    Case("grad-norm-negative", lambda c: c.train("train.max_grad_norm=-1"), "train.max_grad_norm must be >= 0"),
    Case("seed-negative", lambda c: c.train("train.seed=-1"), "train.seed must be >= 0"),
    Case("workers-negative", lambda c: c.train("train.num_workers=-2"), "train.num_workers must be >= 0"),
    Case("validation-size-zero", lambda c: c.train("data.validation_size=0"), "data.validation_size"),
    Case("save-limit-zero", lambda c: c.train("train.save_total_limit=0"), "train.save_total_limit"),
    Case("lora-rank-zero", lambda c: c.train("strategy.lora.r=0"), "strategy.lora.r must be at least 1"),
    Case("distill-temperature-zero", lambda c: c.train("strategy.distill.temperature=0"), "temperature"),
    Case("unknown-key", lambda c: c.train("train.epocs=1"), "did you mean 'epochs'"),
    Case("batch-size-text", lambda c: c.train("train.batch_size=big"), "'train.batch_size' expects an integer"),
    Case("override-bad-yaml", lambda c: c.train("data.text_columns=[sentence"), "is not valid yaml"),
    Case("override-bad-yaml-mapping", lambda c: c.train("train.epochs={a: 1"), "train.epochs={a: 1"),
    Case("fp16-on-cpu", lambda c: c.train("train.precision=fp16"), "fp16 needs a gpu", gpu_absent=True),
    Case("tracker-unknown", lambda c: c.train("train.report_to=[nosuch]"), "'nosuch' is not a tracker the trainer"),
    Case(
        "tracker-unknown-accelerate",
        lambda c: c.train("train.loop=accelerate", "train.report_to=[nosuch]"),
        "not a tracker the accelerate loop",
    ),
    Case(
        "tracker-not-installed",
        lambda c: c.train("train.report_to=[wandb]"),
        "'wandb', which is not installed: pip install wandb",
        missing_package="wandb",
    ),
    Case(
        "tracker-not-installed-accelerate",
        lambda c: c.train("train.loop=accelerate", "train.report_to=[wandb]"),
        "pip install wandb",
        missing_package="wandb",
    ),
    # --- recipe files --------------------------------------------------------------------------------------------
    Case("recipe-missing", lambda c: ["train", str(c.tmp / "nope.yaml")], "does not exist"),
    Case("recipe-is-folder", lambda c: ["train", str(c.tmp)], "is a folder"),
    Case("recipe-bad-yaml", lambda c: ["train", c.file("r.yaml", "train:\n  epochs: [1\n")], "yaml syntax error"),
    Case("recipe-not-mapping", lambda c: ["train", c.file("r.yaml", "- a\n- b\n")], "a recipe is a mapping"),
    Case("recipe-not-utf8", lambda c: ["train", c.file("r.yaml", b"train:\n  seed: \xff\n")], "line 2 is not utf-8"),
    # --- data files ----------------------------------------------------------------------------------------------
    Case("train-file-missing", lambda c: c.train(f"data.train_file={c.tmp / 'no.tsv'}"), "no.tsv does not exist"),
    Case("train-file-is-folder", lambda c: c.train(f"data.train_file={c.tmp}"), "is a folder"),
    Case("train-file-empty", lambda c: c.train(_train(c, "e.tsv", "")), "e.tsv is empty"),
    Case("train-file-blank", lambda c: c.train(_train(c, "b.tsv", "\n\n\n")), "is empty"),
    Case("train-file-header-only", lambda c: c.train(_train(c, "h.tsv", HEADER)), "but no data rows"),
    Case(
        "train-file-not-utf8",
        lambda c: c.train(_train(c, "l1.tsv", TOY.encode() + "caf\xe9\t1\n".encode("latin-1"))),
        "line 26 is not utf-8",
    ),
    Case(
        "tsv-extra-field",
        lambda c: c.train(_train(c, "x.tsv", TOY + "one too\t1\tmany\n" + ROWS)),
        "line 26 has 3 fields but the header has 2",
    ),
    Case("tsv-missing-field", lambda c: c.train(_train(c, "m.tsv", TOY + "no tab here\n")), "line 26 has 1 fields"),
    Case(
        "csv-ragged",
        lambda c: c.train(_train(c, "r.csv", "sentence,label\na,1\nb,0,c\n"), _dev(c, "d.csv", CSV)),
        "line 3 has 3 fields",
    ),
    Case(
        "jsonl-broken-line",
        lambda c: c.train(_train(c, "t.jsonl", JSONL + '{"sentence": \n'), _dev(c, "d.jsonl", JSONL)),
        "line 13 is not valid json",
    ),
    Case(
        "train-lacks-label-column",
        lambda c: c.train(_train(c, "nolabel.tsv", "sentence\na\nb\n")),
        "nolabel.tsv has no label column 'label'",
    ),
    Case(
        "label-cell-empty",
        lambda c: c.train(_train(c, "u.tsv", TOY + "no label\t\n")),
        "without a label in 'label' on line 26",
    ),
    Case(
        "label-cell-nan",
        lambda c: c.train(_train(c, "n.tsv", TOY + "x\tNaN\ny\tnull\n")),
        "2 rows without a label in 'label' on lines 26, 27",
    ),
    Case(
        "jsonl-null-label",
        lambda c: c.train(
            _train(c, "n.jsonl", JSONL + '{"sentence": "x", "label": null}\n'), _dev(c, "d.jsonl", JSONL)
        ),
        "without a label in 'label' on line 13",
    ),
    Case("text-column-misnamed", lambda c: c.train("data.text_columns=text"), "data.text_columns"),
    Case("mixed-formats", lambda c: c.train(f"data.validation_file={c.file('d.jsonl', JSONL)}"), "share one format"),
    Case("single-class", lambda c: c.train(_train(c, "s.tsv", HEADER + "a\t1\nb\t1\n")), "single class"),
    # --- models, checkpoints, output folders ---------------------------------------------------------------------
    Case(
        "model-folder-missing",
        lambda c: c.train("model.name_or_path=./no/such/model"),
        "folder ./no/such/model does not exist",
    ),
    Case("model-folder-not-a-model", lambda c: c.train(f"model.name_or_path={c.tmp}"), "is a folder but not a model"),
    Case("model-path-is-file", lambda c: c.train(f"model.name_or_path={c.train_file}"), "is a file"),
    Case("hub-id-offline", lambda c: c.train("model.name_or_path=no-user/no-such-model-xyz"), "offline mode is on"),
    Case(
        "hub-id-invalid",
        lambda c: c.train("model.name_or_path=bad id!"),
        "neither an existing folder nor a valid hub id",
    ),
    Case(
        "teacher-folder-missing",
        lambda c: c.train("strategy.name=distill", "strategy.distill.teacher=./no/teacher"),
        "strategy.distill.teacher: folder ./no/teacher does not exist",
    ),
    Case("output-dir-is-file", lambda c: c.train(f"train.output_dir={c.train_file}"), "is a file"),
    Case(
        "output-dir-exists",
        lambda c: [*c.train(), "train.overwrite_output_dir=false"],
        "exists and is not empty",
    ),
    Case(
        "resume-from-missing",
        lambda c: c.train(f"train.resume_from={c.tmp / 'checkpoint-9'}"),
        "checkpoint-9 does not exist",
    ),
    # --- image folders -------------------------------------------------------------------------------------------
    Case(
        "image-folder-one-class",
        lambda c: c.image_train(f"data.train_dir={c.images({'cat': 4})}"),
        "has a single class sub-folder ('cat')",
        images=True,
    ),
    Case(
        "image-folder-nested",
        lambda c: c.image_train(f"data.train_dir={c.images({'cat': 4, 'dog': 4}, nested=True)}"),
        "has sub-folders ['deeper']",
        images=True,
    ),
    Case(
        "image-folder-missing",
        lambda c: c.image_train(f"data.train_dir={c.tmp / 'nope'}"),
        "is not a folder",
        images=True,
    ),
    # --- evaluate --file -----------------------------------------------------------------------------------------
    Case(
        "evaluate-columns-misnamed",
        lambda c: ["evaluate", str(c.run), "--file", c.file("e.tsv", TOY.replace("sentence", "text", 1))],
        "this run reads ['sentence', 'label']",
    ),
    Case(
        "evaluate-broken-jsonl",
        lambda c: ["evaluate", str(c.run), "--file", c.file("e.jsonl", JSONL + "{oops\n")],
        "line 13 is not valid json",
    ),
    Case(
        "evaluate-not-utf8",
        lambda c: ["evaluate", str(c.run), "--file", c.file("e.tsv", TOY.encode() + b"\xff\t1\n")],
        "line 26 is not utf-8",
    ),
    Case(
        "evaluate-file-missing", lambda c: ["evaluate", str(c.run), "--file", str(c.tmp / "no.tsv")], "does not exist"
    ),
    Case("evaluate-file-is-folder", lambda c: ["evaluate", str(c.run), "--file", str(c.tmp)], "is a folder"),
    Case("evaluate-file-empty", lambda c: ["evaluate", str(c.run), "--file", c.file("e.tsv", "")], "is empty"),
    Case(
        "evaluate-missing-labels",
        lambda c: ["evaluate", str(c.run), "--file", c.file("e.tsv", TOY + "x\t\n")],
        "without a label in 'label' on line 26 (file lines); drop it from the file.",
    ),
    Case("evaluate-not-a-run", lambda c: ["evaluate", str(c.tmp)], "not an hftransfer output folder"),
    Case("evaluate-unknown-split", lambda c: ["evaluate", str(c.run), "--split", "nope"], "no 'nope' split"),
    # --- predict --file ------------------------------------------------------------------------------------------
    Case(
        "predict-broken-jsonl",
        lambda c: ["predict", str(c.run), "--file", c.file("p.jsonl", '{"sentence": "fine"}\n{"sentence": "x"\n')],
        "line 2 starts with '{' but is not valid json",
    ),
    Case(
        "predict-not-utf8",
        lambda c: ["predict", str(c.run), "--file", c.file("p.txt", b"good\nb\xe9ad\n")],
        "line 2 is not utf-8",
    ),
    Case("predict-file-missing", lambda c: ["predict", str(c.run), "--file", str(c.tmp / "no.txt")], "does not exist"),
    Case(
        "predict-record-without-text",
        lambda c: ["predict", str(c.run), "--file", c.file("p.jsonl", '{"text": "fine"}\n')],
        "no text in 'sentence'",
    ),
]


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def test_the_table_is_large_enough():
    assert len(CASES) >= 40
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_fails_in_one_line(case, finished, tiny_bert_dir, tmp_path, capsys, caplog, request):
    run, train_file, dev_file = finished
    if case.gpu_absent and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    if case.missing_package and importlib.util.find_spec(case.missing_package) is not None:
        pytest.skip(f"{case.missing_package} is installed")
    resnet = request.getfixturevalue("tiny_resnet") if case.images else None
    ctx = Ctx(tmp_path, tiny_bert_dir, run, train_file, dev_file, resnet)
    argv = case.argv(ctx)
    before = _snapshot(run)
    capsys.readouterr()
    with caplog.at_level(logging.INFO, logger="hftransfer"):
        code = main(argv)
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (out, err)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"hftransfer {argv[0]}: error: ")
    assert case.expect.lower() in lines[0].lower()
    print(case.id, "->", lines[0])  # shown with -s: the table of messages, for review
    assert "Traceback" not in out + err
    # failed before training: no step logged, nothing written, the finished run untouched, no staging folder left
    assert not any("Training " in r.getMessage() and "parameters" in r.getMessage() for r in caplog.records)
    assert not (tmp_path / "fresh").exists()
    assert _snapshot(run) == before
    assert not list(run.parent.glob("*.incomplete")) and not list(tmp_path.glob("*.incomplete"))


BEFORE_ANY_MODEL = (
    "evaluate-unknown-split",
    "predict-record-without-text",
    "evaluate-columns-misnamed",
    "fp16-on-cpu",
    "tracker-unknown",
    "tracker-not-installed-accelerate",
    "override-bad-yaml",
)
"""Cases whose input alone shows the error: they must fail before a processor or model loads (issue 16)."""


@pytest.mark.parametrize("case_id", BEFORE_ANY_MODEL)
def test_what_the_input_alone_shows_fails_before_any_model_loads(case_id, finished, tiny_bert_dir, tmp_path, capsys,
                                                                 monkeypatch):  # fmt: skip
    import hftransfer.artifacts.saved as saved
    from hftransfer.models.tasks import TextTask

    def no_model(*args, **kwargs):
        raise AssertionError("the model or data loaded before the input was checked")

    monkeypatch.setattr(saved, "load_run", no_model)
    monkeypatch.setattr(TextTask, "load_model", staticmethod(no_model))
    monkeypatch.setattr(TextTask, "load_processor", staticmethod(no_model))
    case = next(case for case in CASES if case.id == case_id)
    if (case.gpu_absent and torch.cuda.is_available()) or (case.missing_package and importlib.util.find_spec(
            case.missing_package) is not None):  # fmt: skip
        pytest.skip("not a bad input on this machine")
    run, train_file, dev_file = finished
    assert main(case.argv(Ctx(tmp_path, tiny_bert_dir, run, train_file, dev_file))) == 2
    assert case.expect.lower() in capsys.readouterr().err.lower()


def test_no_trainable_parameters_is_one_line(finished, tiny_bert_dir, tmp_path, capsys, monkeypatch):
    """A strategy that leaves nothing to train (only a broken plug-in or model can): one line, no step."""
    from hftransfer.strategies.full.strategy import FullFineTuning

    monkeypatch.setattr(FullFineTuning, "parameter_groups", lambda self, model, lr, wd: [])
    run, train_file, dev_file = finished
    assert main(Ctx(tmp_path, tiny_bert_dir, run, train_file, dev_file).train(fresh=True)) == 2
    err = capsys.readouterr().err
    assert "error: The full strategy left no trainable parameters" in err and "Traceback" not in err
    assert not (tmp_path / "fresh").exists() and not list(tmp_path.glob("*.incomplete"))


# --- unit tests: missing labels, drop_unlabelled, the max_length cap ----------------------------------------------


def test_null_and_nan_stay_text_but_not_labels(tmp_path):
    train_file = tmp_path / "t.tsv"
    train_file.write_text(TOY + "null\t1\nnan\t0\n")
    config = load_config(None, [f"data.train_file={train_file}", f"data.validation_file={train_file}"])
    splits = load_splits(config.data)
    assert {"null", "nan"} <= set(splits["train"]["sentence"])
    assert set(splits["train"]["label"]) == {0, 1}


def test_missing_labels_name_the_file_lines(tmp_path):
    train_file = tmp_path / "t.tsv"
    train_file.write_text(TOY + "a\t\n" + "b\tnan\n" + "c\t1\n" + "d\tNULL\n")
    config = load_config(None, [f"data.train_file={train_file}", f"data.validation_file={train_file}"])
    with pytest.raises(DataError, match=r"3 rows without a label in 'label' on lines 26, 27, 29 \(file lines\)"):
        load_splits(config.data)


def test_drop_unlabelled_drops_and_counts(tmp_path, caplog):
    train_file, dev_file = tmp_path / "t.tsv", tmp_path / "d.tsv"
    train_file.write_text(TOY + "a\t\nb\tnan\n")
    dev_file.write_text(TOY)
    config = load_config(
        None, [f"data.train_file={train_file}", f"data.validation_file={dev_file}", "data.drop_unlabelled=true"]
    )
    with caplog.at_level(logging.WARNING, logger="hftransfer"):
        splits = load_splits(config.data)
    assert len(splits["train"]) == 24
    assert splits["train"].features["label"].dtype == "int64"  # the same label type as the clean dev file
    assert "Dropped 2 train rows without a label" in caplog.text


def test_unlabelled_rows_of_hub_style_splits():
    split = datasets.Dataset.from_dict({"sentence": ["a", "b", "c"], "label": [1.0, float("nan"), 0.0]})
    assert unlabelled_rows(split, "label") == [1]
    with pytest.raises(DataError, match=r"in row 1 \(0-based row numbers\)"):
        handle_unlabelled(datasets.DatasetDict(train=split), "label", drop=False)
    kept = handle_unlabelled(datasets.DatasetDict(train=split), "label", drop=True)["train"]
    assert kept["label"] == [1, 0]


def test_max_length_above_the_model_positions_is_capped(tmp_path, caplog):
    model_dir = tmp_path / "short-bert"
    tokenizer = AutoTokenizer.from_pretrained(resolve_location(MINILM))
    save_tiny_bert(
        model_dir, tokenizer, hidden_size=16, num_hidden_layers=1, intermediate_size=32, max_position_embeddings=32
    )
    rng = random.Random(0)
    words = ["good", "bad", "film", "plot", "actor", "scene", "long", "very"]
    rows = "".join(f"{' '.join(rng.choice(words) for _ in range(60))}\t{i % 2}\n" for i in range(16))
    data = tmp_path / "long.tsv"
    data.write_text("sentence\tlabel\n" + rows)
    make = recipe_maker(model_dir, data, data, tmp_path / "out")
    with caplog.at_level(logging.WARNING, logger="hftransfer"):
        results = train(make("data.max_length=4096", "train.epochs=1"))
    warnings = [r.getMessage() for r in caplog.records if "data.max_length=4096" in r.getMessage()]
    assert len(warnings) == 1 and "max_position_embeddings (32)" in warnings[0]
    assert results["global_steps"] > 0
    saved = load_config(tmp_path / "out" / "config.yaml")
    assert saved.data.max_length == 32


def test_failed_run_keeps_checkpoints_to_resume(tmp_path):
    from hftransfer.artifacts.layout import cleanup_failed_run
    from hftransfer.errors import UserError

    work = tmp_path / "out.incomplete"
    (work / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    (work / "checkpoints" / "checkpoint-2" / "progress.json").write_text("{}")
    expected = r"Kept .*out\.incomplete with checkpoints; rerun .*resume_from=latest"
    with pytest.raises(UserError, match=expected), cleanup_failed_run(work):
        raise UserError("Something broke.")
    assert work.is_dir()
    empty = tmp_path / "other.incomplete"
    empty.mkdir()
    with pytest.raises(RuntimeError), cleanup_failed_run(empty):
        raise RuntimeError("crash")
    assert not empty.exists()
