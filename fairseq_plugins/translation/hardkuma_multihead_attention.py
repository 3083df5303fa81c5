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

Masks (fairseq conventions): ``key_padding_mask`` ``(batch, src_len)``, non-zero/True = pad;
``attn_mask`` ``(tgt_len, src_len)`` or ``(batch * heads, tgt_len, src_len)``, bool (True =
disallowed) or additive float where values ``<= -1e4`` (fairseq uses ``-inf`` and ``-1e8``)
disallow a cell and other values are added to ``score_a``.  Disallowed cells get a gate of
exactly 0 and are excluded from the L0 statistics.

Statistics: inside :func:`hardkuma_attention.collect_attention_stats` every call reports an
:class:`hardkuma_attention.AttentionStats` labelled with ``stats_key`` (differentiable expected
L0 from :func:`hardkuma_attention.fused.expected_l0_sum`, number of valid cells, number of
non-zero weights).  Nothing is cached on the module.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from fairseq.modules.multihead_attention import MultiheadAttention

from hardkuma_attention.attention import MASKED_SCORE
from hardkuma_attention.distributions import DEFAULT_SUPPORT
from hardkuma_attention.functional import NORMALIZE_MODES, hardkuma_weights_from_scores
from hardkuma_attention.fused import expected_l0_sum
from hardkuma_attention.stats import AttentionStats, report_stats, stats_requested

__all__ = ["HardKumaMultiheadAttention", "merge_masks"]

IncrementalState = Dict[str, Dict[str, Optional[Tensor]]]


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
    """fairseq masks -> ``(valid, bias)`` for scores of shape ``(kv_bsz, group, H, T, S)``.

    ``valid``: bool, True = allowed, broadcastable to the score shape (None: all allowed).
    ``bias``: additive float term for ``score_a`` (None when there is none).
    ``group`` is the number of queries sharing one key set (the beam size in fairseq's
    beam-shared encoder-decoder attention, else 1); batch index ``b = kv_b * group + g``.
    """
    valid = None
    bias = None
    if attn_mask is not None:
        if attn_mask.dim() == 2:
            if tuple(attn_mask.shape) != (tgt_len, src_len):
                raise ValueError(f"attn_mask of shape {tuple(attn_mask.shape)}, expected {(tgt_len, src_len)}")
            attn_mask = attn_mask.view(1, 1, 1, tgt_len, src_len)
        elif attn_mask.dim() == 3:
            expected = (kv_bsz * group * num_heads, tgt_len, src_len)
            if tuple(attn_mask.shape) != expected:
                raise ValueError(f"attn_mask of shape {tuple(attn_mask.shape)}, expected {expected}")
            attn_mask = attn_mask.view(kv_bsz, group, num_heads, tgt_len, src_len)
        else:
            raise ValueError(f"attn_mask must be 2-D or 3-D, got {attn_mask.dim()}-D")
        if attn_mask.dtype == torch.bool:
            valid = ~attn_mask
        else:
            valid = attn_mask > MASKED_SCORE
            if bool((attn_mask.masked_fill(~valid, 0.0) != 0).any()):
                bias = attn_mask.masked_fill(~valid, 0.0).to(dtype)
    if key_padding_mask is not None:
        if tuple(key_padding_mask.shape) != (kv_bsz, src_len):
            raise ValueError(
                f"key_padding_mask of shape {tuple(key_padding_mask.shape)}, expected {(kv_bsz, src_len)}"
            )
        kp_valid = (key_padding_mask == 0).view(kv_bsz, 1, 1, 1, src_len)
        valid = kp_valid if valid is None else valid & kp_valid
    return valid, bias


