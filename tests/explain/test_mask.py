"""Input-mask optimisation: loss terms by hand, a planted marker token, chunking."""
import math

import pytest
import torch

from hardkuma_attention.explain.mask import (
    KernelMask,
    MaskConfig,
    MaskGates,
    image_positions,
    kernel_logits,
    mask_loss_terms,
    merge_chunks,
    optimise_masks,
    split_chunks,
    total_variation,
)


def linear_sum_model(w):
    """logits = (Σ_t x_t) @ w, a tiny classifier with a hand-computable output."""
    def f(emb, valid):
        return (emb * valid.unsqueeze(-1).float()).sum(1) @ w
    return f


def test_loss_terms_match_hand_computation():
    w = torch.tensor([[1.0, -1.0], [0.5, 2.0]])  # D=2 -> C=2
    model = linear_sum_model(w)
    emb = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]]])
    valid = torch.tensor([[True, True, False]])
    baseline = torch.tensor([0.5, -0.5])
    mask = torch.tensor([[0.8, 0.3, 0.9]])
    target = torch.tensor([1])
    sigma_pen = torch.tensor([0.25])
    cfg = MaskConfig(lambda_w=1.0, lambda_sigma=1.2)
    size = cfg.lambda_w * ((0.8 + 0.3) / 2) ** 2
    terms = mask_loss_terms(model, emb, baseline, valid, mask, target, torch.tensor([size]), sigma_pen, cfg)

    def probs(x0, x1):  # two valid tokens, sum then linear
        s = [x0[0] + x1[0], x0[1] + x1[1]]
        l0 = s[0] * 1.0 + s[1] * 0.5
        l1 = s[0] * -1.0 + s[1] * 2.0
        p1 = 1 / (1 + math.exp(l0 - l1))
        return 1 - p1, p1

    b = (0.5, -0.5)
    keep = [tuple(m * e + (1 - m) * bb for e, bb in zip(x, b)) for m, x in ((0.8, (1, 0)), (0.3, (0, 1)))]
    comp = [tuple((1 - m) * e + m * bb for e, bb in zip(x, b)) for m, x in ((0.8, (1, 0)), (0.3, (0, 1)))]
    _, p_keep = probs(*keep)
    _, p_comp = probs(*comp)
    assert terms.keep_nll.item() == pytest.approx(-math.log(p_keep), rel=1e-5)
    assert terms.complement_nll.item() == pytest.approx(-math.log(1 - p_comp), rel=1e-5)
    expected = -math.log(p_keep) - math.log(1 - p_comp) + size + 1.2 * 0.25
    assert terms.total.item() == pytest.approx(expected, rel=1e-5)


def test_kernel_logits_by_hand():
    weight = torch.tensor([[1.2, -0.5, 2.0]])
    log_sigma = torch.log(torch.tensor([[2.0, 1.0, 0.5]]))
    valid = torch.tensor([[True, True, False]])
    pos = torch.arange(3.0).unsqueeze(-1)
    got = kernel_logits(weight, log_sigma, pos, valid)
    for i in range(3):
        want = sum(weight[0, j].item() * math.exp(-((i - j) ** 2) / torch.exp(log_sigma[0, j]).item() ** 2)
                   for j in range(2))
        assert got[0, i].item() == pytest.approx(want, rel=1e-5)


def test_total_variation_by_hand():
    m = torch.tensor([[0.0, 1.0, 1.0, 1.0]])  # 2x2: [[0,1],[1,1]]
    # vertical pairs: |1-0|, |1-1|; horizontal: |1-0|, |1-1| -> mean 0.5
    assert total_variation(m, (2, 2)).item() == pytest.approx(0.5)


