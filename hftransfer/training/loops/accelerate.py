"""A plain Accelerate training loop, in the shape of Accelerate's `nlp_example.py`.

The same code runs on one CPU or GPU and, unchanged, under `accelerate launch` with DDP, FSDP or DeepSpeed.
It takes the same batches (`train_loader`, seeded by (seed, epoch); under several processes each process gets
its own share, every row once per epoch), the same optimizer groups and schedule, and the same per-group loss
scaling as the Trainer loop, so both loops take the same steps. Checkpoints hold the Accelerate state (model
with the strategy's extra modules, optimizer, scheduler, RNG) plus `Progress` (epoch, batch position, best
metric), which is what an exact mid-epoch resume needs.

Read it top to bottom: `run_accelerate_loop` sets up (accelerator, data, model, optimizer, schedule, resume),
then `AccelerateLoop.train_epoch` runs the epochs; each batch goes through `step`, and after each optimizer
step `log`, `evaluate` and `save` do what is due.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.data_loader import prepare_data_loader
from accelerate.state import AcceleratorState
from accelerate.utils import ProjectConfiguration, set_seed

from hftransfer.artifacts.layout import CHECKPOINTS_DIR, LOG_HISTORY_FILE, write_json
from hftransfer.config.recipe import RunConfig, TrainConfig
from hftransfer.config.schema import to_dict
from hftransfer.console import progress
from hftransfer.data import PreparedData
from hftransfer.data.loaders import eval_loader, train_loader
from hftransfer.strategies.base import Strategy
from hftransfer.training.checkpoints import (
    Progress,
    check_rng_state,
    find_checkpoint,
    prune_checkpoints,
    publish_checkpoint,
    staging_name,
)
from hftransfer.training.loops.common import (
    LoopResult,
    enable_activation_checkpointing,
    evaluate,
    trained_model,
    weighted_loss,
    with_trainable_modules,
)
from hftransfer.training.optim import build_optimizer, build_scheduler
from hftransfer.training.runtime import check_trackers

logger = logging.getLogger("hftransfer")


def run_accelerate_loop(
    config: RunConfig, model, strategy: Strategy, data: PreparedData, collator, work_dir: Path
) -> LoopResult:
    train = config.train
    accelerator = make_accelerator(train, strategy.runtime.precision, work_dir)
    set_seed(train.seed)  # as Trainer does on creation, so both loops draw the same dropout masks

    # Data: this process's share of the (seed, epoch)-determined batches, and length-sorted eval batches.
    train_batches = process_train_batches(accelerator, data, config, collator)
    valid_batches = eval_loader(data.validation, collator, train.eval_batch_size, train.num_workers)

    # Model (with the strategy's extra trainable modules), optimizer, schedule.
    enable_activation_checkpointing(model, train.trainer_args)
    model = with_trainable_modules(model, strategy)
    optimizer = build_optimizer(strategy, model, train)
    model, optimizer, valid_batches = accelerator.prepare(model, optimizer, valid_batches)
    loop = AccelerateLoop(accelerator, config, strategy, model, optimizer, train_batches, valid_batches, work_dir,
                          label_names=list(data.labels.names))  # fmt: skip
    loop.scheduler = accelerator.prepare(build_scheduler(optimizer, train, loop.total_steps))
    loop.resume()
    accelerator.init_trackers("hftransfer", config=_tracker_config(config, strategy))

    loop.started = time.perf_counter()
    model.train()
    for epoch in range(loop.progress.epoch, loop.num_epochs):
        if loop.train_epoch(epoch):
            break
    return loop.finish()


def make_accelerator(train: TrainConfig, precision: str, work_dir: Path) -> Accelerator:
    # The process-wide state refuses a second mixed precision; a run in a process that trained before (research
    # code, benches, tests) starts from a clean one, as Trainer's arguments do. The distributed state is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(
        cpu=not torch.cuda.is_available(),  # as the Trainer loop; also makes a CPU-only `accelerate launch` use gloo
        mixed_precision="no" if precision == "fp32" else precision,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        step_scheduler_with_optimizer=False,  # the schedule is built per process and stepped once per update
        log_with=check_trackers(train.report_to, "accelerate"),
        project_config=ProjectConfiguration(project_dir=str(work_dir), logging_dir=str(work_dir / "logs")),
    )


def process_train_batches(accelerator: Accelerator, data: PreparedData, config: RunConfig, collator):
    """This process's training batches, on its device. They are already sharded (`train_loader`), so Accelerate
    only places them and marks the end of each epoch; its own sharding assumes the short batch comes last."""
    train = config.train
    loader = train_loader(
        data.train,
        config.data,
        train.batch_size,
        train.seed,
        collator,
        train.num_workers,
        num_processes=accelerator.num_processes,
        process_index=accelerator.process_index,
        accumulation=train.gradient_accumulation_steps,
    )
    return prepare_data_loader(
        loader, accelerator.device, num_processes=1, process_index=0, put_on_device=True, rng_types=[]
    )


@dataclass
class AccelerateLoop:
    accelerator: Accelerator
    config: RunConfig
    strategy: Strategy
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    train_batches: object
    valid_batches: object
    work_dir: Path
    scheduler: object = None
    progress: Progress = field(default_factory=Progress)
    started: float = 0.0
    samples: int = 0
    epoch_train_s: list[float] = field(default_factory=list)
    label_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        train = self.config.train
        # Steps, counted from this process's share of the batches, exactly as Trainer counts them.
        self.batches_per_epoch = len(self.train_batches)
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / train.gradient_accumulation_steps)
        self.total_steps = train.max_steps if train.max_steps > 0 else math.ceil(train.epochs * self.steps_per_epoch)
        self.num_epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        self.keep_best = train.load_best_at_end or train.early_stopping_patience is not None
        self.checkpoints = self.work_dir / CHECKPOINTS_DIR
        self.running_loss = torch.zeros((), device=self.accelerator.device)
        self.steps_since_log, self.grad_norm, self.learning_rate = 0, None, 0.0
        self.bar = None

    # --- set up and wind down ----------------------------------------------------------------------------------

    def resume(self) -> None:
        """Weights, optimizer, scheduler and every process's RNG from `train.resume_from`, and where it stopped."""
        train = self.config.train
        found = find_checkpoint(train.resume_from, self.checkpoints)
        if found is None:
            if train.resume_from is not None:
                logger.info("No checkpoint in %s yet; starting from the beginning", self.checkpoints)
            return
        accelerator = self.accelerator
        check_rng_state(
            found, "accelerate", accelerator.process_index, accelerator.num_processes, train.allow_inexact_resume
        )
        with quiet_accelerate_state_io():
            accelerator.load_state(str(found))
        self.progress = Progress.load(found)
        p = self.progress
        logger.info("Resuming from %s (step %d, epoch %d, batch %d)", found, p.global_step, p.epoch, p.batches_done)

    def finish(self) -> LoopResult:
        """Close the bar, keep the best weights when asked, write the log history and hand back the model."""
        if self.bar is not None:
            self.bar.close()
        self._restore_best()
        runtime = time.perf_counter() - self.started
        if self.accelerator.is_main_process:
            write_json(self.work_dir / LOG_HISTORY_FILE, self.progress.log_history)
        for tracker in self.accelerator.trackers:  # not end_training(): the process group is the launcher's, and
            tracker.finish()  # destroying it would fail the next run in this process (a script, compare, a notebook)
        history = self.progress.log_history
        return LoopResult(
            # keep_fp32_wrapper=False: prepare() wrapped forward in autocast; the final evaluation and the saved
            # model run in fp32 (a bf16/fp16 run's results.json otherwise scored autocast logits).
            model=trained_model(self.accelerator.unwrap_model(self.model, keep_fp32_wrapper=False)),
            train_runtime_s=runtime,
            train_samples=self.samples,
            global_steps=self.progress.global_step,
            losses=[entry["loss"] for entry in history if "loss" in entry],
            log_history=history,
            epoch_train_s=self.epoch_train_s,
        )

    def _restore_best(self) -> None:
        p, train = self.progress, self.config.train
        if not (self.keep_best and p.best_step is not None and p.best_step != p.global_step):
            return
        best = self.checkpoints / f"checkpoint-{p.best_step}"
        if not best.is_dir():
            logger.warning("The best checkpoint %s is gone; keeping the last weights", best)
            return
        logger.info("Restoring the best weights (%s=%.4f at step %d)", train.best_metric, p.best_value, p.best_step)
        with quiet_accelerate_state_io():
            self.accelerator.load_state(str(best))

    # --- an epoch -----------------------------------------------------------------------------------------------

    def train_epoch(self, epoch: int) -> bool:
        """One epoch from where the progress stands; True when training is over (last step or early stop)."""
        if self.bar is None:
            self.bar = progress(
                total=self.total_steps, initial=self.progress.global_step, desc="train", unit="step", leave=True
            )
        if self.progress.global_step >= self.total_steps:
            return True
        epoch_started = time.perf_counter()
        self.train_batches.set_epoch(epoch)  # Accelerate's loader keeps its own epoch counter...
        self.train_batches.batch_sampler.set_epoch(epoch)  # ...and our sampler draws the epoch from (seed, epoch)
        skip = self.progress.batches_done if epoch == self.progress.epoch else 0
        batches = self.accelerator.skip_first_batches(self.train_batches, skip) if skip else self.train_batches
        for index, batch in enumerate(batches, start=skip):
            if not self.step(index, batch):
                continue  # inside an accumulation group
            end_of_epoch = index + 1 == self.batches_per_epoch
            p = self.progress
            p.global_step += 1
            p.epoch, p.batches_done = (epoch + 1, 0) if end_of_epoch else (epoch, index + 1)
            if end_of_epoch:
                self.epoch_train_s.append(time.perf_counter() - epoch_started)
            last_step = p.global_step >= self.total_steps
            epoch_float = epoch + (index + 1) / self.batches_per_epoch
            self.log(epoch_float, last_step)
            improved, stop = self.evaluate(epoch_float, end_of_epoch, last_step)
            self.save(improved, last_step)
            if last_step or stop:
                return True
        return False

    def step(self, index: int, batch: dict) -> bool:
        """Forward and backward of one batch; the optimizer step at the end of its accumulation group (True then)."""
        accelerator, train = self.accelerator, self.config.train
        accumulation = train.gradient_accumulation_steps
        group_start = index - index % accumulation
        group_size = min(accumulation, self.batches_per_epoch - group_start)  # the last group may be short
        if index == group_start:
            self.strategy.on_step(trained_model(accelerator.unwrap_model(self.model)), self.progress.global_step,
                                  self.steps_per_epoch)  # fmt: skip
        self.samples += int(batch["labels"].shape[0]) * accelerator.num_processes
        with accelerator.accumulate(self.model):  # no gradient sync between processes until the group's last batch
            loss = weighted_loss(self.strategy, self.model, batch)
            # backward() divides by `accumulation`; a short last group must average over its own size.
            accelerator.backward(loss * (accumulation / group_size))
            if accelerator.sync_gradients:
                self.grad_norm = accelerator.clip_grad_norm_(self.model.parameters(), train.max_grad_norm or math.inf)
                self.learning_rate = self.scheduler.get_last_lr()[0]  # the rate this update uses
                self.optimizer.step()
                if not accelerator.optimizer_step_was_skipped:  # fp16 overflow: keep the schedule in place
                    self.scheduler.step()
                self.optimizer.zero_grad()
        self.running_loss += loss.detach() / group_size
        if accelerator.sync_gradients != (index + 1 == group_start + group_size):
            raise RuntimeError(f"Accumulation out of step at batch {index}; the checkpoint does not fit this run.")
        return accelerator.sync_gradients

    # --- after an optimizer step: log, evaluate, save -----------------------------------------------------------

    def log(self, epoch_float: float, last_step: bool) -> None:
        self.steps_since_log += 1
        self.bar.update(1)
        if self.progress.global_step % self.config.train.logging_steps and not last_step:
            return
        entry = {
            "loss": self.accelerator.reduce(self.running_loss, "mean").item() / self.steps_since_log,
            "grad_norm": float(self.grad_norm) if self.grad_norm is not None else None,
            "learning_rate": self.learning_rate,
            "samples_per_second": self.samples / max(time.perf_counter() - self.started, 1e-9),
            "epoch": epoch_float,
        }
        self._record(entry)
        self.bar.set_postfix(loss=f"{entry['loss']:.4f}", lr=f"{self.learning_rate:.2e}")
        self.running_loss.zero_()
        self.steps_since_log = 0

    def evaluate(self, epoch_float: float, end_of_epoch: bool, last_step: bool) -> tuple[bool, bool]:
        """Evaluate when due; (a new best `best_metric`, early stopping says stop)."""
        train, p = self.config.train, self.progress
        due = p.global_step % train.eval_steps == 0 if train.eval_steps else end_of_epoch
        if not (due or last_step):
            return False, False
        gather = self.accelerator.gather_for_metrics
        metrics = evaluate(self.strategy, self.model, self.valid_batches, self.label_names, gather)
        improved = p.record_eval(metrics.get(train.best_metric), train.greater_is_better)
        self._record({f"eval_{k}": v for k, v in metrics.items()} | {"epoch": epoch_float})
        patience = train.early_stopping_patience
        stop = patience is not None and p.evals_without_improvement >= patience
        if stop:
            logger.info("Early stopping at step %d: no better %s in %d evaluations", p.global_step, train.best_metric,
                        patience)  # fmt: skip
        return improved, stop

    def save(self, improved: bool, last_step: bool) -> None:
        """A checkpoint every `save_steps` (and at the end), and whenever the best model improves, if it is kept."""
        train, p = self.config.train, self.progress
        periodic = train.save_steps is not None and (p.global_step % train.save_steps == 0 or last_step)
        if periodic or (self.keep_best and improved):
            protect = {p.best_step} if self.keep_best and p.best_step is not None else set()
            save_checkpoint(self.accelerator, self.checkpoints, p, train.save_total_limit, protect)

    def _record(self, entry: dict) -> None:
        entry = {**entry, "step": self.progress.global_step}
        self.progress.log_history.append(entry)
        values = {k: v for k, v in entry.items() if v is not None and k != "step"}
        self.accelerator.log(values, step=self.progress.global_step)
        if self.accelerator.is_main_process:
            logger.info(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in entry.items()))


