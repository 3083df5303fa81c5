"""HardKuma attention: sparse, differentiable binary-ish weights for PyTorch.

Bastings, Aziz & Titov (ACL 2019), "Interpretable Neural Predictions with Differentiable Binary
Variables".  This package never imports fairseq; see ``fairseq_plugins`` for that.
"""
from .attention import HardKumaAttention
from .config import DEFAULT_AB_RANGE, ControllerConfig, GateConfig
from .constraints import LagrangianConstraint
from .convert import convert
from .distributions import DEFAULT_SUPPORT, HardKuma, HardKumaraswamy, Kumaraswamy
from .functional import (
    expected_l0,
    expected_transitions,
    hardkuma_attention_weights,
    hardkuma_weights_from_scores,
    masked_mean,
    nonzero_rate,
)
from .stats import AttentionStats, collect_attention_stats, gate_stats

__version__ = "0.1.0"

__all__ = [
    "AttentionStats",
    "ControllerConfig",
    "DEFAULT_AB_RANGE",
    "DEFAULT_SUPPORT",
    "GateConfig",
    "HardKuma",
    "HardKumaAttention",
    "HardKumaraswamy",
    "Kumaraswamy",
    "LagrangianConstraint",
    "collect_attention_stats",
    "expected_l0",
    "expected_transitions",
    "gate_stats",
    "hardkuma_attention_weights",
    "hardkuma_weights_from_scores",
    "masked_mean",
    "nonzero_rate",
]
