"""Pretrained word vectors in GloVe text format (``word v1 ... vD`` a line, optionally ``.gz``)."""
from __future__ import annotations

import logging
from typing import Dict, Iterable

import torch

from hardkuma_attention.rationale.embeddings import read_glove as _read_glove_rows

logger = logging.getLogger(__name__)

__all__ = ["read_glove", "pretrained_embedding_matrix"]


def read_glove(path: str, words: Iterable[str], dim: int) -> Dict[str, torch.Tensor]:
    """Vectors of ``words`` found in the GloVe file ``path`` (the first row of a repeated word).

    The file is read and checked by the rationale library's reader
    (:func:`hardkuma_attention.rationale.embeddings.read_glove`: one ``path:line`` error for a row
    of another dimension, a non-numeric entry, a word2vec header, bad UTF-8 or gzip); a first row
    of other than ``dim`` values is a ValueError naming ``path:line`` and ``--embed-dim``.
    """
    found_words, vectors = _read_glove_rows(path, words=set(words), dim=dim, dim_flag="--embed-dim")
    found: Dict[str, torch.Tensor] = {}
    for word, vector in zip(found_words, vectors):
        found.setdefault(word, vector)
    return found


def pretrained_embedding_matrix(path: str, symbols, padding_idx: int, dim: int, seed: int = 0) -> torch.Tensor:
    """(V, dim) matrix: the GloVe vector of each symbol, a fixed random vector for the others
    (Parikh et al. hash OOV words to random vectors), every row scaled to unit L2 norm, the padding
    row zero."""
    vectors = read_glove(path, symbols, dim)
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(len(symbols), dim, generator=gen)
    for i, sym in enumerate(symbols):
        if sym in vectors:
            weight[i] = vectors[sym]
    weight = weight / weight.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    weight[padding_idx] = 0
    logger.info(f"[nli] {path}: vectors for {len(vectors)}/{len(symbols)} dictionary symbols")
    return weight
