"""Where and in which precision a run computes, resolved once for both loops and the strategy."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from hftransfer.config.recipe import TrainConfig
from hftransfer.errors import UserError
from hftransfer.strategies.base import Runtime


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls run in hardware (oneDNN), not emulated, so autocast pays off."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, check, lambda: False)() for check in checks)


def resolve_precision(requested: str) -> str:
    """`bf16`, `fp16` or `fp32`. `auto`: bf16 on GPUs that support it, fp16 on other GPUs, bf16 autocast on CPUs
    with native bf16 (~1.5x faster steps on MiniLM, same dev accuracy: bench/README.md), fp32 on other CPUs."""
    if requested != "auto":
        if requested == "fp16" and not torch.cuda.is_available():
            raise UserError("train.precision=fp16 needs a GPU; use bf16 or fp32 on CPU.")
        return requested
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def check_trackers(names: list[str], loop: str) -> list[str] | None:
    """`train.report_to`, checked before any model loads: a name the loop's tracker list lacks, or whose package
    is not installed, is a UserError. Returns the names for Accelerate (None: no tracker)."""
    if loop == "accelerate":
        from accelerate.utils import LoggerType, imports

        valid = [t.value for t in LoggerType]
        installed = [n for n in valid if getattr(imports, f"is_{n}_available", lambda: True)()]
    else:
        from transformers.integrations import get_available_reporting_integrations
        from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

        valid = [*INTEGRATION_TO_CALLBACK, "all", "none"]
        installed = [*get_available_reporting_integrations(), "all", "none"]
    for name in names:
        if name not in valid:
            raise UserError(f"train.report_to '{name}' is not a tracker the {loop} loop supports; choose from {valid}.")
        if name not in installed:
            raise UserError(f"train.report_to names '{name}', which is not installed: pip install {name}")
    return list(names) or None


def check_train_setup(train: TrainConfig) -> None:
    """What the recipe alone shows this machine cannot run (fp16 without a GPU, a tracker that is not installed),
    found before any data or model loads."""
    resolve_precision(train.precision)
    check_trackers(train.report_to, train.loop)


def autocast_dtype(precision: str) -> torch.dtype | None:
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


def process_state():
    """This process's place in the run (`accelerate launch` sets it up; else one process), on the CPU without CUDA,
    so a CPU-only launch uses gloo."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


@contextmanager
def reported_by_main_process() -> Iterator[None]:
    """Under `accelerate launch` only the main process reports what loading data and models says (transformers'
    weight-loading report, its progress bars); the other processes load quietly, errors aside."""
    if process_state().is_main_process:
        yield
        return
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def resolve_runtime(train: TrainConfig) -> Runtime:
    """Where this process trains (the distributed state `accelerate launch` set up, else one device) and in which
    precision: what the loops run and what a strategy is told (`Strategy.bind`)."""
    state = process_state()
    return Runtime(
        device=state.device,
        world_size=state.num_processes,
        precision=resolve_precision(train.precision),
        label_smoothing=float(train.trainer_args.get("label_smoothing_factor", 0.0)),
    )
