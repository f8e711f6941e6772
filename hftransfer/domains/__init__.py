"""Transfer across domains (issue 17): a labelled source trained jointly with the target, L2-SP, DANN, and
instance reweighting, as a wrapper around any strategy (`DomainObjective`) and as pieces for research code."""

from hftransfer.domains.layers import (
    DomainClassifier,
    FeatureTap,
    GradientReversal,
    classifier_head,
    dann_weight,
    l2sp_penalty,
    reverse_gradient,
)
from hftransfer.domains.objective import DomainObjective

__all__ = [
    "DomainClassifier",
    "DomainObjective",
    "FeatureTap",
    "GradientReversal",
    "classifier_head",
    "dann_weight",
    "l2sp_penalty",
    "reverse_gradient",
]
