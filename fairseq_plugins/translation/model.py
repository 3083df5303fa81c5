r"""``transformer_hardkuma``: fairseq's transformer with HardKuma attention where asked.

No fork of fairseq's transformer: the encoder/decoder layers subclass fairseq's and override only
their attention build hooks (``build_self_attention`` / ``build_encoder_attention``, as
fairseq's ``examples/linformer`` does), and the encoder/decoder override ``build_*_layer`` to
build those layers.  Which attention types use HardKuma gates is chosen by
``--hardkuma-attention``:

=========  =====================  =====================  ==================
choice     encoder self-attention decoder self-attention encoder-decoder
=========  =====================  =====================  ==================
``none``   softmax                softmax                softmax
``cross``  softmax                softmax                HardKuma
``self``   HardKuma               HardKuma               softmax
``all``    HardKuma               HardKuma               HardKuma
=========  =====================  =====================  ==================

``none`` is the softmax baseline with the very same code path and parameter count.  Stats keys
reported to :func:`hardkuma_attention.collect_attention_stats`: ``encoder_self``,
``decoder_self``, ``cross``.
"""
from __future__ import annotations

from dataclasses import dataclass

from fairseq.distributed import fsdp_wrap
from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import (
    TransformerConfig,
    TransformerDecoderBase,
    TransformerEncoderBase,
    TransformerModel,
)
from fairseq.models.transformer.transformer_legacy import base_architecture
from fairseq.modules.checkpoint_activations import checkpoint_wrapper
from fairseq.modules.transformer_layer import TransformerDecoderLayerBase, TransformerEncoderLayerBase

from hardkuma_attention.config import DEFAULT_AB_RANGE, NORMALIZE_MODES, GateConfig
from hardkuma_attention.distributions import DEFAULT_SUPPORT

from .hardkuma_multihead_attention import HardKumaMultiheadAttention

__all__ = ["HardKumaOptions", "HardKumaTransformerModel", "ATTENTION_CHOICES", "STATS_KEYS", "gate_from_args"]

ATTENTION_CHOICES = ("none", "cross", "self", "all")
STATS_KEYS = ("encoder_self", "decoder_self", "cross")


def gate_from_args(args) -> GateConfig:
    """The :class:`~hardkuma_attention.config.GateConfig` of the ``--hardkuma-normalize``,
    ``--hardkuma-support-left/right`` and ``--hardkuma-ab-max`` args (absent: the architecture's
    defaults, ``softmax``, ``DEFAULT_SUPPORT``, ``DEFAULT_AB_RANGE``); ``ab_range`` is
    ``(DEFAULT_AB_RANGE[0], --hardkuma-ab-max)``."""
    normalize = getattr(args, "hardkuma_normalize", None) or "softmax"
    if normalize not in NORMALIZE_MODES:
        raise ValueError(f"--hardkuma-normalize must be one of {NORMALIZE_MODES}, got {normalize!r}")
    return GateConfig.preset(
        "attention", normalize=normalize,
        support=(float(getattr(args, "hardkuma_support_left", DEFAULT_SUPPORT[0])),
                 float(getattr(args, "hardkuma_support_right", DEFAULT_SUPPORT[1]))),
        ab_range=(DEFAULT_AB_RANGE[0], float(getattr(args, "hardkuma_ab_max", DEFAULT_AB_RANGE[1]))),
    )


@dataclass(frozen=True)
class HardKumaOptions:
    """Which attentions use HardKuma gates (``attention``), and how (``gate``), read from the
    ``--hardkuma-*`` args."""

    attention: str = "cross"
    gate: GateConfig = GateConfig.preset("attention", normalize="softmax")

    def __post_init__(self):
        if self.attention not in ATTENTION_CHOICES:
            raise ValueError(f"--hardkuma-attention must be one of {ATTENTION_CHOICES}, got {self.attention!r}")

    @property
    def self_attention(self) -> bool:
        return self.attention in ("self", "all")

    @property
    def cross_attention(self) -> bool:
        return self.attention in ("cross", "all")

    def module_kwargs(self, stats_key: str) -> dict:
        return {"gate": self.gate, "stats_key": stats_key}

    @classmethod
    def from_args(cls, args) -> "HardKumaOptions":
        return cls(attention=getattr(args, "hardkuma_attention", "cross"), gate=gate_from_args(args))


