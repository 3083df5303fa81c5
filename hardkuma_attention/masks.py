r"""Attention masks -> the ``(valid, bias)`` pair of :func:`~hardkuma_attention.functional.scaled_dot_product_hardkuma`.

Callers speak two dialects; both end up as

- ``valid``: bool, True = the cell may be attended, broadcastable to the score shape
  ``(batch, heads, T, S)`` (None: every cell is allowed);
- ``bias``: float, added to ``score_a`` (the a-scores; ``score_b`` is never shifted),
  broadcastable to the same shape (None: no shift).

Conventions (``nn.MultiheadAttention`` and fairseq agree on ``attn_mask``):

- ``attn_mask`` ``(T, S)`` or per head ``(batch * heads, T, S)`` (batch-major, head-minor, as
  ``nn.MultiheadAttention`` and fairseq lay it out):
  bool: True = disallowed;  float: additive, a value ``<= MASKED_SCORE`` (``-1e4``; covers
  ``-inf``, fairseq's ``-1e8``, ``finfo.min``) disallows the cell, any other value is added to
  ``score_a``.
- ``key_padding_mask`` ``(batch, S)``:
  ``key_padding="additive"`` (PyTorch, :class:`~hardkuma_attention.HardKumaAttention`): bool
  True = padding, float additive exactly as ``attn_mask`` (PyTorch adds a float key padding mask
  to the scores);  ``key_padding="nonzero"`` (fairseq, which ``masked_fill`` s every non-zero entry
  with ``-inf`` whatever its dtype): any non-zero value is padding, never a bias.

Bias handling (the two callers used to differ; this is the one rule now): the bias is the
allowed part of every float mask, ``where(mask > MASKED_SCORE, mask, 0)``, summed over the masks,
cast to ``dtype``; it is returned only when some allowed value is non-zero, so the usual
``0 / -inf`` float masks (``nn.Transformer.generate_square_subsequent_mask``, fairseq's future
mask) cost no bias tensor at all and the kernels skip the add.  Dropping an all-zero bias changes
no value (``score_a + 0``); it costs one host synchronisation per float mask (pass bool masks to
avoid it).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

__all__ = ["MASKED_SCORE", "KEY_PADDING_STYLES", "merge_masks", "split_mask", "is_causal_mask"]

MASKED_SCORE = -1e4  # additive mask values at or below this disallow a cell
KEY_PADDING_STYLES = ("additive", "nonzero")

Masks = Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]


def split_mask(mask: torch.Tensor, name: str, dtype: torch.dtype = torch.float32) -> Masks:
    """One mask -> ``(valid, bias)`` of the same shape: bool True = disallowed; float additive
    (``<= MASKED_SCORE`` disallows, other values form ``bias``, None when they are all 0)."""
    if mask.dtype == torch.bool:
        return ~mask, None
    if not mask.is_floating_point():
        raise TypeError(f"{name} must be bool or floating point, got {mask.dtype}")
    ok = mask > MASKED_SCORE
    bias = torch.where(ok, mask, torch.zeros((), dtype=mask.dtype, device=mask.device))
    if not bool(bias.ne(0).any()):
        return ok, None
    return ok, bias.to(dtype)


def _attn_mask_4d(attn_mask: torch.Tensor, batch: int, heads: int, T: int, S: int) -> torch.Tensor:
    """``(T, S)`` -> ``(1, 1, T, S)``, ``(batch * heads, T, S)`` -> ``(batch, heads, T, S)`` (views)."""
    if attn_mask.dim() == 2:
        if tuple(attn_mask.shape) != (T, S):
            raise ValueError(f"attn_mask of shape {tuple(attn_mask.shape)}, expected {(T, S)}")
        return attn_mask.view(1, 1, T, S)
    if attn_mask.dim() == 3:
        if tuple(attn_mask.shape) != (batch * heads, T, S):
            raise ValueError(f"attn_mask of shape {tuple(attn_mask.shape)}, expected {(batch * heads, T, S)}")
        return attn_mask.view(batch, heads, T, S)
    raise ValueError(f"attn_mask must be 2-D or 3-D, got {attn_mask.dim()}-D")


def _key_padding(key_padding_mask: torch.Tensor, batch: int, S: int, style: str, dtype: torch.dtype) -> Masks:
    if tuple(key_padding_mask.shape) != (batch, S):
        raise ValueError(f"key_padding_mask of shape {tuple(key_padding_mask.shape)}, expected {(batch, S)}")
    kpm = key_padding_mask.view(batch, 1, 1, S)
    if style == "nonzero":
        return kpm == 0, None
    return split_mask(kpm, "key_padding_mask", dtype)


def _and(x: Optional[torch.Tensor], y: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return y if x is None else (x if y is None else x & y)


def _add(x: Optional[torch.Tensor], y: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return y if x is None else (x if y is None else x + y)


def merge_masks(
    attn_mask: Optional[torch.Tensor],
    key_padding_mask: Optional[torch.Tensor],
    *,
    batch: int,
    heads: int,
    tgt_len: int,
    src_len: int,
    dtype: torch.dtype = torch.float32,
    key_padding: str = "additive",
) -> Masks:
    r"""Merge an ``attn_mask`` and a ``key_padding_mask`` into ``(valid, bias)`` (module doc).

    ``valid = valid(attn_mask) & valid(key_padding_mask)``, ``bias = bias(attn_mask) +
    bias(key_padding_mask)``; both are views or small tensors broadcastable to
    ``(batch, heads, tgt_len, src_len)``: ``(1, 1, T, S)`` for a 2-D ``attn_mask``,
    ``(batch, heads, T, S)`` for a 3-D one, ``(batch, 1, 1, S)`` for the key padding mask.

    Args:
        attn_mask: ``(T, S)`` or ``(batch * heads, T, S)``, bool or float (or None).
        key_padding_mask: ``(batch, S)`` (or None).
        key_padding: ``"additive"`` (PyTorch: bool True = pad, float additive) or ``"nonzero"``
            (fairseq: every non-zero entry is padding).
        dtype: dtype of the returned bias (that of the scores).

    Raises ``ValueError`` naming the mask and both shapes when a shape does not fit, ``TypeError``
    for an integer ``attn_mask`` (or integer key padding mask with ``"additive"``).
    """
    if key_padding not in KEY_PADDING_STYLES:
        raise ValueError(f"key_padding must be one of {KEY_PADDING_STYLES}, got {key_padding!r}")
    valid = bias = None
    if attn_mask is not None:
        valid, bias = split_mask(_attn_mask_4d(attn_mask, batch, heads, tgt_len, src_len), "attn_mask", dtype)
    if key_padding_mask is not None:
        kp_valid, kp_bias = _key_padding(key_padding_mask, batch, src_len, key_padding, dtype)
        valid, bias = _and(valid, kp_valid), _add(bias, kp_bias)
    return valid, bias


def is_causal_mask(attn_mask: Optional[torch.Tensor]) -> bool:
    """True when ``attn_mask`` is a 2-D ``(T, S)`` mask that disallows exactly the keys
    ``j > i + S - T`` (the causal mask, aligned bottom-right as ``is_causal`` of
    :func:`~hardkuma_attention.functional.scaled_dot_product_hardkuma`; the usual upper triangle
    when ``T == S``) and shifts nothing, i.e. when ``valid=None, bias=None, is_causal=True`` is the
    same attention (and lets a tiled kernel skip the tiles above the diagonal).  One pass over the
    mask and a host synchronisation."""
    if attn_mask is None or attn_mask.dim() != 2:
        return False
    if not (attn_mask.dtype == torch.bool or attn_mask.is_floating_point()):
        return False
    from .functional import causal_valid  # here: functional may come to import this module

    valid, bias = split_mask(attn_mask, "attn_mask")
    return bias is None and torch.equal(valid, causal_valid(*attn_mask.shape, device=attn_mask.device))
