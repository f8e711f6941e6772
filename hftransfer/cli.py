"""`hftransfer train|config|cv|evaluate|predict|export|push|compare|rank|shift`: one entry point for every recipe.

Importing this module and `hftransfer --help` load neither torch nor transformers: each command imports what it
needs when it runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from hftransfer.errors import UserError

logger = logging.getLogger("hftransfer")
LEVELS = ("debug", "info", "warning", "error")
VERBOSITY_ENV = "HFTRANSFER_VERBOSITY"


def _train(args: argparse.Namespace) -> int:
    from hftransfer.config.recipe import load_config

    config = load_config(args.recipe, args.overrides)  # fails on bad keys before anything heavy loads
    from hftransfer.training.pipeline import format_report, train

    results = train(config)
    if results:  # empty on the non-main processes of `accelerate launch`
        print(format_report(results))
        print(f"Wrote {config.train.output_dir}")
    return 0


def _cv(args: argparse.Namespace) -> int:
    from hftransfer.config.recipe import load_config
    from hftransfer.training.crossval import check_k

    check_k(args.folds)  # before the recipe or any model loads
    config = load_config(args.recipe, args.overrides)
    from hftransfer.training.crossval import CV_FILE, cross_validate, format_cv

    out = args.out or f"{config.train.output_dir}-cv"
    report = cross_validate(config, args.folds, out, keep_models=args.keep_models, recipe=args.recipe)
    print(format_cv(report))
    kept = f" and the fold models in {out}/fold-1..{args.folds}" if args.keep_models else ""
    print(f"Wrote {Path(out) / CV_FILE}{kept}")
    return 0


def _config(args: argparse.Namespace) -> int:
    from hftransfer.config.describe import describe, resolved_yaml
    from hftransfer.config.recipe import load_config

    config = load_config(args.recipe, args.overrides)
    print(resolved_yaml(config) if args.yaml else describe(config), end="\n" if not args.yaml else "")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from hftransfer.artifacts.saved import load_run, read_recipe
    from hftransfer.evaluation.inputs import check_evaluate_file
    from hftransfer.evaluation.scoring import evaluate_run, split_rows

    rows = None  # a bad file, misnamed columns or an unknown split fail before the model loads
    if args.file:
        check_evaluate_file(args.output_dir, args.file)
    else:
        rows = split_rows(read_recipe(args.output_dir), args.split)
    run = load_run(args.output_dir)
    metrics = evaluate_run(run, split=args.split, file=args.file, batch_size=args.batch_size, rows=rows)
    text = json.dumps(metrics, indent=2)
    if args.output:
        Path(args.output).write_text(text + "\n")
    print(text)
    return 0


def _read_inputs(args: argparse.Namespace) -> Iterator[str | dict]:
    if args.texts:
        yield from args.texts
        return
    from hftransfer.evaluation.inputs import parse_input_lines

    stream = open(args.file, encoding="utf-8-sig") if args.file else sys.stdin  # noqa: SIM115 - closed below
    try:
        yield from parse_input_lines(stream, f"--file {args.file}" if args.file else "standard input")
    finally:
        if args.file:
            stream.close()


def _predict(args: argparse.Namespace) -> int:
    from hftransfer.artifacts.saved import load_run, read_recipe
    from hftransfer.evaluation.inputs import check_predict_file
    from hftransfer.evaluation.scoring import predict_records, prediction_inputs

    if args.file and not args.texts:
        check_predict_file(args.file)  # broken JSON lines or non-UTF-8 bytes fail before the model loads
    records = list(_read_inputs(args))
    inputs = prediction_inputs(read_recipe(args.output_dir), records)  # records lacking the run's inputs, too
    run = load_run(args.output_dir)
    out = open(args.output, "w") if args.output else sys.stdout  # noqa: SIM115
    try:
        for record in predict_records(run, records, batch_size=args.batch_size, inputs=inputs):
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    finally:
        if args.output:
            out.close()
    return 0


def _export(args: argparse.Namespace) -> int:
    if args.onnx:
        from hftransfer.artifacts.onnx import export_onnx

        done = export_onnx(args.output_dir, args.out, overwrite=args.overwrite, opset=args.opset)
        print(
            f"Wrote {done.folder}/model.onnx; onnxruntime matches torch on {done.rows_checked} validation rows "
            f"(max |logit difference| {done.max_abs_diff:.1e})"
        )
        return 0
    from hftransfer.artifacts.export import export_run

    print(f"Wrote {export_run(args.output_dir, args.out, merge=args.merge, overwrite=args.overwrite)}")
    return 0


def _push(args: argparse.Namespace) -> int:
    from hftransfer.artifacts import hub
    from hftransfer.artifacts.client import CLIENT_LINES, client_kind

    if args.dry_run is not None:
        default = args.dry_run == ""
        target = Path(str(Path(args.output_dir)) + ".to-push") if default else Path(args.dry_run)
        files = hub.dry_run(
            args.output_dir, target, repo_id=args.repo_id, merge=args.merge, base_model=args.base_model, replace=default
        )
        print(f"Dry run: would upload {len(files)} files to {args.repo_id} on {hub.hub_endpoint()}; staged in {target}")
        for name in files:
            staged = target / name
            link = f", a link to {staged.resolve()}" if staged.is_symlink() else ""
            print(f"  {name}  ({staged.stat().st_size:,} bytes{link})")
        print(f"The model {CLIENT_LINES[client_kind(target)]}.")
        return 0
    result = hub.push(
        args.output_dir,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        merge=args.merge,
        base_model=args.base_model,
    )
    print(f"Pushed {len(result.files)} files to {result.url} (commit {result.commit})")
    print(f"The model {CLIENT_LINES[result.client]}.")
    return 0


def _write_report(report: dict, path: str | None) -> None:
    if path:
        Path(path).write_text(json.dumps(report, indent=2) + "\n")
        print(f"Wrote {path}")


def _rank(args: argparse.Namespace) -> int:
    from hftransfer.analysis.features import DataSpec
    from hftransfer.analysis.rank import format_ranking, rank_models

    spec = DataSpec(args.data, args.split, args.text_columns, args.label_column, args.max_rows, args.seed)
    report = rank_models(spec, args.models, folds=args.folds, batch_size=args.batch_size, layers=args.layers)
    print(format_ranking(report))
    _write_report(report, args.out)
    return 0


def _shift(args: argparse.Namespace) -> int:
    from hftransfer.analysis.features import DataSpec
    from hftransfer.analysis.shift import format_shift, measure_shift

    source = DataSpec(args.source, args.source_split, args.text_columns, None, args.max_rows, args.seed)
    target_columns = args.target_text_columns or args.text_columns
    target = DataSpec(args.target, args.target_split, target_columns, None, args.max_rows, args.seed)
    report = measure_shift(
        source,
        target,
        args.model,
        folds=args.folds,
        permutations=args.permutations,
        seed=args.seed,
        batch_size=args.batch_size,
        with_bases=not args.no_base,
    )
    print(format_shift(report))
    _write_report(report, args.out)
    return 0


def _add_data_options(parser: argparse.ArgumentParser, max_rows: int) -> None:
    parser.add_argument("--text-columns", nargs="+", help="Text column(s) (default: the recipe's, else sentence).")
    parser.add_argument("--max-rows", type=int, default=max_rows, help=f"Random sample of rows (default {max_rows}).")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="Seeds the row sample and the cross-validation folds.")
    parser.add_argument("--out", help="Also write the report as JSON here.")


def _compare(args: argparse.Namespace) -> int:
    from hftransfer.compare import DEFAULT_STRATEGIES, parse_strategies, run_comparison
    from hftransfer.compare.plan import parse_variant
    from hftransfer.compare.report import table

    variants = [parse_variant(text) for text in args.variant or []]
    # An unknown name fails before anything loads. Variants alone run on the recipe's strategy; with --strategies,
    # every variant runs every strategy.
    strategies = parse_strategies(args.strategies) if args.strategies else None
    if strategies is None and not variants:
        strategies = list(DEFAULT_STRATEGIES)
    out = args.out or f"outputs/compare-{Path(args.recipe).stem if args.recipe else 'default'}"
    report = run_comparison(
        args.recipe,
        strategies,
        args.overrides,
        out,
        in_process=args.in_process,
        latency=not args.no_latency,
        variants=variants,
    )
    print(table(report["runs"]))
    print(f"Wrote {out}/report.md, report.json{''.join(', ' + p for p in report['plots'])}")
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hftransfer")
    except PackageNotFoundError:  # a source checkout that was never installed
        from hftransfer import __version__

        return __version__


def _recipe_args(parser: argparse.ArgumentParser, recipe_help: str, overrides_help: str) -> None:
    parser.add_argument("recipe", nargs="?", help=recipe_help)
    parser.add_argument("overrides", nargs="*", help=overrides_help)


def _run_commands(commands, common: argparse.ArgumentParser) -> None:
    """train, config and compare: the commands that read a recipe."""
    train = commands.add_parser(
        "train",
        parents=[common],
        help="Fine-tune a model from a YAML recipe.",
        epilog="Every key, its default and help: hftransfer config RECIPE [key=value ...]. TrainingArguments names "
        "work too (num_train_epochs=3, bf16=true); others go in train.trainer_args.NAME=VALUE.",
    )
    _recipe_args(
        train, "YAML recipe (defaults apply to keys it leaves out).", "key.sub=value overrides, e.g. train.epochs=1"
    )
    train.set_defaults(handler=_train)

    config = commands.add_parser(
        "config", parents=[common], help="Print the resolved recipe: every key's value, type, default and help."
    )
    _recipe_args(config, "YAML recipe (none: the defaults).", "key.sub=value overrides, as for train")
    config.add_argument("--yaml", action="store_true", help="Print only the resolved YAML (what a run saves).")
    config.set_defaults(handler=_config)

    cv = commands.add_parser(
        "cv",
        parents=[common],
        help="K-fold cross-validated evaluation of a recipe on its train split (mean ± sd over folds).",
        epilog="The pool is the recipe's train split (its validation split is not used); each fold is scored on its "
        "held-out rows, a test split by every fold's model and by their averaged probabilities.",
    )
    _recipe_args(cv, "YAML recipe (any strategy).", "key.sub=value overrides, as for train")
    cv.add_argument("--folds", type=int, default=5, help="Number of stratified folds, at least 2 (default 5).")
    cv.add_argument("--out", help="Folder for cv.json (default: <train.output_dir>-cv).")
    cv.add_argument("--keep-models", action="store_true", help="Keep each fold's output folder as OUT/fold-<i>.")
    cv.set_defaults(handler=_cv)

    compare = commands.add_parser(
        "compare", parents=[common], help="Train several strategies on one recipe (same data and seed); write a report."
    )
    _recipe_args(
        compare,
        "YAML recipe shared by every run.",
        "key=value for every run; STRATEGY:key=value or VARIANT:key=value for that strategy's or variant's runs.",
    )
    compare.add_argument(
        "--strategies", help="Comma-separated subset (default: every strategy, or with --variant the recipe's)."
    )
    compare.add_argument(
        "--variant",
        action="append",
        metavar="NAME:key=value,...",
        help="A named run: the recipe with these overrides (repeatable). With --strategies, one run per strategy. "
        "{run:OTHER} in a value is variant OTHER's output folder, e.g. model.name_or_path={run:source-only}.",
    )
    compare.add_argument("--out", help="Report folder (default outputs/compare-<recipe name>); runs land in OUT/runs.")
    compare.add_argument("--in-process", action="store_true", help="Train in this process (faster; no peak RSS).")
    compare.add_argument("--no-latency", action="store_true", help="Skip the inference latency measurement.")
    compare.set_defaults(handler=_compare)


def _scoring_command(commands, common, name: str, handler, help_text: str, file_help: str, output_help: str):
    """A command that runs a trained output folder over inputs: its folder, --file, --output, --batch-size."""
    command = commands.add_parser(name, parents=[common], help=help_text)
    command.add_argument("output_dir")
    command.add_argument("--file", help=file_help)
    command.add_argument("--output", help=output_help)
    command.add_argument("--batch-size", type=int, default=64)
    command.set_defaults(handler=handler)
    return command


def _output_commands(commands, common: argparse.ArgumentParser) -> None:
    """evaluate, predict, export and push: the commands that read a trained output folder."""
    evaluate = _scoring_command(commands, common, "evaluate", _evaluate,
                                "Score a trained output folder on labelled data.",
                                "A labelled csv/tsv/json/jsonl/parquet file instead of a split.",
                                "Also write the metrics JSON here.")  # fmt: skip
    evaluate.add_argument("--split", default="validation", help="Split of the recipe's data (default: validation).")
    predict = _scoring_command(commands, common, "predict", _predict, "Label new texts; writes JSONL (label, scores).",
                               "One text per line, or JSONL records with the recipe's text columns.",
                               "Write JSONL here instead of standard output.")  # fmt: skip
    predict.add_argument("texts", nargs="*", help="Texts to label; otherwise --file or standard input.")

    export = commands.add_parser("export", parents=[common], help="Write a run as a plain Transformers model.")
    export.add_argument("output_dir")
    export.add_argument("--out", required=True, help="Folder to write the exported model into.")
    export.add_argument("--merge", action="store_true", help="Merge a LoRA/IA3 adapter into its base model.")
    export.add_argument("--overwrite", action="store_true", help="Replace --out if it exists.")
    export.add_argument(
        "--onnx",
        action="store_true",
        help="Write --out/model.onnx instead (needs onnx + onnxruntime; adapters merged; checked).",
    )
    export.add_argument("--opset", type=int, default=17, help="ONNX opset for --onnx (default 17).")
    export.set_defaults(handler=_export)

    push = commands.add_parser(
        "push", parents=[common], help="Upload an output folder to the Hugging Face hub (`hf auth login` or HF_TOKEN)."
    )
    push.add_argument("output_dir")
    push.add_argument("--repo-id", required=True, help="user/name or org/name; HF_ENDPOINT selects the hub.")
    push.add_argument("--private", action="store_true", help="Create the repo private (an existing repo keeps its).")
    push.add_argument("--revision", help="Branch to push to (created when missing).")
    push.add_argument("--merge", action="store_true", help="Adapter runs: push the merged model, not the adapter.")
    push.add_argument("--base-model", help="Hub id of the base model, when the recipe used a local path.")
    push.add_argument(
        "--dry-run",
        nargs="?",
        const="",
        metavar="FOLDER",
        help="Write the files a push would upload to FOLDER (default: OUTPUT_DIR.to-push); no network.",
    )
    push.set_defaults(handler=_push)


def _analysis_commands(commands, common: argparse.ArgumentParser) -> None:
    """rank and shift: choose a checkpoint before training."""
    data_help = (
        "a YAML recipe (its data section; --split picks the split), a csv/tsv/json/jsonl/parquet file, "
        "an image folder (<dir>/<class>/*), or a .txt file (one text per line)"
    )
    rank = commands.add_parser("rank", parents=[common], help="Rank checkpoints for labelled data, no fine-tuning.")
    rank.add_argument("--data", required=True, help=f"Labelled data: {data_help}.")
    rank.add_argument("--models", nargs="+", required=True, help="Candidate checkpoints: Hub ids, folders, pkg: paths.")
    rank.add_argument("--split", default="train", help="Recipe split to score on (default: train).")
    rank.add_argument("--label-column", help="Label column (default: the recipe's, else label).")
    rank.add_argument("--folds", type=int, default=5, help="Cross-validation folds of the linear probe (default 5).")
    rank.add_argument("--layers", choices=["auto", "last", "mean"], default="auto",
                      help="Features: the last layer's pooled states, or their mean over all layers (text only). "
                      "Default auto: mean for text, last for images.")  # fmt: skip
    _add_data_options(rank, max_rows=2000)
    rank.set_defaults(handler=_rank)

    shift = commands.add_parser("shift", parents=[common], help="Distance between two data sets in a model's features.")
    shift.add_argument("--source", required=True, help=f"Source data: {data_help}.")
    shift.add_argument("--target", required=True, help="Target data, same forms as --source.")
    shift.add_argument(
        "--model",
        nargs="+",
        required=True,
        help="Checkpoint(s) whose features are compared: Hub ids, folders, pkg: paths, or hftransfer "
        "output folders (LoRA runs merged on the fly), each then measured after its base model.",
    )
    shift.add_argument(
        "--no-base",
        action="store_true",
        help="For output folders, skip measuring the base model they were trained from.",
    )
    shift.add_argument("--source-split", default="train", help="Recipe split for --source (default: train).")
    shift.add_argument("--target-split", default="train", help="Recipe split for --target (default: train).")
    shift.add_argument("--target-text-columns", nargs="+", help="Target text column(s), when they differ.")
    shift.add_argument("--folds", type=int, default=5, help="Domain-classifier cross-validation folds (default 5).")
    shift.add_argument("--permutations", type=int, default=500, help="MMD permutation-test draws (default 500).")
    _add_data_options(shift, max_rows=1000)
    shift.set_defaults(handler=_shift)


def build_parser() -> argparse.ArgumentParser:
    # -v/-q work before or after the command; SUPPRESS keeps a command's parser from resetting the count.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help=f"More log output (-vv: debug); {VERBOSITY_ENV}=debug|info|warning|error sets the base.",
    )
    common.add_argument("-q", "--quiet", action="count", default=argparse.SUPPRESS,
                        help="Less log output (-q: warnings and errors, -qq: errors only).")  # fmt: skip
    parser = argparse.ArgumentParser(
        prog="hftransfer", description="Transfer learning on Hugging Face models.", parents=[common]
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    _run_commands(commands, common)
    _output_commands(commands, common)
    _analysis_commands(commands, common)
    return parser


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time (tests and notebooks swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging(verbose: int = 0, quiet: int = 0) -> str:
    """One handler on the `hftransfer` logger (the root logger is left alone) and transformers' verbosity to match;
    returns the level name. Base level: HFTRANSFER_VERBOSITY, else info; each -v goes one level down, -q up."""
    base = os.environ.get(VERBOSITY_ENV, "").strip().lower() or "info"
    if base not in LEVELS:
        raise UserError(f"{VERBOSITY_ENV}={base!r} is not one of {', '.join(LEVELS)}.")
    level = LEVELS[max(0, min(len(LEVELS) - 1, LEVELS.index(base) - verbose + quiet))]
    for handler in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    chosen = verbose or quiet or os.environ.get(VERBOSITY_ENV)
    if chosen or not os.environ.get("TRANSFORMERS_VERBOSITY"):  # an explicit TRANSFORMERS_VERBOSITY stands alone
        from transformers.utils import logging as hf_logging  # light: no torch

        hf_level = {"debug": "info", "info": "warning"}.get(level, level)
        hf_logging.set_verbosity(getattr(hf_logging, hf_level.upper()))
    _library_bars()
    return level


def _library_bars() -> None:
    """The libraries' own bars (loading and writing weights, dataset maps, downloads) follow ours: none outside a
    terminal, with -q, or on the other processes of `accelerate launch`."""
    from hftransfer.console import progress_enabled

    if progress_enabled(None):
        return
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    for name in ("HF_DATASETS_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS"):
        os.environ.setdefault(name, "1")  # read when datasets / huggingface_hub load their bars
    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].utils.disable_progress_bars()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # `compare RECIPE --strategies ... key=value`: argparse leaves overrides given after options
        if not hasattr(args, "overrides") or any(e.startswith("-") or "=" not in e for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides.extend(extra)
    if getattr(args, "recipe", None) and "=" in args.recipe:  # `hftransfer train key=value` with no recipe
        args.overrides.insert(0, args.recipe)
        args.recipe = None
    try:
        configure_logging(getattr(args, "verbose", 0), getattr(args, "quiet", 0))
        return args.handler(args)
    except (UserError, FileNotFoundError) as err:
        message = " ".join(str(err).split("\n"))  # one line, whatever the message held
        print(f"hftransfer {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
