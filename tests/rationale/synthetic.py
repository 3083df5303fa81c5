"""A synthetic rationale task shared by the tests: a marker token decides the label.

Each text has ``length`` tokens drawn from ``filler`` words and exactly one marker, ``good`` (label
1) or ``bad`` (label 0), at a random position; the marker is the human rationale.
"""
import random

from hardkuma_attention.rationale.data import Example


def marker_examples(n, seed, length=10, fillers=30):
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
