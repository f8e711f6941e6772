"""What the commands show a person at the terminal: progress bars where they wait, and spreads over seeds.

One helper for every bar (feature extraction, teacher logits, evaluate/predict, the ONNX check, compare's runs,
the Accelerate loop), so they all follow the same rules: a bar only in a terminal, only on the main process of
a distributed run, not when the hftransfer logger is set above info (`-q`), and only for inputs of more than a
few steps; even then it appears only once the wait passes a second (tqdm's `delay`).
"""

from __future__ import annotations

import logging
import os
import statistics
import sys
from collections.abc import Iterable, Sequence
from typing import Any

MIN_STEPS = 4
"""A bar for more steps than this (batches, runs); fewer finish before a bar would tell anything."""
DELAY_S = 1.0
_RANK_VARIABLES = ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "LOCAL_RANK")


def is_main_process() -> bool:
    """False on the other processes of `accelerate launch` / torchrun / MPI (read from their environment)."""
    for name in _RANK_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value) == 0
    return True


def progress_enabled(total: int | None, min_steps: int = MIN_STEPS) -> bool:
    """Whether a bar over `total` steps should show here and now (the rules in the module docstring)."""
    if total is not None and total <= min_steps:
        return False
    level = logging.getLogger("hftransfer").level  # set by the CLI (-q) or the caller; unset in library use
    if level > logging.INFO:
        return False
    stream = sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)()) and is_main_process()


def progress(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str | None = None,
    unit: str = "batch",
    min_steps: int = MIN_STEPS,
    **options: Any,
):
    """A tqdm bar over `iterable` (or a manual one of `total` steps) that is disabled unless `progress_enabled`."""
    from tqdm.auto import tqdm

    if total is None and iterable is not None:
        total = len(iterable) if hasattr(iterable, "__len__") else None
    enabled = progress_enabled(total, min_steps)
    options = {"delay": DELAY_S, "leave": False, "dynamic_ncols": True, **options}
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not enabled, **options)


def mean_sd(values: Sequence[float], digits: int = 4) -> str:
    """`mean ± sd` (sample standard deviation) over two or more values; one value alone, with no spread to show."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f} (1 seed)"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"
