r"""``HardKumaAttention``: a drop-in for ``torch.nn.MultiheadAttention`` with HardKuma gates.

Each (query, key) cell of each head gets a gate ``z ~ HardKuma(a, b)`` instead of a softmax
probability.  ``a`` and ``b`` come from two bilinear score maps::

    a = clamp(softplus(score_a), *ab_range)     b = clamp(softplus(score_b), *ab_range)

(``gate``: a :class:`~hardkuma_attention.config.GateConfig` with the clamp map; ``ab_range`` is
the older keyword ``ab_clamp``, default :data:`~hardkuma_attention.config.DEFAULT_AB_RANGE`.)

``a`` large pushes the gate towards 1, ``b`` large towards 0.  Two parameterisations:

- ``"split"`` (default): each head's query/key dimensions are split in two halves; the first half
  gives ``score_a``, the second ``score_b`` (scaled by ``1/sqrt(head_dim/2)``).  Same parameters
  and projection cost as ``nn.MultiheadAttention``.
- ``"separate"``: a second pair of query/key projections gives ``score_b`` (the paper's two
  separate score functions); 5 projections instead of 3.

Masks follow ``nn.MultiheadAttention``: boolean masks mark *disallowed* cells with True; float
masks are additive, and a value of ``-inf`` (or anything ``<= -1e4``, the usual stand-ins such as
``-1e9`` or ``finfo.min``) disallows the cell, while other values are added to ``score_a``.
Disallowed cells get a gate of exactly 0 and are excluded from the L0 statistics; a query whose
keys are all disallowed gets all-zero weights (and a zero attention output before ``out_proj``).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch
from torch import nn

from .config import GateConfig
from .functional import BACKENDS, scaled_dot_product_hardkuma
from .masks import MASKED_SCORE, merge_masks  # MASKED_SCORE re-exported here

__all__ = ["HardKumaAttention", "GateOptions", "attention_gate", "check_attention_map", "MASKED_SCORE"]

PARAMETERIZATIONS = ("split", "separate")


def _check_arguments(embed_dim, num_heads, add_bias_kv, add_zero_attn, parameterization, dropout, compile,
                     backend) -> None:
    """The constructor's checks of everything but the gate (``ValueError`` / ``NotImplementedError``)."""
    if embed_dim <= 0 or num_heads <= 0:
        raise ValueError(f"embed_dim and num_heads must be > 0, got {embed_dim} and {num_heads}")
    if embed_dim % num_heads:
        raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
    if add_bias_kv or add_zero_attn:
        raise NotImplementedError("HardKumaAttention does not support add_bias_kv / add_zero_attn")
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}")
    if parameterization == "split" and (embed_dim // num_heads) % 2:
        raise ValueError(f'parameterization="split" needs an even head dim, got {embed_dim // num_heads}')
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if compile not in (None, True, False):
        raise ValueError(f"compile must be None (auto), True or False, got {compile!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def attention_gate(gate: Union[None, str, GateConfig] = None, normalize: Optional[str] = None,
                   support: Optional[Tuple[float, float]] = None,
                   ab_clamp: Optional[Tuple[float, float]] = None, owner: str = "HardKumaAttention") -> GateConfig:
    """The :class:`GateConfig` of an attention layer from ``gate`` (a GateConfig, a preset name or
    None: the ``"attention"`` preset) and the older keywords (None = not given; ``ab_clamp`` is
    ``ab_range``); a keyword that contradicts ``gate`` is a ``ValueError``
    (:meth:`GateConfig.resolve`), and so is the sigmoid a/b map, which the attention kernels
    (softplus and clamp) do not compute."""
    cfg = GateConfig.resolve(gate, owner=owner, normalize=normalize, support=support, ab_range=ab_clamp)
    return check_attention_map(cfg, owner)


def check_attention_map(cfg: GateConfig, owner: str) -> GateConfig:
    """``cfg`` if its a/b map is the one the attention kernels compute (``"clamp"``), else a
    ``ValueError`` naming ``owner``."""
    if cfg.ab_map != "clamp":
        raise ValueError(f"{owner}: the attention layers compute a, b = clamp(softplus(score)); "
                         f"gate.ab_map must be 'clamp', got {cfg.ab_map!r}")
    return cfg


def _batched(query, key, value, key_padding_mask):
    """Unbatched ``(T, E)`` inputs as ``(T, 1, E)`` (and their ``(S,)`` key padding mask as
    ``(1, S)``); returns them with ``unbatched``.  Checks the ranks and the key/value shapes."""
    unbatched = query.dim() == 2
    if unbatched:
        query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
        if key_padding_mask is not None:
            key_padding_mask = key_padding_mask.unsqueeze(0)
    elif query.dim() != 3:
        raise ValueError(f"query must be 2-D or 3-D, got {query.dim()}-D")
    if key.shape[:2] != value.shape[:2]:
        raise ValueError(f"key {tuple(key.shape)} and value {tuple(value.shape)} differ in batch/length")
    return query, key, value, key_padding_mask, unbatched


class GateOptions:
    """Mixin of attention modules that hold a :class:`GateConfig` as ``self.gate``: read-only
    ``normalize``, ``support`` and ``ab_clamp`` (= ``ab_range``) views under their older names."""

    gate: GateConfig

    @property
    def normalize(self) -> str:
        return self.gate.normalize

    @property
    def support(self) -> Tuple[float, float]:
        return self.gate.support

    @property
    def ab_clamp(self) -> Tuple[float, float]:
        return self.gate.ab_range


class HardKumaAttention(GateOptions, nn.Module):
    """Multi-head attention whose weights are HardKuma gates (exact zeros and ones).

    Args (as ``nn.MultiheadAttention``): ``embed_dim``, ``num_heads``, ``dropout`` (on the
    weights, training only), ``bias``, ``kdim``, ``vdim``, ``batch_first``, ``device``, ``dtype``.
    ``add_bias_kv`` and ``add_zero_attn`` are not supported.

    Extra args:
        gate: a :class:`~hardkuma_attention.config.GateConfig` (clamp map) or a preset name;
            None: the ``"attention"`` preset (normalize "none", support ``(-0.1, 1.1)``, a/b range
            ``(1e-3, 100)``), with any of the three keywords below replacing its field.  Giving
            ``gate`` and a keyword that disagrees with it is a ``ValueError``.  Read back as
            ``module.gate`` (and ``module.normalize`` / ``support`` / ``ab_clamp``).
        normalize: "none" (as in the paper: the raw gates in [0, 1] weight the values),
            "sum" (gates divided by their row sum, so outputs have the scale of softmax attention)
            or "softmax" (gate × softmax(score_a), renormalised).  Note that with "sum" a row with
            a single open gate has weight 1 whatever the gate's value, so the task loss gives no
            gradient that keeps that gate open while the L0 penalty pushes it shut: in our
            synthetic one-key task (tests/test_core_learning.py) "sum" collapses below the
            target and loses accuracy where "none" reaches 100 %.
        support: HardKuma stretch interval ``(l, r)``.
        ab_clamp: bounds of ``a`` and ``b`` (``gate.ab_range``).
        parameterization: "split" or "separate" (see the module docstring).
        stats_key: label put on the :class:`AttentionStats` this module produces.
        compile: None (default, "auto"): the tile kernels of large calls run through
            ``torch.compile`` when it works here (probed once; else eager with a one-time
            warning); True: always compiled when it works; False: eager.  See
            :class:`hardkuma_attention.streaming.TileKernels`.
        backend: "auto" (default: CUDA tensors run the Triton kernels when triton is importable),
            "triton" or "reference" (the CPU streaming path, for debugging); see
            :func:`hardkuma_attention.functional.scaled_dot_product_hardkuma`.

    With ``need_weights=False`` (what ``nn.TransformerEncoderLayer`` / ``DecoderLayer`` pass) the
    attention streams through (query block x key block) tiles
    (:func:`hardkuma_attention.functional.scaled_dot_product_hardkuma`): memory O(T), the
    backward recomputes the scores and regenerates the counter-based noise.  With
    ``need_weights=True`` the weights are materialised, as softmax attention does.

    ``forward`` mirrors ``nn.MultiheadAttention.forward`` and returns ``(attn_output,
    attn_weights)``; with ``return_stats=True`` a third element, the :class:`AttentionStats` of
    the call (differentiable expected L0 for a constraint), is returned.  The stats are also handed
    to any active :func:`collect_attention_stats` context.

    Eval mode uses the deterministic gate :meth:`HardKumaraswamy.deterministic`.
    """

    # Attributes nn.Transformer*Layer inspect.  ``_qkv_same_embed_dim`` is always False so that
    # PyTorch's fused inference fast path (which would bypass this module) is never taken.
    _qkv_same_embed_dim = False

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim: Optional[int] = None,
        vdim: Optional[int] = None,
        batch_first: bool = False,
        device=None,
        dtype=None,
        normalize: Optional[str] = None,
        support: Optional[Tuple[float, float]] = None,
        ab_clamp: Optional[Tuple[float, float]] = None,
        parameterization: str = "split",
        stats_key: Optional[str] = None,
        compile: Optional[bool] = None,
        backend: str = "auto",
        gate: Union[None, str, GateConfig] = None,
    ):
        super().__init__()
        _check_arguments(embed_dim, num_heads, add_bias_kv, add_zero_attn, parameterization, dropout, compile,
                         backend)
        self.gate = attention_gate(gate, normalize, support, ab_clamp)
        self.embed_dim = embed_dim
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = float(dropout)
        self.batch_first = batch_first
        self.parameterization = parameterization
        self.stats_key = stats_key
        self.compile = compile
        self.backend = backend
        self._build_projections(bias, {"device": device, "dtype": dtype})
        self._reset_parameters()

    def _build_projections(self, bias: bool, fk: dict) -> None:
        E = self.embed_dim
        self.q_proj = nn.Linear(E, E, bias=bias, **fk)
        self.k_proj = nn.Linear(self.kdim, E, bias=bias, **fk)
        self.v_proj = nn.Linear(self.vdim, E, bias=bias, **fk)
        if self.parameterization == "separate":
            self.q_proj_b = nn.Linear(E, E, bias=bias, **fk)
            self.k_proj_b = nn.Linear(self.kdim, E, bias=bias, **fk)
        self.out_proj = nn.Linear(E, E, bias=bias, **fk)
        self.register_parameter("in_proj_weight", None)
        self.register_parameter("in_proj_bias", None)

    def __setstate__(self, state):
        # modules pickled before ``gate`` existed stored the three fields as attributes
        if "gate" not in state and "normalize" in state:
            state["gate"] = GateConfig(normalize=state.pop("normalize"), support=state.pop("support"),
                                       ab_range=state.pop("ab_clamp"))
        super().__setstate__(state)

    def _reset_parameters(self):
        for lin in self._score_projections() + [self.v_proj]:
            nn.init.xavier_uniform_(lin.weight)
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)
        nn.init.xavier_uniform_(self.out_proj.weight)
        if self.out_proj.bias is not None:
            nn.init.zeros_(self.out_proj.bias)

    def _score_projections(self):
        projs = [self.q_proj, self.k_proj]
        if self.parameterization == "separate":
            projs += [self.q_proj_b, self.k_proj_b]
        return projs

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, normalize={self.normalize!r}, "
            f"parameterization={self.parameterization!r}, support={self.support}, "
            f"ab_clamp={self.ab_clamp}, dropout={self.dropout}, batch_first={self.batch_first}"
        )

    @classmethod
    def from_softmax(cls, mha: nn.MultiheadAttention, **kwargs) -> "HardKumaAttention":
        """Build a HardKumaAttention with the projections of a trained ``nn.MultiheadAttention``.

        With ``parameterization="split"`` each head's query/key halves become the a- and b-scores;
        fine-tuning is expected.
        """
        w = mha.in_proj_weight
        new = cls(
            mha.embed_dim, mha.num_heads, dropout=mha.dropout, bias=mha.in_proj_bias is not None,
            kdim=mha.kdim, vdim=mha.vdim, batch_first=mha.batch_first,
            device=mha.out_proj.weight.device, dtype=mha.out_proj.weight.dtype, **kwargs,
        )
        with torch.no_grad():
            if w is not None:
                ws = w.chunk(3, 0)
            else:
                ws = (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight)
            bs = mha.in_proj_bias.chunk(3, 0) if mha.in_proj_bias is not None else (None,) * 3
            for lin, wi, bi in zip((new.q_proj, new.k_proj, new.v_proj), ws, bs):
                lin.weight.copy_(wi)
                if bi is not None:
                    lin.bias.copy_(bi)
            new.out_proj.load_state_dict(mha.out_proj.state_dict())
        return new

    # ------------------------------------------------------------------ masks
    def _masks(self, attn_mask, key_padding_mask, is_causal, B, T, S, dtype, device):
        """Merge masks into ``valid`` (bool, True = allowed, broadcastable to (B, H, T, S)) and an
        additive ``bias`` for score_a (or None): :func:`hardkuma_attention.masks.merge_masks` with
        PyTorch's conventions (a float key padding mask is additive).  ``is_causal`` without an
        ``attn_mask`` disallows key ``j > i`` (top-left aligned, as ``scaled_dot_product_attention``);
        with one, ``attn_mask`` is taken to be that causal mask (as ``nn.MultiheadAttention``)."""
        if attn_mask is None and is_causal:
            attn_mask = torch.ones(T, S, dtype=torch.bool, device=device).triu(1)
        return merge_masks(
            attn_mask, key_padding_mask, batch=B, heads=self.num_heads, tgt_len=T, src_len=S,
            dtype=dtype, key_padding="additive",
        )

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: Optional[torch.Tensor] = None,
        need_weights: bool = True,
        attn_mask: Optional[torch.Tensor] = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
        return_stats: bool = False,
    ):
        query, key, value, key_padding_mask, unbatched = _batched(query, key, value, key_padding_mask)
        bf = self.batch_first and not unbatched
        B, T, S = (query.shape[0], query.shape[1], key.shape[1]) if bf else (query.shape[1], query.shape[0],
                                                                             key.shape[0])
        qa, ka, qb, kb, v, scale = self._project(query, key, value, bf)
        # a causal mask of its own (T == S, where both alignments agree) streams without a T x S mask
        causal = is_causal and attn_mask is None and T == S
        valid, bias = self._masks(attn_mask, key_padding_mask, is_causal and not causal, B, T, S, qa.dtype,
                                  query.device)
        out, weights, stats = scaled_dot_product_hardkuma(
            qa, ka, qb, kb, v, scale=scale, valid=valid, bias=bias, is_causal=causal, training=self.training,
            normalize=self.normalize, support=self.support, ab_clamp=self.ab_clamp,
            dropout_p=self.dropout, need_weights=need_weights, want_stats=return_stats,
            stats_key=self.stats_key, compile=self.compile, backend=self.backend,
        )  # out (B, H, T, dv), weights (B, H, T, S) or None
        out = self.out_proj(self._merge_heads(out, bf))
        if unbatched:
            out = out.squeeze(1)
        w_out = None
        if need_weights:
            w_out = weights.mean(1) if average_attn_weights else weights
            if unbatched:
                w_out = w_out.squeeze(0)
        if return_stats:
            return out, w_out, stats
        return out, w_out

    def _project(self, query, key, value, bf: bool):
        """Per-head ``(qa, ka, qb, kb, v, scale)`` as (B, H, n, d).  The projections run on the
        inputs' own layout (a transposed input would be copied, and the copy kept for the backward
        pass); only the projected heads are permuted."""
        H, time_dim = self.num_heads, 1 if bf else 0

        def heads(x):  # (B, n, E) or (n, B, E) -> (B, H, n, d)
            n, B = x.shape[time_dim], x.shape[1 - time_dim]
            if bf:
                return x.reshape(B, n, H, x.shape[-1] // H).transpose(1, 2)
            return x.reshape(n, B, H, x.shape[-1] // H).permute(1, 2, 0, 3)

        q, k, v = heads(self.q_proj(query)), heads(self.k_proj(key)), heads(self.v_proj(value))
        if self.parameterization == "separate":
            return q, k, heads(self.q_proj_b(query)), heads(self.k_proj_b(key)), v, 1.0 / math.sqrt(self.head_dim)
        half = self.head_dim // 2
        return q[..., :half], k[..., :half], q[..., half:], k[..., half:], v, 1.0 / math.sqrt(half)

    def _merge_heads(self, out: torch.Tensor, bf: bool) -> torch.Tensor:
        """(B, H, T, d) -> (B, T, E) with ``bf`` (batch first), else (T, B, E)."""
        B, _, T, _ = out.shape
        if bf:
            return out.transpose(1, 2).reshape(B, T, self.embed_dim)
        return out.permute(2, 0, 1, 3).reshape(T, B, self.embed_dim)
