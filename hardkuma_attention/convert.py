r"""``convert(model)``: every ``nn.MultiheadAttention`` of a module tree becomes a
:class:`~hardkuma_attention.HardKumaAttention`, in place.

::

    model = nn.Transformer(d_model=64, nhead=4)
    hardkuma_attention.convert(model, normalize="none")      # returns the same object

Each replacement is built by :meth:`HardKumaAttention.from_softmax`: the query/key/value and
output projections are copied (so device and dtype are kept), ``dropout``, ``batch_first``,
``kdim``/``vdim`` too; the options (``normalize``, ``support``, ``ab_clamp``,
``parameterization``, ``stats_key``, ``compile``) are those of :class:`HardKumaAttention`.
``nn.TransformerEncoder``\ s holding a converted layer get ``use_nested_tensor = False`` (their
eval fast path would bypass the attention module).  With the
default ``parameterization="split"`` each head's first half of query/key dimensions gives
``score_a`` and the second half ``score_b``, so a trained model's attention pattern is not kept:
fine-tune after converting.  Training mode of each module is kept.

Refused (``ValueError``, before anything is replaced): ``add_bias_kv``, ``add_zero_attn``, an odd
head dimension with ``parameterization="split"``, or a model with no ``nn.MultiheadAttention``.
"""
from __future__ import annotations

from typing import List, Tuple

from torch import nn

from .attention import HardKumaAttention

__all__ = ["convert", "find_softmax_attention"]


def find_softmax_attention(model: nn.Module) -> List[Tuple[str, nn.MultiheadAttention]]:
    """``(qualified name, module)`` of every ``nn.MultiheadAttention`` in ``model`` (not
    subclasses that are already :class:`HardKumaAttention`)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]


def _check_convertible(name: str, mha: nn.MultiheadAttention, parameterization: str) -> None:
    where = name or "<root>"
    if mha.bias_k is not None or mha.bias_v is not None:
        raise ValueError(f"{where}: nn.MultiheadAttention(add_bias_kv=True) cannot be converted")
    if mha.add_zero_attn:
        raise ValueError(f"{where}: nn.MultiheadAttention(add_zero_attn=True) cannot be converted")
    if parameterization == "split" and mha.head_dim % 2:
        raise ValueError(
            f'{where}: head dim {mha.head_dim} is odd; parameterization="split" needs an even one '
            '(use parameterization="separate")'
        )


def _set_child(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def convert(model: nn.Module, **options) -> nn.Module:
    """Replace every ``nn.MultiheadAttention`` in ``model`` by
    ``HardKumaAttention.from_softmax(mha, **options)``, in place; returns ``model``.

    A module shared between several parents is converted once and stays shared.  Raises
    ``ValueError`` naming the first module that cannot be converted (nothing is changed then).
    """
    found = find_softmax_attention(model)
    if not found:
        raise ValueError(f"{type(model).__name__} has no nn.MultiheadAttention to convert")
    if isinstance(model, nn.MultiheadAttention):
        raise ValueError("convert() replaces submodules; call HardKumaAttention.from_softmax(mha) on a bare module")
    parameterization = options.get("parameterization", "split")
    for name, mha in found:
        _check_convertible(name, mha, parameterization)
    made = {}
    for name, mha in found:
        if id(mha) not in made:
            new = HardKumaAttention.from_softmax(mha, **options)
            new.train(mha.training)
            made[id(mha)] = new
        _set_child(model, name, made[id(mha)])
    # Shared modules appear once in named_modules(): re-attach them wherever else they sit.
    for parent in model.modules():
        for child_name, child in list(parent.named_children()):
            if id(child) in made and child is not made[id(child)]:
                setattr(parent, child_name, made[id(child)])
    _disable_nested_tensor_fast_path(model)
    return model


def _disable_nested_tensor_fast_path(model: nn.Module) -> None:
    """``nn.TransformerEncoder`` decides at construction (``use_nested_tensor``) whether its eval
    fast path may pack padded batches into nested tensors and read ``in_proj_weight``; that path
    bypasses the attention modules, so it is switched off where HardKuma attention now sits."""
    for enc in model.modules():
        if isinstance(enc, nn.TransformerEncoder) and any(isinstance(m, HardKumaAttention) for m in enc.modules()):
            enc.use_nested_tensor = False
