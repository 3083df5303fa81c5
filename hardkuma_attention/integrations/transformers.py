r"""HardKuma attention as a Hugging Face transformers attention implementation.

Importing this module (or calling :func:`register`) adds ``"hardkuma"`` to transformers'
``AttentionInterface`` and ``AttentionMaskInterface``, so every model that dispatches through them
(BERT, GPT-2, Llama, BART, T5, ... with ``_supports_attention_backend``/``_supports_sdpa``) runs
HardKuma gates in every attention layer::

    import hardkuma_attention.integrations.transformers as hk
    model = AutoModelForSequenceClassification.from_config(cfg, attn_implementation="hardkuma")
    hk.configure(model, normalize="none", parameterization="split")   # optional, per model

The attention function receives the model's already projected per-head ``query (B, H, T, d)``,
``key``/``value (B, Hkv, S, d)`` and the mask, and calls the core
:func:`hardkuma_attention.functional.scaled_dot_product_hardkuma` (one gate per cell,
``z ~ HardKuma(a, b)`` in training, the deterministic gate in eval; weights ``@ value``).

Parameterisations (``a = clamp(softplus(score_a))``, ``b = clamp(softplus(score_b))``):

- ``"split"`` (default): ``score_a = q[:d/2] . k[:d/2] / sqrt(d/2)`` and
  ``score_b = q[d/2:] . k[d/2:] / sqrt(d/2)`` per head, as :class:`HardKumaAttention`: no new
  parameters.  On a *pretrained* checkpoint this re-purposes half of every head's query/key
  dimensions as a "close the gate" score, so the model's attention pattern is not preserved: the
  first forward is far from the pretrained behaviour and substantial fine-tuning is needed.  Best
  for models trained from scratch (from a config).
- ``"pretrained"``: ``score_a = q . k * scaling`` (+ position bias), exactly the model's own
  pre-softmax score, and ``score_b = beta_h``, a learned per-head offset (parameter
  ``hardkuma_b_offset``, shape ``(H,)``, initialised to ``offset_init``) registered on the attention
  module: the gate opens where the pretrained score is high, and ``beta_h`` sets how much is closed.
  Fine-tuning starts near the pretrained ranking of keys.  The offsets are created by
  :func:`configure` (a dry forward on ``example_inputs``, default ``model.dummy_inputs``) so they
  exist before an optimizer is built; reload such a model with :func:`from_pretrained`.

Options are stored in ``model.config.hardkuma`` (a dict, saved in ``config.json`` by
``save_pretrained``), and read by every attention call from ``module.config``: ``normalize``
("none" | "sum" | "softmax"), ``support`` (stretch interval), ``ab_clamp``, ``parameterization``,
``offset_init``.  Unconfigured models use :data:`DEFAULT_OPTIONS`.

Masks: the registered mask function always materialises a boolean ``(B, 1, T, S)`` mask (True =
allowed, causal skips disabled), so padded keys get exactly zero weight and a fully padded row is
all zero (no NaN).  Float (additive) masks passed by the caller are also accepted: values
``<= -1e4`` disallow a cell, others are added to ``score_a``; T5's ``position_bias`` is added to
``score_a``.  With no mask and a causal module the causal pattern is aligned bottom-right (the
queries are the last ``T`` of ``S`` keys, right for a KV cache).

``output_attentions=True`` returns the HardKuma weights; stats reach any active
:func:`hardkuma_attention.collect_attention_stats` context (see :class:`HardKumaTrainer`).
"""
from __future__ import annotations

import math
import os
from typing import Any, Dict, Mapping, Optional

import torch
from torch import nn


def hide_broken_torchaudio() -> bool:
    """Mark ``torchaudio`` as absent when it is installed but cannot load (e.g. the 2.11 wheel
    fairseq-fixed pulls in, beside torch 2.13: ``OSError`` on import), so that
    ``transformers.Trainer`` (whose import chain imports torchaudio when it is installed) can be
    imported.  It only acts on a torchaudio that cannot be imported anyway, so nothing that
    worked stops working; this module calls it once on import, before loading any model code
    (which imports ``transformers.audio_utils`` too).  Returns True when it hid it."""
    import importlib.util
    import sys

    if "torchaudio" in sys.modules or importlib.util.find_spec("torchaudio") is None:
        return False
    try:
        import torchaudio  # noqa: F401
    except OSError:
        for name in [n for n in sys.modules if n == "torchaudio" or n.startswith("torchaudio.")]:
            del sys.modules[name]
        sys.modules["torchaudio"] = None
        from transformers.utils import import_utils  # the availability check is cached

        import_utils.is_torchaudio_available.cache_clear()
        return True
    return False



