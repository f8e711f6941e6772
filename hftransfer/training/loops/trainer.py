"""The Hugging Face `Trainer` loop, driven through the strategy interface."""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from accelerate.data_loader import prepare_data_loader
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback
from transformers.trainer_utils import speed_metrics

from hftransfer.artifacts.layout import CHECKPOINTS_DIR
from hftransfer.config.recipe import RunConfig
from hftransfer.data import PreparedData
from hftransfer.data.loaders import eval_loader, train_loader
from hftransfer.errors import UserError
from hftransfer.strategies.base import Strategy
from hftransfer.training.checkpoints import check_rng_state, find_checkpoint
from hftransfer.training.loops.common import (
    CHECKPOINTING_ARGS,
    LoopResult,
    WithTrainableModules,
    enable_activation_checkpointing,
    evaluate,
    trained_model,
    weighted_loss,
    with_trainable_modules,
)
from hftransfer.training.optim import build_optimizer
from hftransfer.training.runtime import resolve_precision

logger = logging.getLogger("hftransfer")


class _LogLines(TrainerCallback):
    """Loss/eval log lines on stderr (Trainer's PrinterCallback prints to stdout, which JSON output owns)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            logger.info(
                "step %d: %s",
                state.global_step,
                {k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in logs.items()},  # lr 4.6e-05, not 0.0
            )


class StrategyTrainer(Trainer):
    """`Trainer` whose loss, per-step hooks, optimizer groups and batches come from the strategy.

    The documented way to train a strategy inside a hand-written `Trainer` setup: pass the model the strategy
    prepared and `strategy=`; everything else is `Trainer`'s. A plain `Trainer` would skip the strategy's loss and
    hooks, so a strategy that needs them (distillation, gradual unfreezing) refuses to train there.
    `run_config` (the recipe, for batching and resume settings) and `label_names` default sensibly.
    """

    loss_is_scaled_for_ga = False  # strategies return a per-batch mean; Trainer divides by accumulation

    def __init__(
        self,
        model=None,
        *args,
        strategy: Strategy,
        run_config: RunConfig | None = None,
        label_names: list[str] | None = None,
        **kwargs,
    ) -> None:
        if model is not None and not isinstance(model, WithTrainableModules):
            model = with_trainable_modules(model, strategy)  # extra modules train, clip and checkpoint with it
        super().__init__(model, *args, **kwargs)
        self.strategy = strategy
        self.run_config = run_config or RunConfig()
        names = getattr(trained_model(self.model).config, "id2label", None) or {}
        self.label_names_ = label_names or [names[i] for i in sorted(names)]
        self.train_samples_seen = 0
        self.add_callback(_StrategySteps(strategy))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if return_outputs:  # not reached by training or `evaluate` (both below); kept for Trainer's other callers
            loss, logits = self.strategy.loss(model, inputs)
            return loss, {"logits": logits}
        if model.training:
            self.train_samples_seen += int(inputs["labels"].shape[0])
        return weighted_loss(self.strategy, model, inputs)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """The loops' one evaluation (task loss and metrics over every process's rows), logged as Trainer does."""
        loader = self.get_eval_dataloader(eval_dataset)
        started = time.time()
        metrics = evaluate(self.strategy, self.model, loader, self.label_names_, self.accelerator.gather_for_metrics)
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in metrics.items()}
        rows = metrics[f"{metric_key_prefix}_num_samples"]
        metrics |= speed_metrics(metric_key_prefix, started, num_samples=rows, num_steps=len(loader))
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def _load_rng_state(self, checkpoint):
        if checkpoint is not None:
            allow_inexact, args = self.run_config.train.allow_inexact_resume, self.args
            if not check_rng_state(Path(checkpoint), "trainer", args.process_index, args.world_size, allow_inexact):
                return  # unusable and allowed to go on: the Trainer would fail or half-restore it
        super()._load_rng_state(checkpoint)

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            self.optimizer = build_optimizer(self.strategy, model or self.model, self.run_config.train)
        return self.optimizer

    def get_train_dataloader(self) -> torch.utils.data.DataLoader:
        """The batches of the Accelerate loop; under several processes already sharded (every row once), so
        Accelerate only places them (its own sharding assumes the short batch comes last)."""
        world = self.args.world_size
        loader = train_loader(
            self.train_dataset,
            self.run_config.data,
            self.args.per_device_train_batch_size,
            self.args.seed,
            self.data_collator,
            self.args.dataloader_num_workers,
            num_processes=world,
            process_index=self.args.process_index,
            accumulation=self.args.gradient_accumulation_steps,
        )
        if world == 1:
            return self.accelerator.prepare(loader)
        return prepare_data_loader(loader, self.args.device, num_processes=1, process_index=0, put_on_device=True,
                                   rng_types=[])  # fmt: skip

    def get_eval_dataloader(self, eval_dataset=None) -> torch.utils.data.DataLoader:
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        loader = eval_loader(dataset, self.data_collator, self.args.per_device_eval_batch_size)
        return self.accelerator.prepare(loader)


class _StrategySteps(TrainerCallback):
    def __init__(self, strategy: Strategy) -> None:
        self.strategy, self.steps_per_epoch = strategy, 1

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        # Optimizer steps per epoch, the unit `on_step` counts in (the last accumulation group may be short).
        self.steps_per_epoch = math.ceil(len(train_dataloader) / args.gradient_accumulation_steps)

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        self.strategy.on_step(trained_model(model), state.global_step, self.steps_per_epoch)


class _EpochTimer(TrainerCallback):
    """`on_epoch_end` runs before the epoch's evaluation, so the times are training steps only."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._started = 0.0

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._started = time.perf_counter()

    def on_epoch_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._started)


