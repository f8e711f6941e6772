"""The train pipeline: config -> data -> model -> strategy -> loop -> evaluation -> output folder."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import PartialState
from datasets import DatasetDict
from transformers import PreTrainedModel, set_seed

from hftransfer.artifacts.client import mark_output_folder
from hftransfer.artifacts.layout import (
    RECIPE_FILE,
    cleanup_failed_run,
    drop_checkpoints,
    folder_size_bytes,
    publish,
    staging_dir,
)
from hftransfer.artifacts.results import RunResults
from hftransfer.artifacts.saved import write_labels
from hftransfer.config.recipe import RunConfig, save_config
from hftransfer.data.prepared import PreparedData
from hftransfer.data.sources import complete_splits
from hftransfer.domains.data import prepare_domain_data
from hftransfer.domains.objective import check_combination, wrap_for_domains
from hftransfer.evaluation.inference import dataset_logits
from hftransfer.evaluation.metrics import classification_metrics
from hftransfer.models.loading import adopt_classifier, count_parameters
from hftransfer.models.locate import check_run_locations, fit_max_length
from hftransfer.models.tasks import Task, get_task, resolve_task
from hftransfer.strategies import Strategy, build_strategy, strategy_class
from hftransfer.training.loops import LOOPS
from hftransfer.training.loops.common import LoopResult
from hftransfer.training.runtime import check_train_setup, reported_by_main_process, resolve_runtime

logger = logging.getLogger("hftransfer")


@dataclass
class Prepared:
    """Everything a loop needs, made from the recipe before any training step."""

    config: RunConfig
    task: Task
    processor: Any
    """The tokenizer, or the image processor of an image run."""
    data: PreparedData
    model: torch.nn.Module
    strategy: Strategy


@dataclass
class Given:
    """What research code hands over in place of the recipe's sources (`hftransfer.finetune`): in-memory splits,
    an already-loaded model and its processor, a ready strategy (e.g. distillation from an in-memory teacher)."""

    splits: DatasetDict | None = None
    model: PreTrainedModel | None = None
    processor: Any = None
    strategy: Strategy | None = None


@dataclass
class Finished:
    """A finished run: what `results.json` holds (`{}` on non-main processes), what trained, and the model."""

    results: dict
    run: Prepared
    model: torch.nn.Module
    test_logits: np.ndarray | None = None
    """The trained model's logits on the test split, in row order (what `results["test"]` was scored from)."""


def prepare(config: RunConfig, given: Given | None = None) -> Prepared:
    """Resolve the task, load processor and data, load the model and hand both to the strategy (what loading
    reports, only the main process of `accelerate launch` says)."""
    with reported_by_main_process():
        return _prepare(config, given or Given())


def _prepare(config: RunConfig, given: Given) -> Prepared:
    set_seed(config.train.seed)
    config = resolve_task(config, given.model)  # `task: auto` -> the modality, recorded in the saved recipe
    task = get_task(config.task)
    processor = given.processor if given.processor is not None else task.load_processor(config.model)
    config = fit_max_length(config, processor, given.model.config if given.model is not None else None)
    data, extra = _prepare_data(config, task, processor, given)
    if given.model is not None:
        model = adopt_classifier(given.model, config.model, data.labels)
    else:
        model = task.load_model(config.model, data.labels)
    strategy = given.strategy or build_strategy(config.strategy)
    if extra is not None:  # transfer across domains: the objective wraps whatever strategy trains
        collator = task.collator(processor, config.data)
        strategy = wrap_for_domains(strategy, config.domain, extra, collator, config.train)
        data.notes["domain"] = config.domain.describe()
    strategy.bind(resolve_runtime(config.train))
    model = strategy.prepare(model)
    data = strategy.prepare_data(model, data, processor, config)
    return Prepared(config, task, processor, data, model, strategy)


def _prepare_data(config: RunConfig, task: Task, processor: Any, given: Given) -> tuple[PreparedData, Any]:
    """The run's data, and with any `domain.*` option the objective's extra streams (else None). With a source,
    its rows are the train split; the target's labelled rows may then be absent (`data.validation_*` evaluates)."""
    if not config.domain.active:
        splits = complete_splits(given.splits, config.data) if given.splits is not None else None
        return task.prepare_data(config.data, processor, splits), None
    ready = getattr(given.strategy, "inner", given.strategy)  # a DomainObjective research code built
    chosen = type(ready) if ready is not None else strategy_class(config.strategy.name)
    check_combination(chosen, config.domain)  # before any data or model loads
    need_train = not config.domain.source_file
    splits = complete_splits(given.splits, config.data, need_train=need_train) if given.splits is not None else None
    return prepare_domain_data(config, task, processor, splits)


def train(config: RunConfig, given: Given | None = None) -> dict:
    """Run one recipe end to end and return what `results.json` holds (`{}` on non-main processes)."""
    return run_pipeline(config, given).results


def run_pipeline(config: RunConfig, given: Given | None = None) -> Finished:
    """`train`, also handing back what trained and the trained model (for `hftransfer.finetune`)."""
    check_train_setup(config.train)  # fp16 on a CPU, a tracker not installed: before anything loads
    if given is None or (given.model is None and given.strategy is None):  # in-memory ones have no location
        check_run_locations(config)  # a missing model folder or uncached Hub id fails before any folder is made
    work = staging_dir(config.train.output_dir, config.train.overwrite_output_dir, config.train.resume_from is not None)
    with cleanup_failed_run(work):  # a failed run leaves no empty <out>.incomplete behind
        return _train_in(config, work, given)


