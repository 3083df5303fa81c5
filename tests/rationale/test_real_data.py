"""Readers on the shared real data (../shared/data); skipped when it is absent."""
from pathlib import Path

import pytest

from hardkuma_attention.rationale.data import read_eraser, read_sst
from hardkuma_attention.rationale.embeddings import read_glove

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def need(rel):
    p = DATA / rel
    if not p.exists():
        pytest.skip(f"{p} not available")
    return p


def test_sst_dev_counts_and_labels():
    dev = read_sst(need("sst/dev.txt"))
    assert len(dev) == 1101
    assert {ex.label for ex in dev} == {0, 1, 2, 3, 4}
    assert all(len(ex.tokens) == len(ex.token_labels) > 0 for ex in dev)
    assert len(read_sst(need("sst/dev.txt"), binary=True)) == 872  # the standard binary dev size


def test_movies_val_rationales_inside_documents():
    val = read_eraser(need("movies/val.jsonl"))
    assert len(val) == 200 and {ex.label for ex in val} == {"POS", "NEG"}
    rate = sum(sum(ex.rationale) for ex in val) / sum(len(ex) for ex in val)
    assert 0.01 < rate < 0.3
    assert all(any(ex.rationale) for ex in val)


def test_glove_is_50d(tmp_path):
    path = need("glove/glove.6B.50d.filtered.txt.gz")
    words, vectors = read_glove(path, words={"the", "movie", "good"})
    assert sorted(words) == ["good", "movie", "the"] and vectors.shape == (3, 50)
