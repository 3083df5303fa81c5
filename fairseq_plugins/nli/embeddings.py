"""Pretrained word vectors in GloVe text format (``word v1 ... vD`` a line, optionally ``.gz``)."""
from __future__ import annotations

import gzip
import logging
from typing import Dict, Iterable

import torch

logger = logging.getLogger(__name__)

__all__ = ["read_glove", "pretrained_embedding_matrix"]


def read_glove(path: str, words: Iterable[str], dim: int) -> Dict[str, torch.Tensor]:
    """Vectors of ``words`` found in the GloVe file ``path`` (other lines are skipped unparsed).

    Raises ValueError naming ``path:line`` when a needed line has not ``dim`` numbers.
    """
    wanted = set(words)
    found: Dict[str, torch.Tensor] = {}
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            word, _, rest = line.rstrip("\n").partition(" ")
            if word not in wanted or word in found:
                continue
            try:
                values = [float(x) for x in rest.split()]
            except ValueError:
                raise ValueError(f"{path}:{lineno}: non-numeric value in the vector of {word!r}") from None
            if len(values) != dim:
                raise ValueError(
                    f"{path}:{lineno}: vector of {word!r} has {len(values)} values, --embed-dim is {dim}"
                )
            found[word] = torch.tensor(values)
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