def training_arguments(config: RunConfig, work_dir: Path) -> TrainingArguments:
    train = config.train
    precision = resolve_precision(train.precision)
    evaluate_by_steps = train.eval_steps is not None
    keep_best = train.load_best_at_end or train.early_stopping_patience is not None
    if keep_best and train.save_steps and (not evaluate_by_steps or train.save_steps % train.eval_steps):
        raise UserError(
            "train.loop=trainer can keep the best checkpoint alongside periodic ones only when train.save_steps is "
            "a multiple of train.eval_steps. Set them so, leave train.save_steps empty, or use train.loop=accelerate."
        )
    # `train.trainer_args`, checked with the recipe; label smoothing reaches the loss through the strategy too.
    passed_through = {k: v for k, v in train.trainer_args.items() if k not in (*CHECKPOINTING_ARGS, "disable_tqdm")}
    return TrainingArguments(
        output_dir=str(work_dir / "checkpoints"),
        num_train_epochs=train.epochs,
        max_steps=train.max_steps,
        per_device_train_batch_size=train.batch_size,
        per_device_eval_batch_size=train.eval_batch_size,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        learning_rate=train.learning_rate,
        weight_decay=train.weight_decay,
        warmup_steps=train.warmup_ratio,
        lr_scheduler_type=train.lr_scheduler,
        max_grad_norm=train.max_grad_norm,
        seed=train.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        eval_strategy="steps" if evaluate_by_steps else "epoch",
        eval_steps=train.eval_steps,
        save_strategy="steps" if train.save_steps else ("best" if keep_best else "no"),
        save_steps=train.save_steps or 500,
        save_total_limit=train.save_total_limit,
        load_best_model_at_end=keep_best,
        metric_for_best_model=train.best_metric,
        greater_is_better=train.greater_is_better,
        logging_steps=train.logging_steps,
        report_to=train.report_to or "none",
        dataloader_num_workers=train.num_workers,
        remove_unused_columns=False,
        label_names=["labels"],
        # bars in a terminal; loss/eval log lines everywhere
        disable_tqdm=train.trainer_args.get("disable_tqdm", not sys.stderr.isatty()),
        **passed_through,
    )


def run_trainer_loop(
    config: RunConfig,
    model,
    strategy: Strategy,
    data: PreparedData,
    collator,
    work_dir: Path,
    callbacks: Sequence[TrainerCallback] = (),
):
    """Train with `Trainer`; extra `callbacks` (e.g. bench/throughput.py's timer) see every step."""
    enable_activation_checkpointing(model, config.train.trainer_args)
    trainer = StrategyTrainer(
        model=model,
        args=training_arguments(config, work_dir),
        train_dataset=data.train,
        eval_dataset=data.validation,
        data_collator=collator,
        strategy=strategy,
        run_config=config,
        label_names=list(data.labels.names),
        callbacks=list(callbacks) or None,
    )
    epoch_timer = _EpochTimer()
    trainer.add_callback(epoch_timer)
    if trainer.args.disable_tqdm:
        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(_LogLines())
    if config.train.early_stopping_patience is not None:
        trainer.add_callback(EarlyStoppingCallback(early_stopping_patience=config.train.early_stopping_patience))
    # Trainer writes trainer_state.json last, so a checkpoint holding it is complete.
    resume = find_checkpoint(config.train.resume_from, work_dir / CHECKPOINTS_DIR, marker="trainer_state.json")
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    runtime = time.perf_counter() - started
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return LoopResult(
        # Without the autocast forward the Trainer's accelerator put on it: the final evaluation runs in fp32.
        model=trained_model(trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)),
        train_runtime_s=runtime,
        train_samples=trainer.train_samples_seen,
        global_steps=trainer.state.global_step,
        losses=losses,
        log_history=trainer.state.log_history,
        epoch_train_s=epoch_timer.times,
    )
