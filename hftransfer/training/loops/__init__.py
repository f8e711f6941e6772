"""Training loops; each takes (config, model, strategy, data, collator, work_dir) and returns a LoopResult."""

from hftransfer.training.loops.accelerate import run_accelerate_loop
from hftransfer.training.loops.common import LoopResult
from hftransfer.training.loops.trainer import run_trainer_loop

LOOPS = {"trainer": run_trainer_loop, "accelerate": run_accelerate_loop}

__all__ = ["LOOPS", "LoopResult", "run_accelerate_loop", "run_trainer_loop"]
