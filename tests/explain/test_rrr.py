"""RRR: penalty by hand, its parameter gradient (double backprop) vs finite differences, helpers."""
import math

import pytest
import torch
from torch import nn

from hardkuma_attention.explain.rrr import (
    RRRLoss,
    auto_lambda1,
    expand_annotation,
    find_another_explanation,
    gradient_mass_inside,
    input_gradients,
    rrr_penalty,
)


def test_input_gradient_of_linear_softmax_by_hand():
    # logits = x W; Σ_k log p_k = Σ_k l_k - C logsumexp(l)  =>  ∂/∂x = W·1 - C W p
    w = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.0, -1.0]], dtype=torch.float64)
    x = torch.tensor([[0.2, -0.7]], dtype=torch.float64)
    g, _ = input_gradients(lambda v: v @ w, x)
    p = torch.softmax(x @ w, -1)
    want = w.sum(1) - 3 * (w @ p[0])
    assert torch.allclose(g[0], want)
    ann = torch.tensor([[True, False]])
    assert rrr_penalty(g, ann).item() == pytest.approx(want[0].item() ** 2)


def small_mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()


def test_penalty_parameter_gradient_matches_finite_differences():
    model = small_mlp()
    x = torch.randn(6, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (6,))
    ann = torch.rand(6, 4) > 0.5
    loss_fn = RRRLoss(lambda1=0.7, lambda2=0.01)

    def loss():
        total, _ = loss_fn(model, x, y, ann, model.parameters())
        return total

    params = list(model.parameters())
    grads = torch.autograd.grad(loss(), params)
    eps = 1e-6
    for p, g in zip(params, grads):
        for idx in [(0,) * p.dim(), tuple(s - 1 for s in p.shape)]:
            old = p.data[idx].item()
            p.data[idx] = old + eps
            up = loss().item()
            p.data[idx] = old - eps
            down = loss().item()
            p.data[idx] = old
            assert g[idx].item() == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-8)


def test_penalty_pure_gradcheck_text_shape():
    """Text: (N, T, E) embeddings, gradient summed over E; gradcheck the penalty in the weights."""
    torch.manual_seed(1)
    emb = torch.randn(2, 5, 3, dtype=torch.float64)
    ann = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 1, 1]], dtype=torch.bool)

    def penalty(w1, w2):
        def f(e):
            return torch.tanh(e @ w1).mean(1) @ w2  # (N, T, E) -> (N, C)
        g, _ = input_gradients(f, emb, reduce_dims=(-1,))
        return rrr_penalty(g, ann)

    w1 = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    w2 = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(penalty, (w1, w2))


def test_auto_lambda1_equalises_terms():
    model = small_mlp()
    x = torch.randn(8, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (8,))
    ann = torch.ones(8, 4, dtype=torch.bool)
    lam = auto_lambda1(model, x, y, ann)
    _, parts = RRRLoss(lambda1=lam)(model, x, y, ann)
    assert lam * parts["rrr"] == pytest.approx(parts["ce"], rel=1e-6)


def test_expand_annotation_and_mass():
    g = torch.tensor([[1.0, -0.9, 0.5, 0.0], [0.1, 0.2, 0.0, -0.3]])
    a0 = torch.tensor([[False, False, False, True], [False] * 4])
    a1 = expand_annotation(a0, g)
    assert a1.tolist() == [[True, True, False, True], [False, False, False, True]]
    mass = gradient_mass_inside(g, a1)
    assert mass.tolist() == pytest.approx([1.9 / 2.4, 0.3 / 0.6])


def test_find_another_explanation_moves_to_new_features():
    """Two copies of the signal (features 0 and 1): once feature 0 is annotated, the model uses 1."""
    torch.manual_seed(0)
    n = 200
    y = torch.randint(0, 2, (n,))
    sig = (2 * y - 1).double().unsqueeze(1)
    x = torch.cat([sig, sig, torch.randn(n, 2, dtype=torch.float64)], 1)
    x[:, 0] *= 2.0  # feature 0 is the more salient copy

    def train(ann):
        torch.manual_seed(0)
        m = nn.Linear(4, 2).double()
        opt = torch.optim.Adam(m.parameters(), lr=0.05)
        loss_fn = RRRLoss(lambda1=10.0)
        for _ in range(150):
            opt.zero_grad()
            loss_fn(m, x, y, ann)[0].backward()
            opt.step()
        return m

    def grads(m):
        return input_gradients(m, x, create_graph=False)[0]

    runs = find_another_explanation(train, grads, torch.zeros(n, 4, dtype=torch.bool), rounds=2)
    g0, g1 = grads(runs[0][0]).abs().mean(0), grads(runs[1][0]).abs().mean(0)
    assert runs[1][1][:, 0].float().mean() > 0.9  # feature 0 annotated after round 0
    assert g1[0] < 0.1 * g0[0]  # model 1 no longer uses feature 0 ...
    acc = (runs[1][0](x).argmax(1) == y).float().mean()
    assert acc > 0.95  # ... and still solves the task through feature 1