def _wrap_layer(layer, cfg):
    """fairseq's activation checkpointing / FSDP wrapping of a freshly built layer."""
    if cfg.checkpoint_activations:
        layer = checkpoint_wrapper(layer, offload_to_cpu=cfg.offload_activations)
    min_params_to_wrap = cfg.min_params_to_wrap if not cfg.checkpoint_activations else 0
    return fsdp_wrap(layer, min_num_params=min_params_to_wrap)


class HardKumaEncoderLayer(TransformerEncoderLayerBase):
    def __init__(self, cfg, options: HardKumaOptions, return_fc: bool = False):
        # a plain attribute, set before nn.Module.__init__ because the parent's __init__ calls
        # build_self_attention, which reads it
        self.hardkuma_options = options
        super().__init__(cfg, return_fc=return_fc)

    def build_self_attention(self, embed_dim, cfg):
        if not self.hardkuma_options.self_attention:
            return super().build_self_attention(embed_dim, cfg)
        return HardKumaMultiheadAttention(
            embed_dim, cfg.encoder.attention_heads, dropout=cfg.attention_dropout, self_attention=True,
            q_noise=self.quant_noise, qn_block_size=self.quant_noise_block_size,
            **self.hardkuma_options.module_kwargs("encoder_self"),
        )


class HardKumaDecoderLayer(TransformerDecoderLayerBase):
    def __init__(self, cfg, options: HardKumaOptions, no_encoder_attn: bool = False):
        self.hardkuma_options = options  # read by the build hooks during the parent's __init__
        super().__init__(cfg, no_encoder_attn=no_encoder_attn)

    def build_self_attention(self, embed_dim, cfg, add_bias_kv=False, add_zero_attn=False):
        if not self.hardkuma_options.self_attention:
            return super().build_self_attention(embed_dim, cfg, add_bias_kv, add_zero_attn)
        if add_bias_kv or add_zero_attn or cfg.cross_self_attention:
            raise ValueError("HardKuma self-attention supports neither add_bias_kv/add_zero_attn nor --cross-self-attention")
        return HardKumaMultiheadAttention(
            embed_dim, cfg.decoder.attention_heads, dropout=cfg.attention_dropout, self_attention=True,
            q_noise=self.quant_noise, qn_block_size=self.quant_noise_block_size,
            **self.hardkuma_options.module_kwargs("decoder_self"),
        )

    def build_encoder_attention(self, embed_dim, cfg):
        if not self.hardkuma_options.cross_attention:
            return super().build_encoder_attention(embed_dim, cfg)
        return HardKumaMultiheadAttention(
            embed_dim, cfg.decoder.attention_heads, kdim=cfg.encoder.embed_dim, vdim=cfg.encoder.embed_dim,
            dropout=cfg.attention_dropout, encoder_decoder_attention=True,
            q_noise=self.quant_noise, qn_block_size=self.quant_noise_block_size,
            **self.hardkuma_options.module_kwargs("cross"),
        )


class HardKumaTransformerEncoder(TransformerEncoderBase):
    def __init__(self, cfg, dictionary, embed_tokens, options: HardKumaOptions):
        self.hardkuma_options = options  # read by build_encoder_layer during the parent's __init__
        super().__init__(cfg, dictionary, embed_tokens)

    def build_encoder_layer(self, cfg):
        return _wrap_layer(HardKumaEncoderLayer(cfg, self.hardkuma_options, return_fc=self.return_fc), cfg)


class HardKumaTransformerDecoder(TransformerDecoderBase):
    def __init__(self, cfg, dictionary, embed_tokens, options: HardKumaOptions, no_encoder_attn=False):
        self.hardkuma_options = options  # read by build_decoder_layer during the parent's __init__
        super().__init__(cfg, dictionary, embed_tokens, no_encoder_attn=no_encoder_attn)

    def build_decoder_layer(self, cfg, no_encoder_attn=False):
        return _wrap_layer(HardKumaDecoderLayer(cfg, self.hardkuma_options, no_encoder_attn), cfg)