hide_broken_torchaudio()

from transformers.masking_utils import AttentionMaskInterface, sdpa_mask  # noqa: E402
from transformers.modeling_utils import AttentionInterface  # noqa: E402
# set while transformers' output-capturing hooks record attention weights (output_attentions)
from transformers.utils.output_capturing import _active_collector  # noqa: E402

from ..attention import attention_gate  # noqa: E402
from ..config import GateConfig  # noqa: E402
from ..constraints import LagrangianConstraint  # noqa: E402
from ..functional import scaled_dot_product_hardkuma  # noqa: E402
from ..masks import split_mask  # noqa: E402

__all__ = [
    "ATTN_IMPLEMENTATION",
    "DEFAULT_OPTIONS",
    "PARAMETERIZATIONS",
    "OFFSET_PARAM",
    "register",
    "configure",
    "get_options",
    "from_pretrained",
    "hardkuma_attention_forward",
    "hardkuma_mask",
    "mask_to_valid_bias",
    "HardKumaTrainer",
    "constraint_penalty",
    "hide_broken_torchaudio",
]

ATTN_IMPLEMENTATION = "hardkuma"
CONFIG_KEY = "hardkuma"
OFFSET_PARAM = "hardkuma_b_offset"
PARAMETERIZATIONS = ("split", "pretrained")
_GATE = GateConfig.preset("attention")
DEFAULT_OPTIONS: Dict[str, Any] = {  # the gate fields are the "attention" GateConfig preset's
    "normalize": _GATE.normalize,
    "support": list(_GATE.support),
    "ab_clamp": list(_GATE.ab_range),
    "parameterization": "split",
    "offset_init": 0.0,
}


# ----------------------------------------------------------------------------- options
def _validated(options: Mapping[str, Any]) -> Dict[str, Any]:
    """``DEFAULT_OPTIONS`` updated by ``options``, checked; JSON-friendly (lists, floats)."""
    unknown = set(options) - set(DEFAULT_OPTIONS)
    if unknown:
        raise ValueError(f"unknown HardKuma option(s) {sorted(unknown)}; known: {sorted(DEFAULT_OPTIONS)}")
    out = dict(DEFAULT_OPTIONS)
    out.update(options)
    gate = attention_gate(None, out["normalize"], out["support"], out["ab_clamp"], owner="HardKuma options")
    if out["parameterization"] not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {out['parameterization']!r}")
    out["support"], out["ab_clamp"] = list(gate.support), list(gate.ab_range)
    out["offset_init"] = float(out["offset_init"])
    return out


def get_options(config) -> Dict[str, Any]:
    """The HardKuma options stored on ``config`` (``config.hardkuma``), else the defaults."""
    stored = getattr(config, CONFIG_KEY, None) if config is not None else None
    return _validated(stored or {})


def _all_configs(config):
    """``config`` and its sub-configs (encoder/decoder/text/vision ...), recursively."""
    yield config
    for name in getattr(config, "sub_configs", {}) or {}:
        sub = getattr(config, name, None)
        if sub is not None and hasattr(sub, "to_dict"):
            yield from _all_configs(sub)


# ----------------------------------------------------------------------------- masks
def hardkuma_mask(*args, **kwargs):
    """Mask function for ``AttentionMaskInterface``: transformers' boolean ``sdpa_mask`` (True =
    allowed) with the causal skip disabled, so a causal model always gets its causal mask (the
    attention function never has to guess its alignment).  May return None for a bidirectional
    mask without padding (nothing to mask)."""
    kwargs["allow_is_causal_skip"] = False
    return sdpa_mask(*args, **kwargs)


def mask_to_valid_bias(mask: Optional[torch.Tensor], position_bias: Optional[torch.Tensor], dtype):
    """Split a transformers attention mask into ``valid`` (bool, True = allowed) and an additive
    ``bias`` on ``score_a`` (or None), both broadcastable to ``(B, H, T, S)``.

    Bool masks: True = allowed.  Float masks are additive: ``<= -1e4`` (``finfo.min``, ``-inf``)
    disallows the cell, other values are added to ``score_a``
    (:func:`hardkuma_attention.masks.split_mask`: no bias when they are all 0).
    ``position_bias`` (T5) is added to ``score_a`` too.
    """
    valid, bias = None, None
    if mask is not None:
        if mask.dtype == torch.bool:
            valid = mask
        else:
            valid, bias = split_mask(mask, "attention mask", dtype)
    if position_bias is not None:
        position_bias = position_bias.to(dtype)
        bias = position_bias if bias is None else bias + position_bias
    return valid, bias


