"""Occlusion scores against hand-computed values on a tiny linear classifier (and captum, if installed)."""
import math

import pytest
import torch

from hardkuma_attention.explain.text import occlusion_scores


def sigmoid(v):
    return 1 / (1 + math.exp(-v))


def linear_classifier(emb, valid):
    """Bag of embeddings: logits = (Σ_t valid_t x_t) W with W = [0, 1] (E = 1), so
    p(class 1) = sigmoid(Σ_t valid_t x_t)."""
    s = (emb[..., 0] * valid.to(emb.dtype)).sum(1)
    return torch.stack([torch.zeros_like(s), s], -1)


def batch():
    # text 0: x = [1, -0.5, 2] (3 tokens); text 1: x = [0.4, 1.5] and one padding position
    emb = torch.tensor([[1.0, -0.5, 2.0], [0.4, 1.5, 9.0]], dtype=torch.float64).unsqueeze(-1)
    valid = torch.tensor([[True, True, True], [True, True, False]])
    return emb, valid


def test_window_1_remove_by_hand():
    emb, valid = batch()
    s = occlusion_scores(linear_classifier, emb, valid, torch.tensor([1, 0]), window=1, mode="remove")
    full0 = sigmoid(2.5)
    want0 = [full0 - sigmoid(1.5), full0 - sigmoid(3.0), full0 - sigmoid(0.5)]
    # text 1, target class 0: p0 = 1 - sigmoid(sum)
    full1 = 1 - sigmoid(1.9)
    want1 = [full1 - (1 - sigmoid(1.5)), full1 - (1 - sigmoid(0.4)), 0.0]
    assert s[0].tolist() == pytest.approx(want0)
    assert s[1].tolist() == pytest.approx(want1)


def test_window_2_averages_the_windows_containing_each_token():
    emb, valid = batch()
    s = occlusion_scores(linear_classifier, emb, valid, torch.tensor([1, 1]), window=2, mode="remove", max_rows=2)
    full0 = sigmoid(2.5)
    d0, d1 = full0 - sigmoid(2.0), full0 - sigmoid(1.0)  # windows [0, 2) and [1, 3)
    assert s[0].tolist() == pytest.approx([d0, (d0 + d1) / 2, d1])
    # text 1 has 2 tokens: one window [0, 2), everything removed -> sum 0
    d = sigmoid(1.9) - sigmoid(0.0)
    assert s[1].tolist() == pytest.approx([d, d, 0.0])


def test_window_3_longer_than_text_occludes_all_of_it():
    emb, valid = batch()
    s = occlusion_scores(linear_classifier, emb, valid, torch.tensor([1, 1]), window=3, mode="remove")
    assert s[1].tolist() == pytest.approx([sigmoid(1.9) - 0.5, sigmoid(1.9) - 0.5, 0.0])
    assert s[0].tolist() == pytest.approx([sigmoid(2.5) - 0.5] * 3)


def test_baseline_mode_replaces_embeddings():
    emb, valid = batch()
    b = torch.tensor([0.25], dtype=torch.float64)
    s = occlusion_scores(linear_classifier, emb, valid, torch.tensor([1, 1]), window=1, mode="baseline", baseline=b)
    full0 = sigmoid(2.5)
    assert s[0].tolist() == pytest.approx([full0 - sigmoid(2.5 - 1.0 + 0.25), full0 - sigmoid(2.5 + 0.5 + 0.25),
                                           full0 - sigmoid(2.5 - 2.0 + 0.25)])
    assert s[1, 2].item() == 0.0


def test_bad_arguments():
    emb, valid = batch()
    with pytest.raises(ValueError, match="window"):
        occlusion_scores(linear_classifier, emb, valid, torch.tensor([1, 1]), window=0)
    with pytest.raises(ValueError, match="baseline"):
        occlusion_scores(linear_classifier, emb, valid, torch.tensor([1, 1]), mode="baseline")


def test_matches_captum_occlusion_in_baseline_mode():
    captum_attr = pytest.importorskip("captum.attr")
    torch.manual_seed(0)
    emb = torch.randn(3, 6, 4, dtype=torch.float64)
    valid = torch.ones(3, 6, dtype=torch.bool)  # captum slides over every position: no padding here
    w = torch.randn(4, 3, dtype=torch.float64)

    def f(e, v):
        return torch.tanh(e @ w).mean(1) * 3

    target = torch.tensor([0, 2, 1])
    base = torch.randn(4, dtype=torch.float64)
    ours = occlusion_scores(f, emb, valid, target, window=2, mode="baseline", baseline=base, max_rows=5)
    theirs = captum_attr.Occlusion(lambda e: torch.softmax(f(e, None), -1)).attribute(
        emb, sliding_window_shapes=(2, 4), strides=(1, 4), baselines=base.expand_as(emb), target=target)
    theirs = theirs.to(torch.float64)  # captum accumulates in float32
    assert torch.allclose(ours, theirs[..., 0], atol=1e-6)
    assert torch.allclose(theirs, theirs[..., :1].expand_as(theirs))