def marker_problem(bsz=6, length=12, dim=8, seed=0):
    """Random tokens orthogonal to a marker direction u; one marker token per row at a known place.
    Classifier: logit_1 = 3 * Σ_t <x_t, u> - 1.5, logit_0 = 0: class 1 iff the marker is present."""
    g = torch.Generator().manual_seed(seed)
    u = torch.zeros(dim)
    u[0] = 1.0
    emb = torch.randn(bsz, length, dim, generator=g)
    emb[..., 0] = 0.0
    where = torch.randint(1, length - 1, (bsz,), generator=g)
    emb[torch.arange(bsz), where] = u
    valid = torch.ones(bsz, length, dtype=torch.bool)

    def model(x, v):
        s = (x * v.unsqueeze(-1).float()).sum(1) @ u
        return torch.stack([torch.zeros_like(s), 3.0 * s - 1.5], -1)
    return model, emb, valid, where


@pytest.mark.parametrize("parameterization,gate", [("kernel", "sigmoid"), ("logit", "sigmoid"),
                                                   ("kernel", "hardkuma")])
def test_recovers_planted_marker(parameterization, gate):
    torch.manual_seed(0)
    model, emb, valid, where = marker_problem()
    cfg = MaskConfig(parameterization=parameterization, gate_type=gate, max_steps=300, l0_target=0.1)
    res = optimise_masks(model, emb, valid, config=cfg)
    assert (res.target == 1).all()
    rows = torch.arange(len(where))
    assert (res.mask[rows, where] > 0.9).all(), res.mask
    if parameterization == "kernel":
        # the σ reward favours spans: the marker lies in a kept span of at most half the input
        assert ((res.mask > 0.5).sum(1) <= 6).all(), res.mask
    else:
        assert torch.equal(res.mask.argmax(1), where), res.mask
        assert ((res.mask > 0.5).sum(1) <= 2).all(), res.mask
    assert (res.p_keep > 0.5).all() and (res.p_complement < 0.5).all()


def test_chunks_round_trip():
    emb = torch.randn(2, 7, 3)
    valid = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    chunks, cvalid, index = split_chunks(emb, valid, 3)
    assert [i[0] for i in index] == [0, 0, 0, 1, 1]
    assert int(cvalid.sum()) == int(valid.sum())
    values = chunks[..., 0] * cvalid
    back = merge_chunks(values, index, (2, 7))
    assert torch.equal(back, emb[..., 0] * valid)


def test_image_positions_and_bad_input():
    pos = image_positions(2, 3)
    assert pos.tolist()[:4] == [[0, 0], [0, 1], [0, 2], [1, 0]]
    model, emb, valid, _ = marker_problem(bsz=1)
    with pytest.raises(ValueError, match="valid"):
        optimise_masks(model, emb, valid.long())
    with pytest.raises(ValueError, match="parameterization"):
        MaskConfig(parameterization="gauss")


def test_config_defaults_are_the_explain_controller_and_rationale_gate():
    from hardkuma_attention.config import ControllerConfig, GateConfig

    cfg = MaskConfig()
    assert cfg.gate_type == "sigmoid" and cfg.l0_target == 0.1
    assert cfg.controller == ControllerConfig.preset("explain") and cfg.gate == GateConfig.preset("rationale")
    # the controller mask.py hard-coded before #13: alpha 0.9, lr 0.05, lambda_init 1, lambda_max 10
    gates = MaskGates(MaskConfig(gate_type="hardkuma"), torch.zeros(4, 1), torch.ones(2, 4, dtype=torch.bool))
    assert len(gates.constraints) == 2
    c = gates.constraints[0]
    assert (c.target, c.alpha, c.lr, c.multiplier, c.lambda_min, c.lambda_max, c.equality, c.damping) == \
        (0.1, 0.9, 0.05, 1.0, 1e-12, 10.0, False, 0.0)
    assert MaskGates(cfg, torch.zeros(4, 1), torch.ones(2, 4, dtype=torch.bool)).constraints is None


