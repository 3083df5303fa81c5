"""A synthetic rationale task shared by the tests: a marker token decides the label.

Each text has ``length`` tokens drawn from ``filler`` words.  A fraction ``1 - p_none`` holds
exactly one marker, ``good`` (label 1) or ``bad`` (label 0), at a random position, which is the
human rationale; the other texts have no marker and a random label.  Those make the *absence*
of a selected marker uninformative, so a model must select both kinds of marker (otherwise it
could select only ``good`` and read "nothing selected" as ``bad``).
"""
import random

from hardkuma_attention.rationale.data import Example


def marker_examples(n, seed, length=10, fillers=30, p_none=0.0):
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(fillers)]
    out = []
    for i in range(n):
        tokens = [rng.choice(words) for _ in range(length)]
        label = rng.randrange(2)
        if rng.random() < p_none:
            out.append(Example(tokens, label, id=f"syn{i}", rationale=[False] * length))
            continue
        pos = rng.randrange(length)
        tokens[pos] = "good" if label else "bad"
        out.append(Example(tokens, label, id=f"syn{i}", rationale=[j == pos for j in range(length)]))
    return out
