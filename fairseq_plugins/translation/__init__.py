"""Translation with HardKuma attention (issue 5): importing registers with fairseq

- model ``transformer_hardkuma`` and architectures ``transformer_hardkuma`` (base size),
  ``transformer_hardkuma_small`` (3+3 layers, 256-d, 4 heads: Multi30k on CPU),
  ``transformer_hardkuma_tiny`` (tests); ``--hardkuma-attention none|cross|self|all``,
  ``--hardkuma-normalize softmax|sum|none`` (:mod:`.model`);
- criterion ``label_smoothed_cross_entropy_l0`` (:mod:`.criterion`);
- :class:`.hardkuma_multihead_attention.HardKumaMultiheadAttention`, the fairseq attention module.

Recipe: ``recipes/multi30k/``.
"""
from .criterion import LabelSmoothedCrossEntropyL0Criterion
from .hardkuma_multihead_attention import HardKumaMultiheadAttention
from .model import HardKumaOptions, HardKumaTransformerModel

__all__ = [
    "HardKumaMultiheadAttention",
    "HardKumaOptions",
    "HardKumaTransformerModel",
    "LabelSmoothedCrossEntropyL0Criterion",
]