# ----------------------------------------------------------------------------- attention
def _offset(module: nn.Module, heads: int, init: float, like: torch.Tensor) -> nn.Parameter:
    """The per-head ``score_b`` offset of ``module`` (created on first use, shape ``(heads,)``)."""
    p = getattr(module, OFFSET_PARAM, None)
    if p is None:
        p = nn.Parameter(torch.full((heads,), float(init), dtype=like.dtype, device=like.device))
        module.register_parameter(OFFSET_PARAM, p)
    elif p.shape != (heads,):
        raise ValueError(f"{OFFSET_PARAM} of shape {tuple(p.shape)} but the attention has {heads} heads")
    return p


def _score_operands(module, query, key, scaling, opts):
    """``(qa, ka, qb, kb, scale)`` with ``score_a = scale qa ka^T``, ``score_b = scale qb kb^T``."""
    B, H, T, d = query.shape
    if opts["parameterization"] == "split":
        if d % 2:
            raise ValueError(f'parameterization="split" needs an even head dim, got {d}')
        half = d // 2
        scale = 1.0 / math.sqrt(half)
        return query[..., :half], key[..., :half], query[..., half:], key[..., half:], scale
    scale = float(scaling) if scaling is not None else 1.0 / math.sqrt(d)
    beta = _offset(module, H, opts["offset_init"], query)
    # score_b[b, h, t, s] = scale * (beta_h / scale) * 1 = beta_h, through the same core path
    qb = (beta / scale).to(query.dtype).view(1, H, 1, 1).expand(B, H, T, 1)
    kb = torch.ones(B, H, key.shape[-2], 1, dtype=key.dtype, device=key.device)
    return query, key, qb, kb, scale


def _repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """``(B, Hkv, S, d) -> (B, Hkv * n_rep, S, d)`` (grouped-query attention)."""
    return x if n_rep == 1 else x.repeat_interleave(n_rep, dim=1)


def hardkuma_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: Optional[torch.Tensor],
    dropout: float = 0.0,
    scaling: Optional[float] = None,
    is_causal: Optional[bool] = None,
    position_bias: Optional[torch.Tensor] = None,
    **kwargs,
):
    """transformers attention function (``AttentionInterface`` signature).

    Shapes: ``query (B, H, T, d)``, ``key``/``value (B, Hkv, S, d)`` with ``H % Hkv == 0``,
    ``attention_mask`` broadcastable to ``(B, H, T, S)`` (bool True = allowed, or additive float).
    Returns ``(out (B, T, H, dv), weights (B, H, T, S) or None)``; the weights only when the caller
    asks for them (``output_attentions``).  Train mode samples the gates, eval mode uses the
    deterministic gate; ``dropout`` is applied to the weights in training.
    """
    if kwargs.get("softcap") is not None:
        raise ValueError('attn_implementation="hardkuma" does not support softcap')
    opts = get_options(getattr(module, "config", None))
    n_rep = query.shape[1] // key.shape[1]
    key, value = _repeat_kv(key, n_rep), _repeat_kv(value, n_rep)
    qa, ka, qb, kb, scale = _score_operands(module, query, key, scaling, opts)
    valid, bias = mask_to_valid_bias(attention_mask, position_bias, query.dtype)
    if is_causal is None:
        is_causal = bool(getattr(module, "is_causal", False))
    causal = attention_mask is None and is_causal and query.shape[-2] > 1
    need_weights = _weights_requested(kwargs)
    out, weights, _ = scaled_dot_product_hardkuma(
        qa, ka, qb, kb, value, scale=scale, valid=valid, bias=bias, is_causal=causal,
        training=module.training, normalize=opts["normalize"], support=tuple(opts["support"]),
        ab_clamp=tuple(opts["ab_clamp"]), dropout_p=float(dropout), need_weights=need_weights,
    )
    return out.transpose(1, 2).contiguous(), weights


def _weights_requested(kwargs) -> bool:
    """True when the caller wants the attention weights (``output_attentions``): either passed
    down in ``kwargs`` or requested from transformers' output-capturing hooks."""
    if kwargs.get("output_attentions"):
        return True
    collected = _active_collector.get()
    return bool(collected) and any(k.endswith("attentions") for k in collected)


def register() -> None:
    """Register ``"hardkuma"`` in transformers' attention (and mask) interfaces; idempotent."""
    AttentionInterface.register(ATTN_IMPLEMENTATION, hardkuma_attention_forward)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, hardkuma_mask)


register()


