"""Settings of full fine-tuning (none beyond the optimizer settings in `train`)."""

from dataclasses import dataclass


@dataclass
class FullConfig:
    """Full fine-tuning has no knobs beyond the optimizer settings in `train`."""