def save_checkpoint(accelerator: Accelerator, folder: Path, progress: Progress, keep: int, protect: set[int]) -> Path:
    """Write the full state under a temporary name, rename it into place, then drop old checkpoints."""
    staged = staging_name(folder, progress.global_step)
    if accelerator.is_main_process and staged.exists():
        shutil.rmtree(staged)
    accelerator.wait_for_everyone()
    with quiet_accelerate_state_io():
        accelerator.save_state(str(staged))  # every process writes its RNG state; the main one the rest
    accelerator.wait_for_everyone()
    final = folder / f"checkpoint-{progress.global_step}"
    if accelerator.is_main_process:
        progress.save(staged)
        publish_checkpoint(staged, folder, progress.global_step)
        pruned = prune_checkpoints(folder, keep, protect)
        logger.info("Saved %s%s", final.name, f" (removed {', '.join(p.name for p in pruned)})" if pruned else "")
    accelerator.wait_for_everyone()
    return final


@contextmanager
def quiet_accelerate_state_io() -> Iterator[None]:
    """Accelerate logs an INFO line per state file it saves or loads (five or more per checkpoint); the loop says
    what happened in one line of its own, so those are held back to warnings while a state is written or read."""
    loggers = [logging.getLogger(name) for name in ("accelerate.accelerator", "accelerate.checkpointing")]
    levels = [each.level for each in loggers]
    for each in loggers:
        each.setLevel(max(each.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for each, level in zip(loggers, levels, strict=True):
            each.setLevel(level)


def _tracker_config(config: RunConfig, strategy: Strategy) -> dict:
    """Flat hyperparameters for trackers (TensorBoard takes scalars and strings only)."""
    flat = {f"train.{k}": v for k, v in to_dict(config.train).items() if isinstance(v, (int, float, str, bool))}
    return {**flat, "strategy": strategy.name, "model": config.model.name_or_path}
