"""Synthetic rationale tasks with known human rationales (used by the tests and by
``benchmarks/coherence_diagnostics.py``).

- :func:`marker_examples`: each text has ``length`` tokens drawn from ``fillers`` words and exactly
  one marker, ``good`` (label 1) or ``bad`` (label 0), at a random position; the marker is the
  human rationale.
- :func:`span_examples`: a contiguous phrase of ``span`` sentiment words decides the label.

Both are deterministic functions of ``seed`` (a private ``random.Random``; the global random state
is not touched) and return :class:`~hardkuma_attention.rationale.data.Example` lists.
"""
import random

from .data import Example

__all__ = ["marker_examples", "span_examples"]


def marker_examples(n, seed, length=10, fillers=30):
    """``n`` texts of the marker task (module docstring); ids ``syn0``, ``syn1``, ..."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(fillers)]
    out = []
    for i in range(n):
        tokens = [rng.choice(words) for _ in range(length)]
        pos = rng.randrange(length)
        label = rng.randrange(2)
        tokens[pos] = "good" if label else "bad"
        out.append(Example(tokens, label, id=f"syn{i}", rationale=[j == pos for j in range(length)]))
    return out


def span_examples(n, seed, length=40, span=5, fillers=30):
    """A contiguous-evidence task: a phrase of ``span`` sentiment words at a random position of a
    ``length``-token text of fillers.  Each phrase word is ``good`` or ``bad`` at random; the label
    is the majority of the phrase (1 = more ``good``), so the classifier needs all of it; the human
    rationale is the whole phrase.  A model asked to select
    more than the phrase (e.g. ``8 / 40``) can add scattered filler tokens (several runs) or, pushed
    towards one contiguous run, extend the phrase (one run, IOU ``span / selected`` with it)."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(fillers)]
    out = []
    for i in range(n):
        tokens = [rng.choice(words) for _ in range(length)]
        start = rng.randrange(length - span + 1)
        votes = [rng.random() < 0.5 for _ in range(span)]
        for j, v in enumerate(votes):
            tokens[start + j] = "good" if v else "bad"
        label = int(2 * sum(votes) > span)
        rationale = [start <= j < start + span for j in range(length)]
        out.append(Example(tokens, label, id=f"span{i}", rationale=rationale))
    return out