class HardKumaMultiheadAttention(MultiheadAttention):
    """Drop-in for ``fairseq.modules.MultiheadAttention`` with HardKuma gates (see module doc).

    Extra args: ``normalize`` ("sum" | "none" | "softmax"), ``support`` (stretch interval),
    ``ab_clamp`` (bounds of a and b), ``stats_key`` (label of the reported stats, e.g.
    ``"encoder_self"``, ``"decoder_self"``, ``"cross"``).  ``add_bias_kv``/``add_zero_attn``,
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
        normalize: str = "sum",
        support: Tuple[float, float] = DEFAULT_SUPPORT,
        ab_clamp: Tuple[float, float] = (1e-3, 100.0),
        stats_key: Optional[str] = None,
    ):
        super().__init__(
            embed_dim, num_heads, kdim=kdim, vdim=vdim, dropout=dropout, bias=bias,
            self_attention=self_attention, encoder_decoder_attention=encoder_decoder_attention,
            q_noise=q_noise, qn_block_size=qn_block_size,
        )
        if normalize not in NORMALIZE_MODES:
            raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got {normalize!r}")
        if self.head_dim % 2:
            raise ValueError(f"HardKuma attention splits each head in two halves: head dim {self.head_dim} is odd")
        if not (0 < ab_clamp[0] < ab_clamp[1]):
            raise ValueError(f"ab_clamp must satisfy 0 < min < max, got {ab_clamp}")
        self.normalize = normalize
        self.support = (float(support[0]), float(support[1]))
        self.ab_clamp = (float(ab_clamp[0]), float(ab_clamp[1]))
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
        ``need_weights``, ``(H, B, T, S)`` with ``need_head_weights``, else None.
        """
        if before_softmax:
            raise NotImplementedError("HardKumaMultiheadAttention has no pre-softmax scores (before_softmax=True)")
        need_weights = need_weights or need_head_weights
        tgt_len, bsz, embed_dim = query.shape
        if embed_dim != self.embed_dim:
            raise ValueError(f"query dim {embed_dim} != {self.embed_dim}")

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
            if self.encoder_decoder_attention and self.beam_size > 1 and bsz == key.size(1):
                # fairseq's beam-shared encoder-decoder attention: keep one key set per sentence
                key = key.view(key.size(0), -1, self.beam_size, key.size(2))[:, :, 0, :]
                value = value.view(value.size(0), -1, self.beam_size, value.size(2))[:, :, 0, :]
                if key_padding_mask is not None:
                    key_padding_mask = key_padding_mask.view(-1, self.beam_size, key_padding_mask.size(1))[:, 0, :]
            k, v = self._heads(self.k_proj(key)), self._heads(self.v_proj(value))

        if saved_state is not None:
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
        if k is None or v is None:
            raise ValueError("no keys: pass key/value or a filled incremental_state")

        kv_bsz, src_len = k.size(0), k.size(2)
        if bsz % kv_bsz:
            raise ValueError(f"query batch {bsz} is not a multiple of the key batch {kv_bsz}")
        group = bsz // kv_bsz
        H, half = self.num_heads, self.head_dim // 2
        q = q.view(kv_bsz, group, H, tgt_len, self.head_dim)
        k, v = k.unsqueeze(1), v.unsqueeze(1)  # (kvB, 1, H, S, d): shared by the group
        scale = 1.0 / math.sqrt(half)
        score_a = torch.matmul(q[..., :half] * scale, k[..., :half].transpose(-1, -2))
        score_b = torch.matmul(q[..., half:] * scale, k[..., half:].transpose(-1, -2))
        # score_a, score_b: (kvB, G, H, T, S)
        valid, bias = merge_masks(
            key_padding_mask, attn_mask, kv_bsz, group, H, tgt_len, src_len, score_a.dtype
        )
        if bias is not None:
            score_a = score_a + bias
        weights = hardkuma_weights_from_scores(
            score_a, score_b, valid, training=self.training, normalize=self.normalize,
            support=self.support, ab_clamp=self.ab_clamp,
        )
        if stats_requested():
            report_stats(self._stats(score_a, score_b, valid, weights))

        out = torch.matmul(self.dropout_module(weights), v)  # (kvB, G, H, T, d)
        out = out.reshape(bsz, H, tgt_len, self.head_dim).permute(2, 0, 1, 3).reshape(tgt_len, bsz, embed_dim)
        out = self.out_proj(out)

        head_weights: Optional[Tensor] = None
        if need_weights:
            head_weights = weights.reshape(bsz, H, tgt_len, src_len).transpose(0, 1)  # (H, B, T, S)
            if not need_head_weights:
                head_weights = head_weights.mean(dim=0)
        return out, head_weights

    def _stats(self, score_a: Tensor, score_b: Tensor, valid: Optional[Tensor], weights: Tensor) -> AttentionStats:
        l0 = expected_l0_sum(score_a, score_b, valid, self.support, self.ab_clamp)
        if valid is None:
            cells = torch.tensor(float(weights.numel()), device=weights.device)
        else:
            cells = valid.expand(weights.shape).sum().to(torch.float32)
        nonzero = (weights.detach() != 0).sum().to(torch.float32)
        return AttentionStats(l0.float(), cells, nonzero, self.stats_key)
