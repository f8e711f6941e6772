"""A plain Accelerate training loop, in the shape of Accelerate's `nlp_example.py`.

The same code runs on one CPU or GPU and, unchanged, under `accelerate launch` with DDP, FSDP
or DeepSpeed. It takes the same batches (`train_batch_sampler`, seeded by (seed, epoch)), the
same optimizer groups and schedule, and the same per-group loss scaling as the Trainer loop, so
both loops take the same steps. Checkpoints hold the Accelerate state (model, optimizer,
scheduler, RNG) plus `Progress` (epoch, batch position, best metric), which is what an exact
mid-epoch resume needs.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import LoggerType, ProjectConfiguration, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from hftransfer.artifacts.layout import write_json
from hftransfer.config.recipe import RunConfig
from hftransfer.config.schema import to_dict
from hftransfer.data import PreparedData
from hftransfer.data.loaders import eval_loader, train_loader
from hftransfer.errors import UserError
from hftransfer.evaluation.metrics import classification_metrics, scalar_metrics
from hftransfer.strategies.base import Strategy
from hftransfer.training.checkpoints import (
    CHECKPOINTS_DIR,
    Progress,
    find_checkpoint,
    prune_checkpoints,
    publish_checkpoint,
    staging_name,
)
from hftransfer.training.loops.common import LoopResult
from hftransfer.training.optim import build_optimizer, build_scheduler
from hftransfer.training.precision import resolve_precision

logger = logging.getLogger("hftransfer")
LOG_HISTORY_FILE = "log_history.json"


def run_accelerate_loop(
    config: RunConfig, model, strategy: Strategy, data: PreparedData, collator, work_dir: Path
) -> LoopResult:
    train = config.train
    accumulation = train.gradient_accumulation_steps
    precision = resolve_precision(train.precision)
    # The process-wide state refuses a second mixed precision; a run in a process that trained before (research
    # code, benches, tests) starts from a clean one, as Trainer's arguments do. The distributed state is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),  # as the Trainer loop; also makes a CPU-only `accelerate launch` use gloo
        mixed_precision="no" if precision == "fp32" else precision,
        gradient_accumulation_steps=accumulation,
        step_scheduler_with_optimizer=False,  # the schedule is built per process and stepped once per update
        log_with=_trackers(train.report_to),
        project_config=ProjectConfiguration(project_dir=str(work_dir), logging_dir=str(work_dir / "logs")),
    )
    set_seed(train.seed)  # as Trainer does on creation, so both loops draw the same dropout masks

    # Data: the shared (seed, epoch)-determined batches, and length-sorted eval batches.
    train_batches = train_loader(data.train, config.data, train.batch_size, train.seed, collator, train.num_workers)
    sampler = train_batches.batch_sampler
    valid_loader = eval_loader(data.validation, collator, train.eval_batch_size, train.num_workers)

    optimizer = build_optimizer(strategy, model, train)
    model, optimizer, train_batches, valid_loader = accelerator.prepare(model, optimizer, train_batches, valid_loader)

    # Steps, counted from this process's share of the batches, exactly as Trainer counts them.
    batches_per_epoch = len(train_batches)
    steps_per_epoch = math.ceil(batches_per_epoch / accumulation)
    total_steps = train.max_steps if train.max_steps > 0 else math.ceil(train.epochs * steps_per_epoch)
    num_epochs = math.ceil(total_steps / steps_per_epoch)
    scheduler = accelerator.prepare(build_scheduler(optimizer, train, total_steps))

    checkpoints = work_dir / CHECKPOINTS_DIR
    keep_best = train.load_best_at_end or train.early_stopping_patience is not None
    progress = Progress()
    resume = find_checkpoint(train.resume_from, checkpoints)
    if resume is not None:
        accelerator.load_state(str(resume))  # weights, optimizer, scheduler, RNG of every process
        progress = Progress.load(resume)
        logger.info(
            "Resuming from %s (step %d, epoch %d, batch %d)",
            resume,
            progress.global_step,
            progress.epoch,
            progress.batches_done,
        )
    elif train.resume_from is not None:
        logger.info("No checkpoint in %s yet; starting from the beginning", checkpoints)

    accelerator.init_trackers("hftransfer", config=_tracker_config(config, strategy))
    unwrapped = accelerator.unwrap_model(model)
    label_names = list(data.labels.names)
    bar = tqdm(
        total=total_steps, initial=progress.global_step, desc="train", disable=not accelerator.is_local_main_process
    )
    started, samples_this_run, epoch_train_s = time.perf_counter(), 0, []
    running_loss, steps_since_log, grad_norm = torch.zeros((), device=accelerator.device), 0, None
    stop = progress.global_step >= total_steps

    model.train()
    for epoch in range(progress.epoch, num_epochs):
        if stop:
            break
        epoch_started = time.perf_counter()
        train_batches.set_epoch(epoch)  # Accelerate's loader keeps its own epoch counter...
        sampler.set_epoch(epoch)  # ...and does not reach a sampler it wrapped for sharding
        skip = progress.batches_done if epoch == progress.epoch else 0
        batches = accelerator.skip_first_batches(train_batches, skip) if skip else train_batches
        for index, batch in enumerate(batches, start=skip):
            group_start = index - index % accumulation
            group_size = min(accumulation, batches_per_epoch - group_start)  # the last group may be short
            if index == group_start:
                strategy.on_step(unwrapped, progress.global_step, steps_per_epoch)
            with accelerator.accumulate(model):  # no gradient sync between processes until the group's last batch
                loss, _ = strategy.loss(model, batch)
                # backward() divides by `accumulation`; a short last group must average over its own size.
                accelerator.backward(loss * (accumulation / group_size))
                if accelerator.sync_gradients:
                    grad_norm = accelerator.clip_grad_norm_(model.parameters(), train.max_grad_norm or float("inf"))
                    learning_rate = scheduler.get_last_lr()[0]  # the rate this update uses
                    optimizer.step()
                    if not accelerator.optimizer_step_was_skipped:  # fp16 overflow: keep the schedule in place
                        scheduler.step()
                    optimizer.zero_grad()
            running_loss += loss.detach() / group_size
            samples_this_run += int(batch["labels"].shape[0]) * accelerator.num_processes
            if accelerator.sync_gradients != (index + 1 == group_start + group_size):
                raise RuntimeError(f"Accumulation out of step at batch {index}; the checkpoint does not fit this run.")
            if not accelerator.sync_gradients:
                continue

            progress.global_step += 1
            steps_since_log += 1
            bar.update(1)
            end_of_epoch = index + 1 == batches_per_epoch
            progress.epoch, progress.batches_done = (epoch + 1, 0) if end_of_epoch else (epoch, index + 1)
            last_step = progress.global_step >= total_steps
            epoch_float = epoch + (index + 1) / batches_per_epoch
            if end_of_epoch:
                epoch_train_s.append(time.perf_counter() - epoch_started)

            if progress.global_step % train.logging_steps == 0 or last_step:
                entry = {
                    "loss": accelerator.reduce(running_loss, "mean").item() / steps_since_log,
                    "grad_norm": float(grad_norm) if grad_norm is not None else None,
                    "learning_rate": learning_rate,
                    "samples_per_second": samples_this_run / max(time.perf_counter() - started, 1e-9),
                    "epoch": epoch_float,
                }
                _log(accelerator, progress, entry)
                bar.set_postfix(loss=f"{entry['loss']:.4f}", lr=f"{learning_rate:.2e}")
                running_loss.zero_()
                steps_since_log = 0

            improved = False
            due = progress.global_step % train.eval_steps == 0 if train.eval_steps else end_of_epoch
            if due or last_step:
                metrics = evaluate(accelerator, model, valid_loader, label_names)
                improved = progress.record_eval(metrics.get(train.best_metric), train.greater_is_better)
                _log(accelerator, progress, {f"eval_{k}": v for k, v in metrics.items()} | {"epoch": epoch_float})
                patience = train.early_stopping_patience
                if patience is not None and progress.evals_without_improvement >= patience:
                    logger.info(
                        "Early stopping at step %d: no better %s in %d evaluations",
                        progress.global_step,
                        train.best_metric,
                        patience,
                    )
                    stop = True

            periodic = train.save_steps is not None and (progress.global_step % train.save_steps == 0 or last_step)
            if periodic or (keep_best and improved):
                protect = {progress.best_step} if keep_best and progress.best_step is not None else set()
                save_checkpoint(accelerator, checkpoints, progress, train.save_total_limit, protect)

            if last_step or stop:
                stop = True
                break
    bar.close()

    if keep_best and progress.best_step is not None and progress.best_step != progress.global_step:
        best = checkpoints / f"checkpoint-{progress.best_step}"
        if best.is_dir():
            logger.info(
                "Restoring the best weights (%s=%.4f at step %d)",
                train.best_metric,
                progress.best_value,
                progress.best_step,
            )
            accelerator.load_state(str(best))
        else:
            logger.warning("The best checkpoint %s is gone; keeping the last weights", best)

    runtime = time.perf_counter() - started
    if accelerator.is_main_process:
        write_json(work_dir / LOG_HISTORY_FILE, progress.log_history)
    accelerator.end_training()
    return LoopResult(
        model=accelerator.unwrap_model(model),
        train_runtime_s=runtime,
        train_samples=samples_this_run,
        global_steps=progress.global_step,
        losses=[entry["loss"] for entry in progress.log_history if "loss" in entry],
        log_history=progress.log_history,
        epoch_train_s=epoch_train_s,
    )


@torch.no_grad()
def evaluate(accelerator: Accelerator, model, loader: DataLoader, label_names: list[str]) -> dict[str, float]:
    """Metrics over the whole eval set: `gather_for_metrics` collects every process's rows and drops the padding."""
    model.eval()
    all_logits, all_labels = [], []
    for batch in loader:
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        logits, labels = accelerator.gather_for_metrics((logits.float(), batch["labels"]))
        all_logits.append(logits.cpu())
        all_labels.append(labels.cpu())
    model.train()
    logits, labels = torch.cat(all_logits), torch.cat(all_labels)
    metrics = scalar_metrics(classification_metrics(labels.numpy(), logits.numpy(), label_names=label_names))
    metrics["loss"] = F.cross_entropy(logits, labels).item()
    return metrics


