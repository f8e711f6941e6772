"""Smaller students cut from a bigger encoder: keep a subset of its blocks (DistilBERT-style).

Embeddings, pooler and classification head are kept as they are, so a student cut from a
fine-tuned teacher starts from the teacher's head and the chosen blocks' weights.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from hftransfer.errors import UserError

# Where encoder blocks live, relative to `model.base_model`, across the common encoder families.
_BLOCK_PATHS = ("encoder.layer", "transformer.layer", "encoder.layers", "layers", "layer", "h")


class StudentError(UserError):
    """A student specification that does not fit the model."""


def encoder_blocks(model: nn.Module) -> tuple[nn.Module, str, nn.ModuleList]:
    """(owner module, attribute name, block list) of the model's stack of transformer blocks."""
    from hftransfer.models.layers import LAYOUTS  # the frozen strategy's per-architecture layer registry

    model_type = getattr(getattr(model, "config", None), "model_type", "")
    if model_type == "albert":
        raise StudentError("ALBERT shares one set of weights across its layers; there are no blocks to keep or drop.")
    layout = LAYOUTS.get(model_type)
    base = getattr(model, "base_model", model)
    for path in ((layout.blocks,) if layout else ()) + _BLOCK_PATHS:
        owner: nn.Module | None = base
        *parents, leaf = path.split(".")
        for part in parents:
            owner = getattr(owner, part, None)
        blocks = getattr(owner, leaf, None) if owner is not None else None
        if isinstance(blocks, nn.ModuleList) and len(blocks) > 0:
            return owner, leaf, blocks
    raise StudentError(
        f"Cannot find the transformer blocks of a {type(model).__name__} (looked for {', '.join(_BLOCK_PATHS)} "
        "under the base model). Use strategy.distill.student_layers with BERT/RoBERTa/DistilBERT/ELECTRA/DeBERTa-like "
        "encoders, or give a ready smaller student as model.name_or_path."
    )


def check_layers(keep: Sequence[int], num_blocks: int) -> list[int]:
    keep = list(keep)
    if not keep:
        raise StudentError("strategy.distill.student_layers is empty; list the teacher blocks to keep, e.g. [0, 2, 4].")
    if any(i < 0 or i >= num_blocks for i in keep):
        raise StudentError(
            f"strategy.distill.student_layers {keep} is out of range: the model has {num_blocks} blocks "
            f"(0..{num_blocks - 1})."
        )
    if keep != sorted(set(keep)):
        raise StudentError(f"strategy.distill.student_layers {keep} must be increasing, without repeats.")
    return keep


def keep_layers(model: nn.Module, keep: Sequence[int]) -> nn.Module:
    """Drop every block not in `keep` (in place) and make the config describe the smaller model."""
    owner, attribute, blocks = encoder_blocks(model)
    keep = check_layers(keep, len(blocks))
    kept = nn.ModuleList([blocks[i] for i in keep])
    for new_index, block in enumerate(kept):
        for module in block.modules():  # attention caches index layers by position
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index
    setattr(owner, attribute, kept)
    config = model.config
    config.num_hidden_layers = len(keep)  # `attribute_map` redirects this for DistilBERT (`n_layers`)
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) == len(blocks):
        config.layer_types = [layer_types[i] for i in keep]
    return model