def test_config_refuses_a_string_gate_and_bad_values():
    with pytest.raises(TypeError, match="gate_type"):
        MaskConfig(gate="hardkuma")
    with pytest.raises(TypeError, match="ControllerConfig"):
        MaskConfig(controller={"lr": 0.1})
    with pytest.raises(ValueError, match="gate_type"):
        MaskConfig(gate_type="bernoulli")
    with pytest.raises(ValueError, match="l0_target"):
        MaskConfig(l0_target=1.5)


def test_sigma_penalty_is_the_mean_over_valid_positions():
    valid = torch.tensor([[True, True, False], [True, False, False]])
    km = KernelMask(2, 3, torch.arange(3.0).unsqueeze(-1), valid, 1.2, 2.0, 10.0)
    with torch.no_grad():
        km.sigma_score.copy_(torch.tensor([[0.0, 1.0, 5.0], [-1.0, 3.0, 3.0]]))
    log_sigma = math.log(10.0) + torch.nn.functional.logsigmoid(km.sigma_score.detach())
    want = [-(log_sigma[0, 0] + log_sigma[0, 1]).item() / 2, -log_sigma[1, 0].item()]
    assert km.sigma_penalty().tolist() == pytest.approx(want, rel=1e-6)


def hardkuma_gates(**controller):
    from hardkuma_attention.config import ControllerConfig

    valid = torch.tensor([[True, True, True, False], [True, True, False, False]])
    cfg = MaskConfig(parameterization="logit", gate_type="hardkuma", l0_target=0.3,
                     controller=ControllerConfig.preset("explain", **controller))
    gates = MaskGates(cfg, torch.arange(4.0).unsqueeze(-1), valid)
    with torch.no_grad():  # a mix of open, closed and in-between gates
        gates.scores.logit.copy_(torch.tensor([[3.0, -3.0, 0.5, 0.0], [-0.5, 2.0, 0.0, 0.0]]))
        gates.score_b.copy_(torch.tensor([[-2.0, 2.0, 0.0, 0.0], [0.5, -1.0, 0.0, 0.0]]))
    return gates, valid


@pytest.mark.parametrize("observe", ["expected", "decoded"])
def test_hardkuma_controllers_track_the_observed_rate(observe):
    gates, valid = hardkuma_gates(observe=observe)
    dist = gates.distribution(gates.scores())
    expected = [((1 - dist.prob_zero().detach()[i]) * valid[i]).sum().item() / valid[i].sum().item() for i in range(2)]
    final = gates.final()
    decoded = [((final[i] != 0) & valid[i]).sum().item() / valid[i].sum().item() for i in range(2)]
    _, penalty = gates.sample(torch.Generator().manual_seed(0), step=0)
    observed = decoded if observe == "decoded" else expected
    assert expected != pytest.approx(decoded)  # the two modes are told apart
    for i, c in enumerate(gates.constraints):
        # m <- alpha m + (1 - alpha)(observed - target), from m = 0
        assert c.moving_average.item() == pytest.approx(0.1 * (observed[i] - 0.3), rel=1e-5)
        assert int(c.num_updates) == 1
    # the penalty's value is lambda * m with lambda <- 1 * exp(lr m) (lr 0.05), its gradient that of the L0
    m = [0.1 * (o - 0.3) for o in observed]
    assert penalty.tolist() == pytest.approx([math.exp(0.05 * mi) * mi for mi in m], rel=1e-5)
    penalty.sum().backward()
    assert gates.score_b.grad is not None and gates.score_b.grad.abs().sum() > 0


def test_hardkuma_warmup_steps_carry_no_penalty():
    gates, _ = hardkuma_gates(warmup=2)
    gen = torch.Generator().manual_seed(0)
    for step in range(2):
        _, penalty = gates.sample(gen, step)
        assert torch.equal(penalty, torch.zeros(2))
        assert all(int(c.num_updates) == 0 for c in gates.constraints)
    _, penalty = gates.sample(gen, 2)
    assert all(int(c.num_updates) == 1 for c in gates.constraints) and (penalty != 0).all()
