r"""Vocabulary and pre-trained embeddings from a GloVe-format text file.

GloVe format: one word a line, ``word v_1 ... v_d`` (space separated), plain text or ``.gz``.

:class:`Vocab` maps tokens to ids (``0`` = ``<pad>``, ``1`` = ``<unk>``); with ``lowercase=True``
(the default, for the uncased GloVe 6B vectors) tokens are lower-cased before look-up.
:func:`build_vocab` takes the words of the training data (``min_count``) plus every word of the
embedding file, so dev/test words covered by GloVe are not ``<unk>``.
:func:`load_embedding_matrix` returns a ``(len(vocab), d)`` float tensor: GloVe rows where known,
``N(0, 0.1^2)`` rows for training words without a vector, zeros for ``<pad>``.
"""
from __future__ import annotations

from collections import Counter
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch

from .data import DataFormatError, text_lines

__all__ = ["Vocab", "PAD", "UNK", "read_glove", "build_vocab", "load_embedding_matrix"]

PAD, UNK = "<pad>", "<unk>"


class Vocab:
    """Token <-> id map.  ``itos[0] = <pad>``, ``itos[1] = <unk>``."""

    def __init__(self, itos: Sequence[str], lowercase: bool = True):
        if list(itos[:2]) != [PAD, UNK]:
            raise ValueError(f"itos must start with {PAD!r}, {UNK!r}")
        self.itos: List[str] = list(itos)
        self.lowercase = bool(lowercase)
        self.stoi: Dict[str, int] = {w: i for i, w in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def normalize(self, token: str) -> str:
        return token.lower() if self.lowercase else token

    def encode(self, tokens: Iterable[str]) -> List[int]:
        unk = self.stoi[UNK]
        return [self.stoi.get(self.normalize(t), unk) for t in tokens]

    def to_dict(self) -> dict:
        return {"itos": self.itos, "lowercase": self.lowercase}

    @classmethod
    def from_dict(cls, state: dict) -> "Vocab":
        return cls(state["itos"], state["lowercase"])


def read_glove(path, words: Optional[set] = None, dim: Optional[int] = None,
               dim_flag: str = "dim") -> Tuple[List[str], torch.Tensor]:
    """Read a GloVe text file; keep only ``words`` when given.  Returns ``(words, (n, d) tensor)``.

    Raises :class:`~.data.DataFormatError` naming ``path:line`` for a row whose dimension differs
    from the first, a first row of other than ``dim`` values when ``dim`` is given (the message
    names ``dim_flag``, e.g. ``--embed-dim``), a non-numeric entry, a word2vec header line
    (``<count> <dim>``), bytes that are not UTF-8 or a broken gzip stream; ``path:`` when the file
    holds no vector.
    """
    out_words, rows, first_dim = [], [], None
    for lineno, line in text_lines(path, "embeddings file"):
        parts = line.rstrip().split(" ")
        if len(parts) < 2:
            continue
        if first_dim is None:
            if len(parts) == 2 and all(p.isdigit() for p in parts):
                raise DataFormatError(path, lineno, f"a word2vec header ({line.strip()!r}), not a GloVe row: "
                                                    "remove the first line (GloVe files have no header)")
            first_dim = len(parts) - 1
            if dim is not None and first_dim != dim:
                raise DataFormatError(path, lineno, f"vectors have {first_dim} values, {dim_flag} is {dim}")
        elif len(parts) - 1 != first_dim:
            raise DataFormatError(path, lineno,
                                  f"expected {first_dim} values (the first row's dimension), got {len(parts) - 1}")
        word = parts[0]
        if words is not None and word not in words:
            continue
        try:
            rows.append([float(x) for x in parts[1:]])
        except ValueError:
            raise DataFormatError(path, lineno, "non-numeric vector entry") from None
        out_words.append(word)
    if first_dim is None:
        raise DataFormatError(path, None, "no vectors found (expected 'word v_1 ... v_d' rows)")
    return out_words, torch.tensor(rows, dtype=torch.float32).reshape(len(rows), first_dim)


def build_vocab(
    token_lists: Iterable[Sequence[str]],
    embedding_words: Iterable[str] = (),
    min_count: int = 1,
    lowercase: bool = True,
) -> Vocab:
    """Vocabulary = training tokens seen ``>= min_count`` times, then embedding words (sorted)."""
    counts = Counter(t.lower() if lowercase else t for toks in token_lists for t in toks)
    words = sorted(w for w, c in counts.items() if c >= min_count)
    seen = set(words) | {PAD, UNK}
    extra = sorted(w for w in set(embedding_words) if w not in seen)
    return Vocab([PAD, UNK] + words + extra, lowercase=lowercase)


def load_embedding_matrix(vocab: Vocab, glove_words: Sequence[str], glove_vectors: torch.Tensor,
                          seed: int = 0) -> Tuple[torch.Tensor, int]:
    """``(len(vocab), d)`` matrix and the number of vocabulary words found in GloVe."""
    gen = torch.Generator().manual_seed(seed)
    dim = glove_vectors.size(1)
    weight = torch.randn(len(vocab), dim, generator=gen) * 0.1
    weight[0] = 0.0
    index = {w: i for i, w in enumerate(glove_words)}
    found = 0
    for i, word in enumerate(vocab.itos):
        j = index.get(word)
        if j is not None:
            weight[i] = glove_vectors[j]
            found += 1
    return weight, found