# ----------------------------------------------------------------------------- model helpers
def _default_example_inputs(model) -> Dict[str, torch.Tensor]:
    inputs = dict(model.dummy_inputs)
    if getattr(model.config, "is_encoder_decoder", False) and "decoder_input_ids" not in inputs:
        inputs["decoder_input_ids"] = inputs["input_ids"]
    device = next(model.parameters()).device
    return {k: v.to(device) for k, v in inputs.items()}


@torch.no_grad()
def _materialize_offsets(model, example_inputs=None) -> int:
    """Create the ``pretrained`` parameterisation's offsets by one forward in eval mode; returns
    how many attention modules hold one."""
    was_training = model.training
    model.eval()
    try:
        model(**(example_inputs if example_inputs is not None else _default_example_inputs(model)))
    finally:
        model.train(was_training)
    return sum(1 for m in model.modules() if OFFSET_PARAM in m._parameters)


def configure(model, example_inputs: Optional[Mapping[str, torch.Tensor]] = None, **options):
    """Set HardKuma ``options`` (see :data:`DEFAULT_OPTIONS`) on ``model`` and switch it to
    ``attn_implementation="hardkuma"``; returns the model.

    The options go to ``model.config.hardkuma`` (and every sub-config), so ``save_pretrained``
    keeps them and :func:`from_pretrained` restores them with the attention implementation.
    With ``parameterization="pretrained"`` one no-grad forward on ``example_inputs`` (default
    ``model.dummy_inputs``) creates the per-head offsets, so call ``configure`` before building an
    optimizer.
    """
    opts = _validated(options)
    for cfg in _all_configs(model.config):
        setattr(cfg, CONFIG_KEY, dict(opts))
    if model.config._attn_implementation != ATTN_IMPLEMENTATION:
        model.set_attn_implementation(ATTN_IMPLEMENTATION)
    if opts["parameterization"] == "pretrained":
        if _materialize_offsets(model, example_inputs) == 0:
            raise ValueError(
                f"{type(model).__name__}: no attention call went through attn_implementation='hardkuma'"
            )
    return model


def _checkpoint_offsets(path: str) -> Dict[str, torch.Tensor]:
    """The ``hardkuma_b_offset`` tensors saved in a ``save_pretrained`` folder (safetensors)."""
    from safetensors.torch import load_file

    files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
    found: Dict[str, torch.Tensor] = {}
    for name in files:
        found.update({k: v for k, v in load_file(os.path.join(path, name)).items() if k.endswith(OFFSET_PARAM)})
    return found


def from_pretrained(model_class, path: str, example_inputs=None, **kwargs):
    """``model_class.from_pretrained(path, ...)`` for a model saved after :func:`configure`:
    restores ``attn_implementation="hardkuma"`` and the options from ``config.json`` and, for the
    ``pretrained`` parameterisation, the trained per-head offsets.  Plain ``from_pretrained(path,
    attn_implementation="hardkuma")`` also works for ``split`` models (no extra parameters)."""
    model = model_class.from_pretrained(path, attn_implementation=ATTN_IMPLEMENTATION, **kwargs)
    opts = get_options(model.config)
    if opts["parameterization"] == "pretrained":
        _materialize_offsets(model, example_inputs)
        saved = _checkpoint_offsets(path)
        own = {n for n, _ in model.named_parameters() if n.endswith(OFFSET_PARAM)}
        if set(saved) != own:
            raise ValueError(f"{path}: saved offsets {sorted(saved)} do not match the model's {sorted(own)}")
        model.load_state_dict(saved, strict=False)
    return model


# ----------------------------------------------------------------------------- training
def constraint_penalty(constraint: LagrangianConstraint, stats):
    """``(penalty, logs)`` for the collected :class:`AttentionStats` ``stats`` (None: no HardKuma
    attention ran, penalty 0): ``penalty = constraint(expected L0)`` tracking the measured
    non-zero rate; ``logs`` holds ``l0`` (expected L0), ``nz`` (measured non-zero rate) and
    ``lambda``."""
    if stats is None:
        return None, {}
    penalty = constraint(stats.expected_l0, observed=stats.nonzero_rate)
    logs = {
        "l0": float(stats.expected_l0.detach()),
        "nz": float(stats.nonzero_rate),
        "lambda": constraint.multiplier,
    }
    return penalty, logs


def __getattr__(name):
    # The Trainer subclass lives in its own module: importing transformers.Trainer is slow and
    # pulls in optional dependencies, so ``import ...integrations.transformers`` does not.
    if name in ("HardKumaTrainer", "CONSTRAINT_FILE"):
        from . import hf_trainer

        return getattr(hf_trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