def _train_in(config: RunConfig, work: Path, given: Given | None) -> Finished:
    run = prepare(config, given)
    trainable, total = count_parameters(run.model)
    logger.info("Training %s of %s parameters (%s strategy)", f"{trainable:,}", f"{total:,}", run.strategy.name)
    collator = run.task.collator(run.processor, run.config.data)
    outcome = LOOPS[run.config.train.loop](run.config, run.model, run.strategy, run.data, collator, work)
    if not PartialState().is_main_process:
        return Finished({}, run, outcome.model)  # under `accelerate launch` the main process evaluates and writes

    started = time.perf_counter()
    # In fp32 whatever the training precision: the saved weights are fp32, and `evaluate`, `predict` and the ONNX
    # export run them so; results.json then holds exactly what the shipped model scores.
    metrics, _ = _score(run, outcome.model, run.data.validation, collator)
    eval_runtime = time.perf_counter() - started

    save_run(run, outcome.model, work)
    results = build_results(run, outcome, metrics, eval_runtime, (trainable, total), work)
    test_logits = None
    if run.data.test is not None:  # the test split is scored once, at the end, beside validation
        results.test, test_logits = _score(run, outcome.model, run.data.test, collator)
    results.write(work)
    _write_card(work, run.config.train.output_dir)
    drop_checkpoints(work, run.config.train.keep_checkpoints)
    publish(work, run.config.train.output_dir)
    payload = results.to_json()
    if run.config.hub.push:
        from hftransfer.artifacts.hub import push_configured

        payload["hub"] = push_configured(run.config, run.config.train.output_dir)
    return Finished(payload, run, outcome.model, test_logits)


def _score(run: Prepared, model: torch.nn.Module, split: Any, collator: Any) -> tuple[dict, np.ndarray]:
    """The split's metrics, and the logits they were computed from."""
    logits = dataset_logits(model, split, collator, run.config.train.eval_batch_size)
    return classification_metrics(split["labels"], logits, label_names=run.data.labels.names), logits


def save_run(run: Prepared, model: torch.nn.Module, work: Path) -> None:
    """Weights as the strategy saves them, the processor, the resolved recipe and the label map; a folder
    the standard client would misread is marked for it (`hftransfer.artifacts.client`)."""
    run.strategy.save(model, work)
    run.processor.save_pretrained(work)
    save_config(run.config, work / RECIPE_FILE)
    write_labels(work, run.data.labels)
    mark_output_folder(work, getattr(model, "config", None))  # pipeline() predicts as hftransfer, or refuses


def build_results(
    run: Prepared, outcome: LoopResult, metrics: dict, eval_runtime: float, counts: tuple[int, int], work: Path
) -> RunResults:
    """results.json of a finished run; `counts`: (trainable, total) parameters as training started."""
    config, data = run.config, run.data
    trainable, total = counts
    return RunResults(
        strategy=run.strategy.name,
        loop=config.train.loop,
        task=config.task,
        model=config.model.name_or_path,
        dataset=config.data.dataset or config.data.train_file,
        labels=list(data.labels.names),
        eval=metrics,
        trainable_params=trainable,
        total_params=total,
        trainable_share=trainable / total,
        checkpoint_size_bytes=folder_size_bytes(work),
        num_train_samples=len(data.train),
        num_eval_samples=len(data.validation),
        epochs=config.train.epochs,
        global_steps=outcome.global_steps,
        train_runtime_s=outcome.train_runtime_s,
        train_samples_per_second=outcome.train_samples_per_second,
        epoch_train_s=outcome.epoch_train_s,
        eval_runtime_s=eval_runtime,
        train_losses=outcome.losses,
        log_history=outcome.log_history,
        precision=run.strategy.runtime.precision,
        # this process's peak since start (callers training repeatedly reset it)
        peak_gpu_memory_bytes=torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None,
        data=data.notes or None,
        strategy_results=run.strategy.extra_results(outcome.model, metrics, work) or None,
    )


def _write_card(work: Path, output_dir: str) -> None:
    """README.md for every run; a card problem is reported but never costs the trained model."""
    from hftransfer.artifacts.card import write_model_card

    try:
        write_model_card(work, model_ref=output_dir)
    except Exception as err:  # the run's weights and results matter more than its card
        logger.warning("Could not write the model card (README.md): %s", err)


def format_report(results: dict) -> str:
    m = results["eval"]
    lines = [
        f"strategy={results['strategy']} loop={results['loop']} model={results['model']}",
        f"trainable params: {results['trainable_params']:,} / {results['total_params']:,} "
        f"({100 * results['trainable_share']:.3g}%)",
        f"train: {results['train_runtime_s']:.1f}s, {results['train_samples_per_second']:.1f} samples/s",
        f"dev: {_scores(m)}",
        f"confusion matrix (rows = true {list(m['per_class'])}): {m['confusion_matrix']}",
    ]
    if results.get("test"):
        lines.append(f"test: {_scores(results['test'])}")
    if (results.get("data") or {}).get("domain"):
        lines.append(f"domains: {results['data']['domain']}")
    lines.extend(strategy_class(results["strategy"]).report_lines(results))
    return "\n".join(lines)


def _scores(metrics: dict) -> str:
    keys = ("accuracy", "f1", "precision", "recall", "roc_auc")
    return "  ".join(f"{k}={metrics[k]:.4f}" for k in keys if metrics.get(k) is not None)