def save_checkpoint(accelerator: Accelerator, folder: Path, progress: Progress, keep: int, protect: set[int]) -> Path:
    """Write the full state under a temporary name, rename it into place, then drop old checkpoints."""
    staged = staging_name(folder, progress.global_step)
    if accelerator.is_main_process and staged.exists():
        shutil.rmtree(staged)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staged))  # every process writes its RNG state; the main one the rest
    accelerator.wait_for_everyone()
    final = folder / f"checkpoint-{progress.global_step}"
    if accelerator.is_main_process:
        progress.save(staged)
        publish_checkpoint(staged, folder, progress.global_step)
        prune_checkpoints(folder, keep, protect)
    accelerator.wait_for_everyone()
    return final


def _log(accelerator: Accelerator, progress: Progress, entry: dict) -> None:
    entry = {**entry, "step": progress.global_step}
    progress.log_history.append(entry)
    accelerator.log({k: v for k, v in entry.items() if v is not None and k != "step"}, step=progress.global_step)
    if accelerator.is_main_process:
        logger.info(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in entry.items()))


def _trackers(names: list[str]) -> list[str] | None:
    """Accelerate tracker names, checked up front so a missing package fails before any training."""
    from accelerate.utils import imports

    valid = [t.value for t in LoggerType]
    for name in names:
        if name not in valid:
            raise UserError(f"train.report_to '{name}' is not a tracker Accelerate supports; choose from {valid}.")
        available = getattr(imports, f"is_{name}_available", None)
        if available is not None and not available():
            raise UserError(f"train.report_to names '{name}', which is not installed: pip install {name}")
    return list(names) or None


def _tracker_config(config: RunConfig, strategy: Strategy) -> dict:
    """Flat hyperparameters for trackers (TensorBoard takes scalars and strings only)."""
    flat = {f"train.{k}": v for k, v in to_dict(config.train).items() if isinstance(v, (int, float, str, bool))}
    return {**flat, "strategy": strategy.name, "model": config.model.name_or_path}
