"""One line on how a run crossed domains, for results.json, the console report and the model card."""

from __future__ import annotations

from pathlib import Path

from hftransfer.config.recipe import DomainConfig


def describe_domain(domain: DomainConfig) -> str:
    """E.g. `jointly with source sst2.tsv (weight 1), target weight λ=0.5, own heads; L2-SP α=0.01, β=0`."""
    parts = []
    if domain.source_file:
        heads = ", own head per domain" if domain.separate_heads else ", shared head"
        parts.append(
            f"jointly with source {Path(domain.source_file).name} (weight {domain.source_weight:g}), "
            f"target weight λ={domain.target_weight:g}{heads}"
        )
    if domain.l2sp_alpha or domain.l2sp_beta:
        parts.append(f"L2-SP α={domain.l2sp_alpha:g}, β={domain.l2sp_beta:g}")
    if domain.adversarial_weight:
        pool = Path(domain.unlabelled_target_file or "").name
        parts.append(f"DANN against unlabelled {pool} (max weight {domain.adversarial_weight:g})")
    if domain.reweight:
        parts.append(f"source rows reweighted toward the target (odds clipped at {domain.reweight_clip:g})")
    return "; ".join(parts)
