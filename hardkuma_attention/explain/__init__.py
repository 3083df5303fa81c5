r"""Explaining trained classifiers.

- :mod:`.mask`  post-hoc rationales by input-mask optimisation (Brinner & Zarrieß): Gaussian-kernel
  or logit masks, sigmoid or HardKuma gates, batched, with chunking of long inputs;
- :mod:`.rrr`   right-for-the-right-reasons training (Ross, Hughes & Doshi-Velez 2017): input-gradient
  penalty by double backpropagation, lambda auto-scaling, find-another-explanation;
- :mod:`.rrr_text` RRR for a ``hardkuma-rationale train`` text classifier (``train --rrr``: the
  trainer's ``extra_loss`` hook, A = tokens outside the human rationale) and ``rrr-eval``
  (accuracy, input-gradient mass inside human rationales);
- :mod:`.decoy` decoy digits (scikit-learn's 8x8 digits with a class-dependent corner patch), MLP
  training with / without RRR, 2-D image masks;
- :mod:`.text`  explaining a ``hardkuma-rationale train`` text classifier: mask optimisation vs
  input×gradient, integrated gradients and occlusion, token F1 / IOU-F1 / AUPRC vs human spans, ERASER
  faithfulness with AOPC;
- :mod:`.models` the classifier of a ``hardkuma-rationale train`` model as a function of embeddings
  (:func:`~.models.full_text_logits`) and :func:`~.models.eval_mode` (eval mode inside, every
  module's mode restored on exit);
- :mod:`.plot`  PNG of image masks;
- :mod:`.cli`   ``python -m hardkuma_attention.explain decoy-digits|mask|rrr-eval``.

Importing this package imports torch only (scikit-learn / matplotlib load when used).
"""
from .mask import MaskConfig, MaskResult, optimise_masks

__all__ = ["MaskConfig", "MaskResult", "optimise_masks"]