@register_model("transformer_hardkuma")
class HardKumaTransformerModel(TransformerModel):
    """fairseq transformer (legacy argparse flavour) with HardKuma attention; see module doc."""

    @classmethod
    def add_args(cls, parser):
        super().add_args(parser)
        parser.add_argument("--hardkuma-attention", choices=ATTENTION_CHOICES,
                            help="attention types with HardKuma gates: none (softmax baseline), "
                                 "cross (encoder-decoder), self (encoder+decoder self), all")
        parser.add_argument("--hardkuma-normalize", choices=NORMALIZE_MODES,
                            help="softmax (default): gate*softmax(score_a), renormalised over the open "
                                 "cells; sum: gates / row sum; none: raw gates (paper)")
        parser.add_argument("--hardkuma-support-left", type=float, help="HardKuma stretch l (< 0)")
        parser.add_argument("--hardkuma-support-right", type=float, help="HardKuma stretch r (> 1)")
        parser.add_argument("--hardkuma-ab-max", type=float, help="upper clamp of a and b")

    @classmethod
    def build_encoder(cls, args, src_dict, embed_tokens):
        return HardKumaTransformerEncoder(
            TransformerConfig.from_namespace(args), src_dict, embed_tokens, HardKumaOptions.from_args(args)
        )

    @classmethod
    def build_decoder(cls, args, tgt_dict, embed_tokens):
        return HardKumaTransformerDecoder(
            TransformerConfig.from_namespace(args), tgt_dict, embed_tokens, HardKumaOptions.from_args(args),
            no_encoder_attn=args.no_cross_attention,
        )


@register_model_architecture("transformer_hardkuma", "transformer_hardkuma")
def transformer_hardkuma_base(args):
    """Transformer base (6 layers, 512-d, 8 heads) with HardKuma cross-attention, gate * softmax."""
    args.hardkuma_attention = getattr(args, "hardkuma_attention", None) or "cross"
    args.hardkuma_normalize = getattr(args, "hardkuma_normalize", None) or "softmax"
    args.hardkuma_support_left = getattr(args, "hardkuma_support_left", None) or DEFAULT_SUPPORT[0]
    args.hardkuma_support_right = getattr(args, "hardkuma_support_right", None) or DEFAULT_SUPPORT[1]
    args.hardkuma_ab_max = getattr(args, "hardkuma_ab_max", None) or DEFAULT_AB_RANGE[1]
    base_architecture(args)


@register_model_architecture("transformer_hardkuma", "transformer_hardkuma_small")
def transformer_hardkuma_small(args):
    """Small CPU-sized transformer for Multi30k: 3+3 layers, 256-d, 4 heads, FFN 512, dropout 0.2."""
    args.encoder_embed_dim = getattr(args, "encoder_embed_dim", 256)
    args.encoder_ffn_embed_dim = getattr(args, "encoder_ffn_embed_dim", 512)
    args.encoder_layers = getattr(args, "encoder_layers", 3)
    args.encoder_attention_heads = getattr(args, "encoder_attention_heads", 4)
    args.decoder_embed_dim = getattr(args, "decoder_embed_dim", 256)
    args.decoder_ffn_embed_dim = getattr(args, "decoder_ffn_embed_dim", 512)
    args.decoder_layers = getattr(args, "decoder_layers", 3)
    args.decoder_attention_heads = getattr(args, "decoder_attention_heads", 4)
    args.dropout = getattr(args, "dropout", 0.2)
    transformer_hardkuma_base(args)


@register_model_architecture("transformer_hardkuma", "transformer_hardkuma_tiny")
def transformer_hardkuma_tiny(args):
    """Tiny model for tests: 1+1 layers, 32-d, 2 heads."""
    args.encoder_embed_dim = getattr(args, "encoder_embed_dim", 32)
    args.encoder_ffn_embed_dim = getattr(args, "encoder_ffn_embed_dim", 64)
    args.encoder_layers = getattr(args, "encoder_layers", 1)
    args.encoder_attention_heads = getattr(args, "encoder_attention_heads", 2)
    args.decoder_embed_dim = getattr(args, "decoder_embed_dim", 32)
    args.decoder_ffn_embed_dim = getattr(args, "decoder_ffn_embed_dim", 64)
    args.decoder_layers = getattr(args, "decoder_layers", 1)
    args.decoder_attention_heads = getattr(args, "decoder_attention_heads", 2)
    transformer_hardkuma_base(args)
