"""Training: the pipeline (`pipeline.train`), the optimizer and schedule, precision, checkpoints, and the two
loops (`loops.trainer`, `loops.accelerate`) that take identical steps through the strategy interface."""
