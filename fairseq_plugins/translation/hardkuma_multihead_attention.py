r"""fairseq ``MultiheadAttention`` whose weights are HardKuma gates instead of a softmax.

Per head ``h`` the projected query/key vectors (head dim ``d``) are split in two halves, as in
:class:`hardkuma_attention.HardKumaAttention` (``parameterization="split"``)::

    score_a[t, s] = q[t, :d/2] . k[s, :d/2] / sqrt(d/2)      a = clamp(softplus(score_a))
    score_b[t, s] = q[t, d/2:] . k[s, d/2:] / sqrt(d/2)      b = clamp(softplus(score_b))
    z[t, s] ~ HardKuma(a, b)   (training: reparameterised sample; eval: deterministic gate)
    weights = normalize(z)     ("sum": z / sum_s z, "none": z, "softmax": z * softmax(score_a))

so the module has exactly the parameters of fairseq's softmax attention (q/k/v/out projections).

Why a full ``forward``: fairseq's ``MultiheadAttention.forward`` hands most calls (training,
no incremental state) to ``F.multi_head_attention_forward`` (PyTorch's fused kernels), which never
reaches any softmax a subclass could replace.  This class overrides ``forward`` and never calls
the parent's, so that path cannot be taken; it keeps fairseq's incremental-state layout
(``prev_key``/``prev_value`` of shape ``(batch, heads, len, head_dim)`` and
``prev_key_padding_mask``), so the inherited ``reorder_incremental_state`` (beam search) works,
as does fairseq's beam-shared encoder-decoder keys (``set_beam_size``).

Every call goes through the core path
:func:`hardkuma_attention.functional.scaled_dot_product_hardkuma` (the one used by
:class:`hardkuma_attention.HardKumaAttention`): no score map, mask or statistics code of its own.

Masks (fairseq conventions, merged by :func:`hardkuma_attention.masks.merge_masks` with
``key_padding="nonzero"``): ``key_padding_mask`` ``(batch, src_len)``, non-zero/True = pad;
``attn_mask`` ``(tgt_len, src_len)`` or ``(batch * heads, tgt_len, src_len)``, bool (True =
disallowed) or additive float where values ``<= -1e4`` (fairseq uses ``-inf`` and ``-1e8``)
disallow a cell and other values are added to ``score_a``.  Disallowed cells get a gate of
exactly 0 and are excluded from the L0 statistics.

Statistics: inside :func:`hardkuma_attention.collect_attention_stats` every call reports an
:class:`hardkuma_attention.AttentionStats` labelled with ``stats_key`` (differentiable expected
L0, number of valid cells, number of non-zero weights), computed by the core function.
Nothing is cached on the module.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from fairseq.modules.multihead_attention import MultiheadAttention

from hardkuma_attention.config import GateConfig
from hardkuma_attention.functional import scaled_dot_product_hardkuma
from hardkuma_attention.masks import is_causal_mask, merge_masks as merge_core_masks

from ..common.gates import GateOptions, attention_gate, core_gate_kwargs

__all__ = ["HardKumaMultiheadAttention", "merge_masks"]

IncrementalState = Dict[str, Dict[str, Optional[Tensor]]]


def fold_group(x: Tensor, group: int) -> Tensor:
    """``(kv_bsz * group, H, T, ...)`` -> ``(kv_bsz, H, group * T, ...)``: the queries of a key
    group (a beam) become extra query rows of the one key set they share (a view when group is 1)."""
    b, h, t = x.shape[:3]
    x = x.reshape(b // group, group, h, t, *x.shape[3:]).transpose(1, 2)
    return x.reshape(b // group, h, group * t, *x.shape[4:])


def unfold_group(x: Tensor, group: int) -> Tensor:
    """Inverse of :func:`fold_group`: ``(kv_bsz, H, group * T, ...)`` -> ``(kv_bsz * group, H, T, ...)``."""
    kb, h, gt = x.shape[:3]
    x = x.reshape(kb, h, group, gt // group, *x.shape[3:]).transpose(1, 2)
    return x.reshape(kb * group, h, gt // group, *x.shape[4:])


def merge_masks(
    key_padding_mask: Optional[Tensor],
    attn_mask: Optional[Tensor],
    kv_bsz: int,
    group: int,
    num_heads: int,
    tgt_len: int,
    src_len: int,
    dtype: torch.dtype,
) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """fairseq masks -> ``(valid, bias)`` for scores of the folded shape ``(kv_bsz, H, group * T, S)``.

    :func:`hardkuma_attention.masks.merge_masks` with fairseq's conventions (``key_padding="nonzero"``:
    any non-zero key padding entry is padding; ``attn_mask`` bool True = disallowed or additive
    float, ``<= -1e4`` disallows, other values shift ``score_a``), after folding the
    ``group`` queries that share one key set (fairseq's beam-shared encoder-decoder attention,
    batch index ``b = kv_b * group + g``) into the query rows (:func:`fold_group`).
    ``valid``: bool, True = allowed; ``bias``: float or None (also None for masks whose allowed
    values are all 0).
    """
    if attn_mask is not None and group > 1 and attn_mask.dim() in (2, 3):
        expected = (tgt_len, src_len) if attn_mask.dim() == 2 else (kv_bsz * group * num_heads, tgt_len, src_len)
        if tuple(attn_mask.shape) != expected:
            raise ValueError(f"attn_mask of shape {tuple(attn_mask.shape)}, expected {expected}")
        if attn_mask.dim() == 2:
            attn_mask = attn_mask.repeat(group, 1)
        else:
            attn_mask = fold_group(attn_mask.view(kv_bsz * group, num_heads, tgt_len, src_len), group)
            attn_mask = attn_mask.reshape(kv_bsz * num_heads, group * tgt_len, src_len)
    return merge_core_masks(
        attn_mask, key_padding_mask, batch=kv_bsz, heads=num_heads, tgt_len=group * tgt_len,
        src_len=src_len, dtype=dtype, key_padding="nonzero",
    )


class HardKumaMultiheadAttention(GateOptions, MultiheadAttention):
    """Drop-in for ``fairseq.modules.MultiheadAttention`` with HardKuma gates (see module doc).

    Extra args: ``gate`` (a :class:`~hardkuma_attention.config.GateConfig`; default the
    ``"attention"`` preset with ``normalize="sum"``), whose fields ``normalize`` ("sum" | "none" |
    "softmax"), ``support`` (stretch interval) and ``ab_clamp`` (= ``ab_range``, bounds of a and b)
    replace when given; ``stats_key`` (label of the reported stats, e.g. ``"encoder_self"``,
    ``"decoder_self"``, ``"cross"``).  ``add_bias_kv``/``add_zero_attn``,
    xformers and ``before_softmax`` are not supported.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        kdim: Optional[int] = None,
        vdim: Optional[int] = None,
        dropout: float = 0.0,
        bias: bool = True,
        self_attention: bool = False,
        encoder_decoder_attention: bool = False,
        q_noise: float = 0.0,
        qn_block_size: int = 8,
        gate: Optional[GateConfig] = None,
        normalize: Optional[str] = None,
        support: Optional[Tuple[float, float]] = None,
        ab_clamp: Optional[Tuple[float, float]] = None,
        stats_key: Optional[str] = None,
    ):
        super().__init__(
            embed_dim, num_heads, kdim=kdim, vdim=vdim, dropout=dropout, bias=bias,
            self_attention=self_attention, encoder_decoder_attention=encoder_decoder_attention,
            q_noise=q_noise, qn_block_size=qn_block_size,
        )
        if self.head_dim % 2:
            raise ValueError(f"HardKuma attention splits each head in two halves: head dim {self.head_dim} is odd")
        self.gate = attention_gate(gate, default_normalize="sum", normalize=normalize, support=support,
                                   ab_clamp=ab_clamp)
        self.stats_key = stats_key

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, normalize={self.normalize!r}, "
            f"support={self.support}, ab_clamp={self.ab_clamp}, stats_key={self.stats_key!r}"
        )

    def _heads(self, x: Tensor) -> Tensor:
        """``(len, batch, embed)`` -> ``(batch, heads, len, head_dim)``."""
        n, b, _ = x.shape
        return x.contiguous().view(n, b, self.num_heads, self.head_dim).permute(1, 2, 0, 3)

    def forward(
        self,
        query: Tensor,
        key: Optional[Tensor],
        value: Optional[Tensor],
        key_padding_mask: Optional[Tensor] = None,
        incremental_state: Optional[IncrementalState] = None,
        need_weights: bool = True,
        static_kv: bool = False,
        attn_mask: Optional[Tensor] = None,
        before_softmax: bool = False,
        need_head_weights: bool = False,
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """Shapes as fairseq: ``query`` ``(T, B, E)``, ``key``/``value`` ``(S, B, kdim/vdim)``.

        Returns ``(out (T, B, E), weights)`` with weights ``(B, T, S)`` averaged over heads when
        ``need_weights``, ``(H, B, T, S)`` with ``need_head_weights``, else None (and then no
        ``(T, S)`` map is materialised for them).  Dropout (``dropout_module.p``) applies to the
        weights in training only (``apply_during_inference`` is not supported).
        """
        if before_softmax:
            raise NotImplementedError("HardKumaMultiheadAttention has no pre-softmax scores (before_softmax=True)")
        need_weights = need_weights or need_head_weights
        tgt_len, bsz, embed_dim = query.shape
        if embed_dim != self.embed_dim:
            raise ValueError(f"query dim {embed_dim} != {self.embed_dim}")
        q, k, v, key_padding_mask = self._project(query, key, value, key_padding_mask, incremental_state, static_kv)
        out, weights = self._attend(q, k, v, key_padding_mask, attn_mask, need_weights)
        return self._output(out, weights, need_head_weights)

    def _project(self, query, key, value, key_padding_mask, incremental_state, static_kv):
        """Per-head projections, with fairseq's incremental state and beam-shared keys.

        Returns ``q (B, H, T, d)``, ``k``/``v`` ``(kv_bsz, H, S, d)`` (``kv_bsz`` divides ``B``;
        smaller with beam-shared encoder keys) and the key padding mask ``(kv_bsz, S)`` or None.
        """
        saved_state = self._get_input_buffer(incremental_state) if incremental_state is not None else None
        if saved_state is not None and static_kv and "prev_key" in saved_state:
            key = value = None  # encoder keys/values are cached
        q = self._heads(self.q_proj(query))  # (B, H, T, d)
        k = v = None
        if self.self_attention:
            k, v = self._heads(self.k_proj(query)), self._heads(self.v_proj(query))
        elif key is not None:
            if value is None:
                raise ValueError("key given without value")
            if self.encoder_decoder_attention and self.beam_size > 1 and query.size(1) == key.size(1):
                # fairseq's beam-shared encoder-decoder attention: keep one key set per sentence
                key = key.view(key.size(0), -1, self.beam_size, key.size(2))[:, :, 0, :]
                value = value.view(value.size(0), -1, self.beam_size, value.size(2))[:, :, 0, :]
                if key_padding_mask is not None:
                    key_padding_mask = key_padding_mask.view(-1, self.beam_size, key_padding_mask.size(1))[:, 0, :]
            k, v = self._heads(self.k_proj(key)), self._heads(self.v_proj(value))
        if saved_state is not None:
            k, v, key_padding_mask = self._update_cache(
                incremental_state, saved_state, k, v, key_padding_mask, static_kv
            )
        if k is None or v is None:
            raise ValueError("no keys: pass key/value or a filled incremental_state")
        return q, k, v, key_padding_mask

    def _update_cache(self, incremental_state, saved_state, k, v, key_padding_mask, static_kv):
        """Prepend the cached keys/values (self-attention) or reuse them (``static_kv``); store."""
        if "prev_key" in saved_state:
            prev_key, prev_value = saved_state["prev_key"], saved_state["prev_value"]
            assert prev_key is not None and prev_value is not None
            k = prev_key if static_kv else torch.cat([prev_key, k], dim=2)
            v = prev_value if static_kv else torch.cat([prev_value, v], dim=2)
        assert k is not None and v is not None
        key_padding_mask = MultiheadAttention._append_prev_key_padding_mask(
            key_padding_mask=key_padding_mask,
            prev_key_padding_mask=saved_state.get("prev_key_padding_mask"),
            batch_size=k.size(0),
            src_len=k.size(2),
            static_kv=static_kv,
        )
        saved_state["prev_key"], saved_state["prev_value"] = k, v
        saved_state["prev_key_padding_mask"] = key_padding_mask
        self._set_input_buffer(incremental_state, saved_state)
        return k, v, key_padding_mask

    def _attend(self, q, k, v, key_padding_mask, attn_mask, need_weights):
        """:func:`~hardkuma_attention.functional.scaled_dot_product_hardkuma` on the heads.

        The ``group = B / kv_bsz`` queries sharing a key set are folded into the query rows
        (:func:`fold_group`), so the core sees ``q (kv_bsz, H, group * T, d)`` against
        ``k``/``v`` ``(kv_bsz, H, S, d)`` and the keys are never copied per beam.  Returns
        ``out (B, H, T, d)`` and ``weights (B, H, T, S)`` (None unless ``need_weights``).
        """
        bsz, H, tgt_len, _ = q.shape
        kv_bsz, src_len = k.size(0), k.size(2)
        if bsz % kv_bsz:
            raise ValueError(f"query batch {bsz} is not a multiple of the key batch {kv_bsz}")
        group = bsz // kv_bsz
        half = self.head_dim // 2
        q = fold_group(q, group)
        causal = group == 1 and is_causal_mask(attn_mask)  # fairseq's future mask: let the core skip tiles
        if causal:
            attn_mask = None
        valid, bias = merge_masks(key_padding_mask, attn_mask, kv_bsz, group, H, tgt_len, src_len, q.dtype)
        out, weights, _ = scaled_dot_product_hardkuma(
            q[..., :half], k[..., :half], q[..., half:], k[..., half:], v, scale=1.0 / math.sqrt(half),
            valid=valid, bias=bias, is_causal=causal, training=self.training, **core_gate_kwargs(self.gate),
            dropout_p=self.dropout_module.p if self.training else 0.0, need_weights=need_weights,
            stats_key=self.stats_key,
        )  # stats go to any active collect_attention_stats() context
        return unfold_group(out, group), (None if weights is None else unfold_group(weights, group))

    def _output(self, out: Tensor, weights: Optional[Tensor], need_head_weights: bool):
        """``out (B, H, T, d)`` -> ``out_proj`` of ``(T, B, E)``; weights ``(B, H, T, S)`` ->
        ``(H, B, T, S)`` with ``need_head_weights``, else their head mean ``(B, T, S)``."""
        bsz, H, tgt_len, d = out.shape
        out = self.out_proj(out.permute(2, 0, 1, 3).reshape(tgt_len, bsz, H * d))
        if weights is None:
            return out, None
        head_weights = weights.transpose(0, 1)
        return out, (head_weights if need_head_weights else head_weights.mean(dim=0))
