"""Reuse a frozen backbone's outputs across epochs, so head-only training runs the backbone once per input.

Only what a classification head reads is kept per input: the first token's final state and the
pooled output (when the backbone produces one), i.e. two vectors of the hidden size. On a hit the
backbone is swapped for a stub that returns the cached output, so the head (whatever its family)
runs unchanged through the model's own `forward`.
"""

from __future__ import annotations

import torch
from torch import nn


def token_mask(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Which positions hold real tokens (all of them when the batch has no attention mask)."""
    mask = inputs.get("attention_mask")
    return mask.bool() if mask is not None else torch.ones_like(inputs["input_ids"], dtype=torch.bool)


class _CachedBackbone(nn.Module):
    def __init__(self, output) -> None:
        super().__init__()
        self.output = output

    def forward(self, *args, **kwargs):
        return self.output


class FeatureCache:
    """Backbone outputs keyed by the unpadded input ids (and segment ids) of each row."""

    def __init__(self, model: nn.Module) -> None:
        self.prefix: str = model.base_model_prefix
        self.store: dict[bytes, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self.output_type: type | None = None
        self.backbone_batches = 0
        """Batches that had to run the backbone (for tests and logs)."""

    @staticmethod
    def row_keys(inputs: dict[str, torch.Tensor]) -> list[bytes]:
        ids, mask, segments = inputs["input_ids"], token_mask(inputs), inputs.get("token_type_ids")
        keys = []
        for i in range(ids.shape[0]):
            keep = mask[i]
            offset = int(keep.float().argmax())  # left padding shifts positions, so it is part of the key
            parts = [torch.tensor([offset]), ids[i][keep].cpu()]
            if segments is not None:
                parts.append(segments[i][keep].cpu())
            keys.append(b"|".join(p.numpy().tobytes() for p in parts))
        return keys

    def _fill(self, backbone: nn.Module, inputs: dict[str, torch.Tensor], keys: list[bytes]) -> None:
        was_training = backbone.training
        backbone.eval()
        try:
            with torch.no_grad():
                out = backbone(**inputs)
        finally:
            backbone.train(was_training)
        self.output_type = type(out)
        self.backbone_batches += 1
        first = out.last_hidden_state[:, 0].detach()
        pooled = getattr(out, "pooler_output", None)
        for i, key in enumerate(keys):
            self.store[key] = (first[i], pooled[i].detach() if pooled is not None else None)

    def logits(self, model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        if "input_ids" not in inputs:  # not a text batch: nothing to key on
            return model(**inputs).logits
        keys = self.row_keys(inputs)
        backbone = getattr(model, self.prefix)
        if any(k not in self.store for k in keys):
            self._fill(backbone, inputs, keys)
        first = torch.stack([self.store[k][0] for k in keys])
        fields = {"last_hidden_state": first.unsqueeze(1)}
        if self.store[keys[0]][1] is not None:
            fields["pooler_output"] = torch.stack([self.store[k][1] for k in keys])
        model._modules[self.prefix] = _CachedBackbone(self.output_type(**fields))
        try:
            return model(**inputs).logits
        finally:
            model._modules[self.prefix] = backbone


class _Passthrough(nn.Module):
    """Stands in for a frozen block on a cache hit: its output is already in the hidden states."""

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


class _CachedEmbeddings(nn.Module):
    def __init__(self, hidden_states: torch.Tensor) -> None:
        super().__init__()
        self.hidden_states = hidden_states

    def forward(self, *args, **kwargs):
        return self.hidden_states


class FrozenPrefixCache:
    """Token states after the last frozen block, per row, so later epochs run only the trainable top blocks.

    Frozen modules run in eval mode (no dropout), so their output depends on the input alone. On a hit
    the embeddings return the cached states (re-padded to the batch) and the frozen blocks pass them
    through; the rest of the model's own `forward` (attention mask, top blocks, head) runs unchanged.
    Needs a layout whose input embeddings are one `embeddings` module ahead of the blocks and blocks that
    return a tensor (BERT-family in transformers 5); anything else disables the cache on its first batch.
    """

    def __init__(self, model: nn.Module, frozen_blocks: list[nn.Module]) -> None:
        self.backbone = getattr(model, model.base_model_prefix)
        self.frozen_blocks = frozen_blocks
        self.block_list = self._find_block_list()
        """The backbone's `ModuleList` holding the blocks, whose first entries are swapped on a hit."""
        self.store: dict[bytes, torch.Tensor] = {}
        self.enabled = True
        self.backbone_batches = 0
        """Batches that ran the frozen prefix (for tests and logs)."""

    def logits(self, model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        if not self.enabled or "input_ids" not in inputs:
            return model(**inputs).logits
        keys = FeatureCache.row_keys(inputs)
        if all(k in self.store for k in keys):
            return self._from_cache(model, inputs, keys)
        return self._fill(model, inputs, keys)

    def _fill(self, model: nn.Module, inputs: dict[str, torch.Tensor], keys: list[bytes]) -> torch.Tensor:
        captured: list = []
        handle = self.frozen_blocks[-1].register_forward_hook(lambda _m, _a, out: captured.append(out))
        try:
            logits = model(**inputs).logits
        finally:
            handle.remove()
        self.backbone_batches += 1
        if not captured or not isinstance(captured[0], torch.Tensor):
            self.enabled = False  # a block family that returns tuples: run the plain model from now on
            return logits
        states, mask = captured[0].detach(), token_mask(inputs)
        for i, key in enumerate(keys):
            self.store[key] = states[i][mask[i]].clone()
        return logits

    def _from_cache(self, model: nn.Module, inputs: dict[str, torch.Tensor], keys: list[bytes]) -> torch.Tensor:
        mask = token_mask(inputs)
        rows = [self.store[k] for k in keys]
        states = rows[0].new_zeros((*mask.shape, rows[0].shape[-1]))
        for i, row in enumerate(rows):
            states[i][mask[i]] = row
        modules = self.backbone._modules
        original_embeddings = modules["embeddings"]
        modules["embeddings"] = _CachedEmbeddings(states)
        for i in range(len(self.frozen_blocks)):
            self.block_list[i] = _Passthrough()
        try:
            return model(**inputs).logits
        finally:
            modules["embeddings"] = original_embeddings
            for i, block in enumerate(self.frozen_blocks):
                self.block_list[i] = block

    def _find_block_list(self) -> nn.ModuleList:
        for module in self.backbone.modules():
            if isinstance(module, nn.ModuleList) and len(module) and module[0] is self.frozen_blocks[0]:
                return module
        raise RuntimeError("The frozen blocks are not in the backbone's block list.")
