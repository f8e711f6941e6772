"""Training loops; each takes (config, model, strategy, data, collator, work_dir) and returns a LoopResult."""

from hftransfer.loops.common import LoopResult
from hftransfer.loops.trainer import run_trainer_loop

LOOPS = {"trainer": run_trainer_loop}

__all__ = ["LOOPS", "LoopResult", "run_trainer_loop"]
