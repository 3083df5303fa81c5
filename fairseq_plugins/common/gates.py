r"""The HardKuma gate options of the fairseq modules: one :class:`~hardkuma_attention.config.GateConfig`.

The attention modules (:class:`~fairseq_plugins.translation.HardKumaMultiheadAttention`,
:class:`~fairseq_plugins.nli.attend.HardKumaAttend`) hold one ``GateConfig`` (normalisation,
stretch ``support``, a/b ``ab_range``) built from the command line of their model, and hand it to
the core path :func:`hardkuma_attention.functional.scaled_dot_product_hardkuma` through
:func:`core_gate_kwargs`.  The core attention path maps scores to shapes with
``a = clamp(softplus(score_a), *ab_range)``, i.e. ``ab_map="clamp"``; a gate with another map is
refused here rather than silently mapped differently.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from hardkuma_attention.attention import GateOptions, check_attention_map  # GateOptions re-exported
from hardkuma_attention.config import GateConfig

__all__ = ["GateOptions", "attention_gate", "core_gate_kwargs"]


def attention_gate(
    gate: Optional[GateConfig] = None,
    *,
    default_normalize: str,
    normalize: Optional[str] = None,
    support: Optional[Tuple[float, float]] = None,
    ab_clamp: Optional[Tuple[float, float]] = None,
) -> GateConfig:
    """``gate`` (default: the ``"attention"`` preset with ``normalize=default_normalize``) with the
    given keyword options replacing its fields (``ab_clamp`` is ``ab_range``).  Raises ValueError
    for a bad option (GateConfig's checks) or an ``ab_map`` other than ``"clamp"``."""
    base = GateConfig.preset("attention", normalize=default_normalize) if gate is None else gate
    return check_attention_map(base.replace(normalize=normalize, support=support, ab_range=ab_clamp), "fairseq")


def core_gate_kwargs(gate: GateConfig) -> Dict[str, Any]:
    """The gate's keyword arguments of :func:`~hardkuma_attention.functional.scaled_dot_product_hardkuma`
    (``normalize``, ``support``, ``ab_clamp``)."""
    return {"normalize": gate.normalize, "support": gate.support, "ab_clamp": gate.ab_range}
