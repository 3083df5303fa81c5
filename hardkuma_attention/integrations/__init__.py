"""Integrations of HardKuma attention with other libraries.

Nothing here is imported by ``import hardkuma_attention``; import the submodule you need:

- :mod:`hardkuma_attention.integrations.transformers`: the ``"hardkuma"`` attention
  implementation for Hugging Face transformers (``attn_implementation="hardkuma"``), per-model
  options (:func:`~hardkuma_attention.integrations.transformers.configure`) and
  :class:`~hardkuma_attention.integrations.transformers.HardKumaTrainer` (the L0 constraint in
  the HF ``Trainer``).  Needs ``pip install -e ".[transformers]"``.

Plain PyTorch models (``nn.MultiheadAttention``) are converted by :func:`hardkuma_attention.convert`.
"""
