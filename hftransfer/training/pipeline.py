"""The train pipeline: config -> data -> model -> strategy -> loop -> metrics -> output folder."""

from __future__ import annotations

import logging
import platform
import time
from datetime import datetime, timezone

import torch
import transformers
from accelerate import PartialState
from transformers import set_seed

import hftransfer
from hftransfer.artifacts.layout import folder_size_bytes, publish, staging_dir, write_json
from hftransfer.artifacts.saved import LABELS_FILE, RECIPE_FILE, RESULTS_FILE
from hftransfer.config.recipe import RunConfig, save_config
from hftransfer.evaluation.inference import dataset_logits
from hftransfer.evaluation.metrics import classification_metrics
from hftransfer.models.loading import count_parameters
from hftransfer.models.tasks import get_task, resolve_task
from hftransfer.strategies import build_strategy, strategy_class
from hftransfer.training.loops import LOOPS
from hftransfer.training.precision import resolve_precision

logger = logging.getLogger("hftransfer")


def train(config: RunConfig) -> dict:
    """Run one recipe end to end and return what `results.json` holds (`{}` on non-main processes)."""
    work = staging_dir(config.train.output_dir, config.train.overwrite_output_dir, config.train.resume_from is not None)
    set_seed(config.train.seed)
    config = resolve_task(config)  # `task: auto` -> the checkpoint's modality, recorded in the saved recipe
    task = get_task(config.task)
    tokenizer = task.load_processor(config.model)  # a tokenizer, or an image processor for images
    data = task.prepare_data(config.data, tokenizer)
    model = task.load_model(config.model, data.labels)
    strategy = build_strategy(config.strategy)
    model = strategy.prepare(model)
    data = strategy.prepare_data(model, data, tokenizer, config)
    trainable, total = count_parameters(model)
    logger.info("Training %s of %s parameters (%s strategy)", f"{trainable:,}", f"{total:,}", strategy.name)

    collator = task.make_collator(tokenizer, config.data)
    outcome = LOOPS[config.train.loop](config, model, strategy, data, collator, work)
    if not PartialState().is_main_process:
        return {}  # under `accelerate launch` the main process evaluates and writes the output folder

    started = time.perf_counter()
    # In fp32 whatever the training precision: the saved weights are fp32, and `evaluate`, `predict` and the ONNX
    # export run them so; results.json then holds exactly what the shipped model scores.
    eval_logits = dataset_logits(outcome.model, data.validation, collator, config.train.eval_batch_size)
    eval_runtime = time.perf_counter() - started
    metrics = classification_metrics(data.validation["labels"], eval_logits, label_names=data.labels.names)

    strategy.save(outcome.model, work)
    tokenizer.save_pretrained(work)
    save_config(config, work / RECIPE_FILE)
    write_json(work / LABELS_FILE, {"names": list(data.labels.names), "raw_values": list(data.labels.raw_values)})
    results = {
        "strategy": strategy.name,
        "loop": config.train.loop,
        "task": config.task,
        "model": config.model.name_or_path,
        "dataset": config.data.dataset or config.data.train_file,
        "labels": list(data.labels.names),
        "eval": metrics,
        "trainable_params": trainable,
        "total_params": total,
        "trainable_share": trainable / total,
        "checkpoint_size_bytes": folder_size_bytes(work),
        "num_train_samples": len(data.train),
        "num_eval_samples": len(data.validation),
        "epochs": config.train.epochs,
        "global_steps": outcome.global_steps,
        "train_runtime_s": outcome.train_runtime_s,
        "train_samples_per_second": outcome.train_samples_per_second,
        "epoch_train_s": outcome.epoch_train_s,
        "eval_runtime_s": eval_runtime,
        "train_losses": outcome.losses,
        "log_history": outcome.log_history,  # per-step train loss and eval metrics (learning curves)
        "precision": resolve_precision(config.train.precision),  # what training ran in
        "hardware": _hardware(),
        "versions": {
            "hftransfer": hftransfer.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if torch.cuda.is_available():  # this process's peak since start (callers training repeatedly reset it)
        results["peak_gpu_memory_bytes"] = torch.cuda.max_memory_allocated()
    if data.notes:
        results["data"] = data.notes
    extra = strategy.extra_results(outcome.model, metrics, work)
    if extra:
        results[strategy.name] = extra
    write_json(work / RESULTS_FILE, results)
    _write_card(work, config.train.output_dir)
    publish(work, config.train.output_dir)
    if config.hub.push:
        from hftransfer.artifacts.hub import push_configured

        results["hub"] = push_configured(config, config.train.output_dir)
    return results


def _write_card(work, output_dir: str) -> None:
    """README.md for every run; a card problem is reported but never costs the trained model."""
    from hftransfer.artifacts.card import write_model_card

    try:
        write_model_card(work, model_ref=output_dir)
    except Exception as err:  # the run's weights and results matter more than its card
        logger.warning("Could not write the model card (README.md): %s", err)


def _hardware() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def format_report(results: dict) -> str:
    m = results["eval"]
    lines = [
        f"strategy={results['strategy']} loop={results['loop']} model={results['model']}",
        f"trainable params: {results['trainable_params']:,} / {results['total_params']:,} "
        f"({100 * results['trainable_share']:.2f}%)",
        f"train: {results['train_runtime_s']:.1f}s, {results['train_samples_per_second']:.1f} samples/s",
        "dev: "
        + "  ".join(
            f"{k}={m[k]:.4f}" for k in ("accuracy", "f1", "precision", "recall", "roc_auc") if m.get(k) is not None
        ),
        f"confusion matrix (rows = true {list(m['per_class'])}): {m['confusion_matrix']}",
    ]
    lines.extend(strategy_class(results["strategy"]).report_lines(results))
    return "\n".join(lines)
