r"""Explaining trained classifiers.

- :mod:`.mask`  post-hoc rationales by input-mask optimisation (Brinner & Zarrieß): Gaussian-kernel
  or logit masks, sigmoid or HardKuma gates, batched, with chunking of long inputs;
- :mod:`.rrr`   right-for-the-right-reasons training (Ross, Hughes & Doshi-Velez 2017): input-gradient
  penalty by double backpropagation, lambda auto-scaling, find-another-explanation;
- :mod:`.decoy` decoy digits (scikit-learn's 8x8 digits with a class-dependent corner patch), MLP
  training with / without RRR, 2-D image masks;
- :mod:`.text`  explaining a ``hardkuma-rationale train`` text classifier: mask optimisation vs
  input×gradient and integrated gradients, token F1 / IOU-F1 / AUPRC vs human spans, ERASER
  faithfulness with AOPC;
- :mod:`.plot`  PNG of image masks;
- :mod:`.cli`   ``python -m hardkuma_attention.explain decoy-digits|mask``.

Importing this package imports torch only (scikit-learn / matplotlib load when used).
"""
from .mask import MaskConfig, MaskResult, optimise_masks

__all__ = ["MaskConfig", "MaskResult", "optimise_masks"]
