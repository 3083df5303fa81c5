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


def span_examples(n, seed, length=40, span=5, fillers=30):
    """A contiguous-evidence task: a ``span``-token phrase at a random position of a ``length``-token
    text.  The phrase is ``span - 1`` filler words with the marker (``good`` = label 1, ``bad`` =
    label 0) in its middle, so the marker alone decides the label while the human rationale is the
    whole phrase: a model at the phrase's rate (``span / length``) either selects the marker plus
    scattered tokens elsewhere, or, when it is pushed to select one contiguous run, the phrase."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(fillers)]
    out = []
    for i in range(n):
        tokens = [rng.choice(words) for _ in range(length)]
        start = rng.randrange(length - span + 1)
        label = rng.randrange(2)
        tokens[start + span // 2] = "good" if label else "bad"
        rationale = [start <= j < start + span for j in range(length)]
        out.append(Example(tokens, label, id=f"span{i}", rationale=rationale))
    return out
