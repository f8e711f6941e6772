"""Reuse a frozen backbone's outputs across epochs, so head-only training runs the backbone once per input.

Only what a classification head reads is kept per input: the first token's final state and the
pooled output (when the backbone produces one), i.e. two vectors of the hidden size. On a hit the
backbone is swapped for a stub that returns the cached output, so the head (whatever its family)
runs unchanged through the model's own `forward`.
"""

from __future__ import annotations

import torch
from torch import nn


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
        ids, mask, segments = inputs["input_ids"], inputs.get("attention_mask"), inputs.get("token_type_ids")
        keys = []
        for i in range(ids.shape[0]):
            keep = mask[i].bool() if mask is not None else torch.ones_like(ids[i], dtype=torch.bool)
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
