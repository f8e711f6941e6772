"""Find a backbone's layer groups (embeddings, blocks bottom to top, head) by architecture.

Freezing "the first N blocks" and per-block learning rates need to know where the blocks are.
That differs per family, so a small table maps `config.model_type` to module paths under the
backbone (`model.base_model`); a new family (e.g. ResNet stages for images) is one `register_layout` call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from hftransfer.errors import UserError


class LayerGroupError(UserError):
    """The model's architecture has no known layer layout."""


@dataclass(frozen=True)
class LayerLayout:
    embeddings: tuple[str, ...]
    """Module paths under the backbone that make up the input embeddings (frozen with the bottom)."""
    blocks: str
    """Path under the backbone of the `ModuleList` of blocks, ordered bottom to top."""


_BERT_LIKE = LayerLayout(embeddings=("embeddings",), blocks="encoder.layer")

LAYOUTS: dict[str, LayerLayout] = {
    "bert": _BERT_LIKE,
    "roberta": _BERT_LIKE,
    "xlm-roberta": _BERT_LIKE,
    "camembert": _BERT_LIKE,
    "electra": _BERT_LIKE,
    "distilbert": LayerLayout(embeddings=("embeddings",), blocks="transformer.layer"),
    # ALBERT shares weights across layers: its "blocks" are the (usually single) shared layer groups.
    "albert": LayerLayout(
        embeddings=("embeddings", "encoder.embedding_hidden_mapping_in"), blocks="encoder.albert_layer_groups"
    ),
    "deberta": LayerLayout(embeddings=("embeddings", "encoder.rel_embeddings"), blocks="encoder.layer"),
    "deberta-v2": LayerLayout(
        embeddings=("embeddings", "encoder.rel_embeddings", "encoder.LayerNorm"), blocks="encoder.layer"
    ),
    # Vision: the stem plays the embeddings' part, stages (ResNet, ConvNeXt) or layers (ViT) are the blocks.
    "resnet": LayerLayout(embeddings=("embedder",), blocks="encoder.stages"),
    "convnext": LayerLayout(embeddings=("embeddings",), blocks="encoder.stages"),
    "vit": _BERT_LIKE,
}


def register_layout(model_type: str, layout: LayerLayout) -> None:
    """Teach the layer lookup a new architecture (keyed by `config.model_type`)."""
    LAYOUTS[model_type] = layout


@dataclass
class LayerGroups:
    """The model cut into embeddings, blocks (bottom to top) and the rest (the head)."""

    embeddings: list[nn.Module]
    blocks: list[nn.Module]
    head: list[nn.Parameter] = field(default_factory=list)
    """Parameters outside embeddings and blocks: classifier, and the pooler where the backbone has one."""

    def depths(self) -> dict[int, int]:
        """`id(param)` -> depth counted down from the head: head 0, top block 1, ..., embeddings L+1."""
        depth = {id(p): 0 for p in self.head}
        for i, block in enumerate(self.blocks):
            depth.update({id(p): len(self.blocks) - i for p in block.parameters()})
        for module in self.embeddings:
            depth.update({id(p): len(self.blocks) + 1 for p in module.parameters()})
        return depth


def _get(root: nn.Module, path: str) -> nn.Module | None:
    node: nn.Module | None = root
    for part in path.split("."):
        node = getattr(node, part, None)
        if node is None:
            return None
    return node


def find_layer_groups(model: nn.Module) -> LayerGroups:
    """The layer groups of a Hugging Face model, or a `LayerGroupError` naming its architecture."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    from hftransfer.models.timm import is_timm_wrapper, timm_layer_groups

    if is_timm_wrapper(model):  # layout by the wrapped timm class, not by model_type (always `timm_wrapper`)
        try:
            stem, stages = timm_layer_groups(model)
        except LookupError as err:
            raise LayerGroupError(
                f"The frozen strategy does not know the stages of timm's {type(model.timm_model).__name__} "
                "(it knows ResNet, EfficientNet/MobileNet and stem+stages layouts); use strategy.name=full or lora."
            ) from err
        grouped = {id(p) for m in [*stem, *stages] for p in m.parameters()}
        return LayerGroups(stem, stages, [p for p in model.parameters() if id(p) not in grouped])
    layout = LAYOUTS.get(model_type or "")
    if layout is None:
        raise LayerGroupError(
            f"The frozen strategy does not know the layers of '{model_type}' models ({type(model).__name__}); "
            f"it knows {sorted(LAYOUTS)}. Use strategy.name=full or strategy.name=lora, or add the layout with "
            "hftransfer.models.layers.register_layout()."
        )
    backbone = getattr(model, "base_model", model)
    embeddings = [_get(backbone, path) for path in layout.embeddings]
    blocks = _get(backbone, layout.blocks)
    if any(m is None for m in embeddings) or not isinstance(blocks, nn.ModuleList):
        raise LayerGroupError(
            f"'{model_type}' model {type(model).__name__} does not have the expected modules "
            f"{[*layout.embeddings, layout.blocks]}; its layout entry in hftransfer.models.layers is out of date."
        )
    grouped = {id(p) for m in [*embeddings, *blocks] for p in m.parameters()}
    head = [p for p in model.parameters() if id(p) not in grouped]
    return LayerGroups(embeddings=embeddings, blocks=list(blocks), head=head)
