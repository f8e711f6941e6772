"""The joint cross-domain objective as a strategy wrapper: min L_s + λ·L_t + Ω(θ) (+ DANN's domain loss).

`DomainObjective` delegates to the run's strategy (full, frozen, LoRA, distillation) and adds its terms in `loss`;
its extra modules (a source head, the domain classifier) reach the loops through `trainable_modules`, so they are
prepared, synchronised, clipped and checkpointed with the model, and dropped when the model is saved. The second
streams (labelled target rows next to a source, unlabelled target rows for DANN) are drawn every micro-step as a
pure function of (seed, optimizer step, micro-step, process): a resumed run draws what an uninterrupted one drew,
and P processes draw what one process accumulating P times as many micro-batches draws.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from hftransfer.config.recipe import DomainConfig, TrainConfig
from hftransfer.domains.data import ROW_WEIGHT, DomainData
from hftransfer.domains.layers import DomainClassifier, FeatureTap, classifier_head, dann_weight, l2sp_penalty
from hftransfer.strategies.base import Runtime, Strategy

if TYPE_CHECKING:
    from hftransfer.config.recipe import RunConfig
    from hftransfer.data import PreparedData

_STREAMS = {"target": 1, "unlabelled": 2}


def head_width(head: nn.Module) -> int:
    """The width of the pooled features a head reads (its first linear layer's input)."""
    first = next((m for m in head.modules() if isinstance(m, nn.Linear)), None)
    if first is None:
        raise ValueError(f"The classifier head {type(head).__name__} has no linear layer to read its width from.")
    return first.in_features


def draw_seed(seed: int, stream: int, step: int, key: int) -> int:
    """A generator seed from (run seed, stream, optimizer step, micro-step key); no state to checkpoint."""
    return (seed * 1_000_003 + stream * 999_983 + step * 65_537 + key * 257) % (2**63 - 1)


class DomainObjective(Strategy):
    """Wraps `inner` (any strategy) with the cross-domain terms `domain` switches on (see `DomainConfig`).

    Research code: `DomainObjective(FullFineTuning(), DomainConfig(l2sp_alpha=0.01))` is L2-SP on a plain run;
    the streams need `extra` (from `prepare_domain_data`) and the task's `collator`.
    """

    name = "domain"

    def __init__(
        self,
        inner: Strategy,
        domain: DomainConfig,
        extra: DomainData | None = None,
        collator: Callable | None = None,
        train: TrainConfig | None = None,
    ) -> None:
        super().__init__(inner.config)
        self.inner, self.domain, self.extra = inner, domain, extra or DomainData()
        # Results, cards and compare look the run up by the inner strategy's name and read its class hooks.
        self.name, self.summary, self.saves_adapter = inner.name, inner.summary, inner.saves_adapter
        self.collator, self.train = collator, train or TrainConfig()
        self.step, self.micro, self.total_steps, self.rank = 0, 0, 1, 0
        self.tap: FeatureTap | None = None
        self.source_head: nn.Module | None = None
        self.domain_classifier: DomainClassifier | None = None
        self.start: list[tuple[nn.Parameter, torch.Tensor]] = []
        self.new: list[nn.Parameter] = []
        if (self.extra.target_train is not None or self.extra.unlabelled is not None) and collator is None:
            raise ValueError("DomainObjective draws extra batches: pass the task's collator.")

    def __getattr__(self, name: str) -> Any:  # the inner strategy's own attributes (e.g. a teacher, a cache)
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def bind(self, runtime: Runtime) -> None:
        super().bind(runtime)
        self.inner.bind(runtime)
        from accelerate import PartialState

        self.rank = PartialState().process_index

    # --- set up -----------------------------------------------------------------------------------------------

    def prepare(self, model: nn.Module) -> nn.Module:
        model = self.inner.prepare(model)
        d = self.domain
        head = classifier_head(model)
        if self.extra.source_labels is not None or d.adversarial_weight > 0:
            self.tap = FeatureTap(head)
            width = head_width(head)
            if self.extra.source_labels is not None:
                self.source_head = nn.Linear(width, self.extra.source_labels.num_labels)
            if d.adversarial_weight > 0:
                self.domain_classifier = DomainClassifier(width)
        if d.l2sp_alpha or d.l2sp_beta:
            self._snapshot(model, head)
        return model

    def _snapshot(self, model: nn.Module, head: nn.Module) -> None:
        """θ⁰ of the pretrained weights; the head, adapters and a source head are the new weights."""
        in_head = {id(p) for p in head.parameters()}
        for name, param in model.named_parameters():
            if id(param) in in_head or "lora_" in name:
                self.new.append(param)
            else:
                self.start.append((param, param.detach().clone()))
        if self.source_head is not None:
            self.new.extend(self.source_head.parameters())

    def prepare_data(self, model: nn.Module, data: PreparedData, processor: Any, config: RunConfig) -> PreparedData:
        data = self.inner.prepare_data(model, data, processor, config)
        if self.domain.reweight:
            from hftransfer.domains.reweight import reweight_rows

            data = reweight_rows(model, data, self.extra.unlabelled, self.collator, self.domain, config.train)
        return data

    def trainable_modules(self) -> dict[str, nn.Module]:
        own = {"domain_source_head": self.source_head, "domain_classifier": self.domain_classifier}
        return {**self.inner.trainable_modules(), **{k: m for k, m in own.items() if m is not None}}

    def parameter_groups(self, model: nn.Module, learning_rate: float, weight_decay: float) -> list[dict]:
        """The inner strategy's groups, with the domain classifier at `domain.adversary_learning_rate`. The loops
        hand in the model wrapped with these modules, so their weights can already sit in the inner groups."""
        own = {self.source_head: learning_rate, self.domain_classifier: self.domain.adversary_learning_rate}
        rates = {id(p): rate or learning_rate for m, rate in own.items() if m is not None for p in m.parameters()}
        groups = []
        for group in self.inner.parameter_groups(model, learning_rate, weight_decay):
            by_rate: dict[float, list] = {}
            for param in group["params"]:
                by_rate.setdefault(rates.pop(id(param), group["lr"]), []).append(param)
            groups += [{**group, "params": params, "lr": rate} for rate, params in by_rate.items()]
        left: dict[float, list] = {}  # weights outside the model handed in (research code's bare model)
        for module in (m for m in own if m is not None):
            for param in module.parameters():
                if param.requires_grad and id(param) in rates:
                    left.setdefault(rates[id(param)], []).append(param)
        return groups + [{"params": params, "weight_decay": weight_decay, "lr": r} for r, params in left.items()]

    def on_step(self, model: nn.Module, step: int, steps_per_epoch: int) -> None:
        self.inner.on_step(model, step, steps_per_epoch)
        self.step, self.micro = step, 0
        t = self.train
        self.total_steps = t.max_steps if t.max_steps > 0 else max(1, math.ceil(t.epochs * steps_per_epoch))
        if self.domain_classifier is not None:
            self.domain_classifier.reverse.scale = dann_weight(step / self.total_steps, self.domain.adversarial_weight)

    # --- the objective ----------------------------------------------------------------------------------------

    def logits(self, model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.inner.logits(model, inputs)

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        d, batch = self.domain, dict(batch)
        weights = batch.pop(ROW_WEIGHT, None)
        main, logits, features = self._main_loss(model, batch, weights)
        total = d.source_weight * main if d.source_file else main
        key = self.micro * self.runtime.world_size + self.rank  # P processes draw as 1 accumulating P× more
        self.micro += 1
        device = batch["labels"].device
        if self.extra.target_train is not None:
            target_loss, _ = self.inner.loss(model, self._draw("target", key, device))
            total = total + d.target_weight * target_loss
        if self.domain_classifier is not None:
            pool = self._draw("unlabelled", key, device)
            self.inner.logits(model, {k: v for k, v in pool.items() if k != "labels"})
            both = torch.cat([features, self.tap.take()]).float()
            is_target = torch.cat([torch.zeros(len(features)), torch.ones(len(both) - len(features))]).to(device)
            total = total + F.binary_cross_entropy_with_logits(self.domain_classifier(both), is_target)
        if self.start or self.new:
            total = total + l2sp_penalty(self._starts(), self.new, d.l2sp_alpha, d.l2sp_beta).to(total.device)
        return total, logits

    def _main_loss(self, model: nn.Module, batch: dict, weights: torch.Tensor | None) -> tuple:
        """(loss, logits, pooled features or None) of the loop's own batch (the source when there is one)."""
        if self.source_head is None and weights is None:
            loss, logits = self.inner.loss(model, batch)
            return loss, logits, self.tap.take() if self.tap is not None else None
        logits = self.inner.logits(model, {k: v for k, v in batch.items() if k != "labels"})
        features = self.tap.take() if self.tap is not None else None
        if self.source_head is not None:
            logits = self.source_head(features)
        smoothing = self.runtime.label_smoothing
        per_row = F.cross_entropy(logits.float(), batch["labels"], reduction="none", label_smoothing=smoothing)
        loss = (per_row * weights.to(per_row.dtype)).mean() if weights is not None else per_row.mean()
        return loss, logits, features

    def _starts(self) -> list[tuple[nn.Parameter, torch.Tensor]]:
        if self.start and self.start[0][1].device != self.start[0][0].device:  # the loop moved the model
            self.start = [(p, s.to(p.device)) for p, s in self.start]
        return self.start

    def _draw(self, stream: str, key: int, device: torch.device) -> dict[str, torch.Tensor]:
        rows = self.extra.target_train if stream == "target" else self.extra.unlabelled
        generator = torch.Generator().manual_seed(draw_seed(self.train.seed, _STREAMS[stream], self.step, key))
        picked = torch.randint(len(rows), (self.train.batch_size,), generator=generator).tolist()
        batch = self.collator([rows[i] for i in picked])
        return {k: v.to(device) for k, v in batch.items()}

    # --- the saved run: the inner strategy's ------------------------------------------------------------------

    def save(self, model: nn.Module, output_dir: str | Path) -> None:
        self.inner.save(model, output_dir)

    def extra_results(self, model: nn.Module, metrics: dict, output_dir: Path) -> dict:
        return self.inner.extra_results(model, metrics, output_dir)


def check_combination(strategy: type[Strategy], domain: DomainConfig) -> None:
    """Refuse, before any data or model loads, a strategy whose loss reads what it prepared for the main stream's
    rows (distillation's teacher outputs) where the objective needs a loss on other rows or per-row weights."""
    own_loss = strategy.loss is not Strategy.loss or strategy.prepare_data is not Strategy.prepare_data
    if not own_loss:
        return
    for key, used in (("domain.source_file", bool(domain.source_file)), ("domain.reweight", domain.reweight)):
        if used:
            from hftransfer.errors import UserError

            raise UserError(
                f"{key} does not combine with the {strategy.name} strategy: its loss reads what it prepares for the "
                "training rows. Use it with full, frozen or lora, or use L2-SP/DANN alone."
            )


def wrap_for_domains(
    strategy: Strategy, domain: DomainConfig, extra: DomainData, collator: Callable, train: TrainConfig
) -> Strategy:
    """The run's strategy with the domain objective around it (a ready `DomainObjective` is kept)."""
    if isinstance(strategy, DomainObjective):
        return strategy
    return DomainObjective(strategy, domain, extra, collator, train)
