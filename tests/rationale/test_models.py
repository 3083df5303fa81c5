"""Selector / classifier shapes and masking; the objective reuses the core's constraint math."""
import pytest
import torch

from hardkuma_attention import HardKumaraswamy, LagrangianConstraint
from hardkuma_attention.config import ControllerConfig, GateConfig
from hardkuma_attention.rationale.models import ModelConfig, RationaleModel, compact_selected
from hardkuma_attention.rationale.objectives import ObjectiveConfig, RationaleObjective

B, T, V = 3, 7, 20


def batch():
    torch.manual_seed(0)
    tokens = torch.randint(2, V, (B, T))
    lengths = torch.tensor([7, 4, 1])
    mask = torch.arange(T)[None] < lengths[:, None]
    return tokens.masked_fill(~mask, 0), mask


def model(**kw):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=V, embed_dim=8, hidden_size=6, num_outputs=3, dropout=0.0, **kw)
    return RationaleModel(cfg)


@pytest.mark.parametrize("gate, selector", [("hardkuma", "independent"), ("hardkuma", "dependent"),
                                            ("bernoulli", "independent"), ("none", "independent")])
@pytest.mark.parametrize("training", [True, False])
def test_shapes_and_padding_is_zero(gate, selector, training):
    tokens, mask = batch()
    m = model(gate=gate, selector=selector)
    m.train(training)
    out = m(tokens, mask)
    assert out.logits.shape == (B, 3) and out.z.shape == (B, T)
    assert torch.all(out.z[~mask] == 0)
    assert torch.all((out.z >= 0) & (out.z <= 1))
    if gate == "hardkuma":
        assert isinstance(out.dist, HardKumaraswamy) and out.dist.batch_shape == (B, T)
    if gate == "bernoulli" and training:
        assert out.log_prob_z.shape == (B,) and torch.all(out.log_prob_z <= 0)
    if gate == "none":
        assert torch.equal(out.z, mask.float())
    if not training and gate == "bernoulli":
        assert set(out.z.unique().tolist()) <= {0.0, 1.0}


def test_eval_hardkuma_is_deterministic():
    tokens, mask = batch()
    m = model(gate="hardkuma").eval()
    assert torch.equal(m(tokens, mask).z, m(tokens, mask).z)


def test_compact_selected_keeps_order_and_lengths():
    x = torch.arange(2 * 4, dtype=torch.float32).view(2, 4, 1) + 1
    keep = torch.tensor([[False, True, False, True], [False, False, False, False]])
    out, lengths = compact_selected(x, keep)
    assert lengths.tolist() == [2, 0]
    assert out.shape == (2, 2, 1)
    assert out[0, :, 0].tolist() == [2.0, 4.0] and out[1].abs().sum() == 0


@pytest.mark.parametrize("pooling", ["final", "max"])
def test_classifier_ignores_zeroed_and_padded_tokens(pooling):
    tokens, mask = batch()
    m = model(gate="none", pooling=pooling).eval()
    z = mask.float().clone()
    z[0, 2] = 0.0
    base = m.classify(tokens, mask, z)
    changed = tokens.clone()
    changed[0, 2] = (changed[0, 2] + 1) % V  # a removed token
    changed[1, 5] = 5  # a padding position (mask False)
    assert torch.allclose(base, m.classify(changed, mask, z))
    changed[0, 3] = (changed[0, 3] + 1) % V  # a selected token matters
    assert not torch.allclose(base, m.classify(changed, mask, z))


@pytest.mark.parametrize("pooling", ["final", "max"])
def test_skip_zeros_differs_from_zero_vectors(pooling):
    tokens, mask = batch()
    z = mask.float().clone()
    z[0, :3] = 0.0
    skip = model(gate="none", skip_zeros=True, pooling=pooling).eval().classify(tokens, mask, z)
    keep = model(gate="none", skip_zeros=False, pooling=pooling).eval().classify(tokens, mask, z)
    assert not torch.allclose(skip[0], keep[0])
    assert torch.allclose(skip[1:], keep[1:])


def test_hardkuma_objective_uses_core_constraint_and_reaches_selector():
    tokens, mask = batch()
    m = model(gate="hardkuma").train()
    obj = RationaleObjective(ObjectiveConfig(selection=0.2, lasso=0.1), "hardkuma").train()
    assert isinstance(obj.selection_constraint, LagrangianConstraint)
    loss, stats = obj(m(tokens, mask), torch.tensor([0, 1, 2]))
    loss.backward()
    assert m.selector.scores.weight.grad.abs().sum() > 0
    assert {"expected_l0", "lambda_selection", "expected_transitions", "lambda_lasso"} <= set(stats)
    assert int(obj.selection_constraint.num_updates) == 1
    # the expected L0 is the per-sequence mean of 1 - P0 over valid tokens
    out = m(tokens, mask)
    p_nonzero = 1 - out.dist.prob_zero()
    per_seq = [(p_nonzero[i, : int(mask[i].sum())]).mean() for i in range(B)]
    _, stats = obj.eval()(out, torch.tensor([0, 1, 2]))
    assert stats["expected_l0"] == pytest.approx(float(torch.stack(per_seq).mean().detach()), rel=1e-5)


def test_reinforce_objective_gives_selector_gradient():
    tokens, mask = batch()
    m = model(gate="bernoulli").train()
    obj = RationaleObjective(ObjectiveConfig(sparsity_weight=1.0, sparsity_target=0.3, coherence_weight=0.5),
                             "bernoulli").train()
    loss, stats = obj(m(tokens, mask), torch.tensor([0, 1, 2]))
    loss.backward()
    assert m.selector.scores.weight.grad.abs().sum() > 0
    assert int(obj.baseline_updates) == 1 and "cost" in stats


def test_regression_output_in_unit_interval():
    tokens, mask = batch()
    m = model(gate="hardkuma", task="regression").eval()
    m.classifier.output = torch.nn.Linear(12, 1)
    out = m(tokens, mask)
    assert out.logits.shape == (B,) and torch.all((out.logits > 0) & (out.logits < 1))


def test_constraint_warmup_keeps_multiplier_still():
    tokens, mask = batch()
    m = model(gate="hardkuma").train()
    obj = RationaleObjective(ObjectiveConfig(selection=0.2, controller=ControllerConfig.preset("rationale", warmup=2)), "hardkuma").train()
    y = torch.tensor([0, 1, 2])
    for expected_updates in [0, 0, 1, 2]:
        loss, stats = obj(m(tokens, mask), y)
        assert int(obj.selection_constraint.num_updates) == expected_updates
    assert "lambda_selection" in stats and obj.selection_constraint.equality  # equality is the default


def test_decoded_selection_measure_drives_the_multiplier_with_the_l0_gradient():
    tokens, mask = batch()
    m = model(gate="hardkuma").train()
    y = torch.tensor([0, 1, 2])
    ctrl = ControllerConfig.preset("rationale", lr=1.0, alpha=0.0, damping=0.5)
    cfg = dict(selection=0.2, selection_gradient="l0")
    obj = RationaleObjective(ObjectiveConfig(**cfg, controller=ctrl), "hardkuma").train()  # decoded is the default
    assert obj.selection_constraint.damping == 0.5
    torch.manual_seed(1)
    out = m(tokens, mask)
    loss, stats = obj(out, y)
    decoded = (out.dist.deterministic() != 0).float()
    per_seq = [decoded[i, : int(mask[i].sum())].mean() for i in range(B)]
    want = float(torch.stack(per_seq).mean())
    assert stats["decoded_selected"] == pytest.approx(want)
    assert obj.selection_constraint.multiplier == pytest.approx(want - 0.2, abs=1e-6)
    loss.backward()
    assert m.selector.scores.weight.grad.abs().sum() > 0
    # the paper's measure tracks the expected L0 instead (and logs no decoded rate)
    obj2 = RationaleObjective(ObjectiveConfig(**cfg, controller=ctrl.replace(observe="expected")), "hardkuma").train()
    _, stats2 = obj2(out, y)
    assert "decoded_selected" not in stats2
    assert obj2.selection_constraint.multiplier == pytest.approx(stats2["expected_l0"] - 0.2, abs=1e-6)
    with pytest.raises(ValueError, match="observe"):
        ControllerConfig.preset("rationale", observe="sampled")


def test_top_fraction_and_bernoulli_rate_decoding():
    from hardkuma_attention.rationale.models import top_fraction

    scores = torch.tensor([[0.1, 0.9, 0.5, 0.7, -1.0], [3.0, 2.0, 1.0, 0.0, 0.0]])
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    sel = top_fraction(scores, mask, 0.4)  # ceil(0.4 * 5) = 2; ceil(0.4 * 3) = 2
    assert sel.tolist() == [[False, True, False, True, False], [True, True, False, False, False]]
    tokens, mask = batch()
    m = model(gate="bernoulli", bernoulli_decode_rate=0.5).eval()
    z = m(tokens, mask).z
    assert z.sum(1).tolist() == [4.0, 2.0, 1.0]


def test_selection_anneal_lowers_target_linearly():
    tokens, mask = batch()
    m = model(gate="hardkuma").train()
    obj = RationaleObjective(ObjectiveConfig(selection=0.2, selection_anneal=4), "hardkuma").train()
    targets = [obj(m(tokens, mask), torch.tensor([0, 1, 2]))[1]["selection_target"] for _ in range(6)]
    assert targets == pytest.approx([0.8, 0.6, 0.4, 0.2, 0.2, 0.2])
    assert [obj.selection_target()] == pytest.approx([0.2])
    assert obj.selection_constraint.target == 0.0  # the gap to the explicit per-update target: never rewritten


def test_annealed_target_is_bit_identical_to_rewriting_the_constraint_target():
    """The former implementation kept one constraint at ``selection`` and rewrote its ``target``
    (not in the state dict) every update; the explicit per-update target gives the same loss,
    gradient, moving average and multiplier, bit for bit."""
    from hardkuma_attention.rationale.objectives import selection_rate, selection_surrogate, task_loss

    tokens, mask = batch()
    y = torch.tensor([0, 1, 2])
    m = model(gate="hardkuma").train()
    cfg = ObjectiveConfig(selection=0.2, selection_anneal=4, controller=ControllerConfig.preset("rationale", lr=0.5))
    obj = RationaleObjective(cfg, "hardkuma").train()
    ref = cfg.controller.build(0.2, valid_range=(0.0, 1.0)).train()
    weight = m.selector.scores.weight
    for step in range(1, 7):
        torch.manual_seed(step)
        out = m(tokens, mask)
        loss, stats = obj(out, y)
        ref.target = 0.2 + 0.8 * max(0.0, 1 - step / 4)  # the old rewrite
        observed = selection_rate(out.dist.deterministic(), mask).mean()
        want = task_loss(out.logits, y, "classification", reduction="none").mean() + ref(
            selection_surrogate(out.dist, mask, "open"), observed, count=float(B))
        assert stats["selection_target"] == ref.target
        assert torch.equal(loss, want)
        assert torch.equal(torch.autograd.grad(loss, weight, retain_graph=True)[0],
                           torch.autograd.grad(want, weight, retain_graph=True)[0])
        for name in ("lagrange_multiplier", "moving_average", "num_updates"):
            assert torch.equal(getattr(obj.selection_constraint, name), getattr(ref, name)), name
    assert float(ref.lagrange_multiplier) != 0.0  # the multipliers moved


def test_gate_shape_range_and_gradient():
    def shape_from_score(score, ab_range, ab_map):  # the selector's map: GateConfig.shape
        return GateConfig(ab_map=ab_map, ab_range=ab_range).shape(score)

    assert ModelConfig(vocab_size=V).gate_config == GateConfig(ab_map="sigmoid", ab_range=(0.1, 10.0))
    s = torch.tensor([-12.0, 0.0, 12.0], requires_grad=True)
    a = shape_from_score(s, (0.1, 10.0), "sigmoid")
    assert a[1].item() == pytest.approx(1.0) and a.min().item() >= 0.1 - 1e-6 and a.max().item() <= 10.0 + 1e-5
    a.sum().backward()
    assert torch.all(s.grad != 0)  # smooth map: no flat zone (until sigmoid rounds to 1 in float32)
    s2 = torch.tensor([-30.0, 30.0], requires_grad=True)
    shape_from_score(s2, (0.1, 10.0), "clamp").sum().backward()
    assert torch.all(s2.grad == 0)  # the clamp map is flat past its bounds


def test_best_on_dev_eligibility_is_two_sided_for_targets_driven_from_both_sides():
    from hardkuma_attention.rationale.train import _checkpoint_key, _selection_target

    def best(history, two_sided, target=0.3, tol=0.02):
        keys = [_checkpoint_key({"selected": sel}, acc, target, tol, two_sided) for sel, acc in history]
        return history[max(range(len(keys)), key=keys.__getitem__)]

    history = [(0.20, 0.45), (0.31, 0.40), (0.29, 0.41), (0.50, 0.60)]
    assert best(history, two_sided=False) == (0.20, 0.45)  # a budget: anything at most 0.32
    assert best(history, two_sided=True) == (0.29, 0.41)
    assert best([(0.10, 0.5), (0.45, 0.6)], two_sided=True) == (0.45, 0.6)  # none eligible: closest
    eq = RationaleObjective(ObjectiveConfig(selection=0.3), "hardkuma")
    ineq = RationaleObjective(ObjectiveConfig(selection=0.3, controller=ControllerConfig.preset("rationale", equality=False)),
                              "hardkuma")
    bern = RationaleObjective(ObjectiveConfig(sparsity_target=0.3, sparsity_weight=1.0), "bernoulli")
    full = RationaleObjective(ObjectiveConfig(), "none")
    assert [_selection_target(o) for o in (eq, ineq, bern, full)] == [(0.3, True), (0.3, False), (0.3, True), (None, False)]


def test_open_selection_gradient_survives_when_every_gate_is_open():
    from hardkuma_attention.rationale.models import RationaleOutput

    mask = torch.ones(2, 3, dtype=torch.bool)
    y = torch.tensor([0, 1])

    def grads(selection_gradient):
        a = torch.full((2, 3), 10.0, requires_grad=True)  # a at its upper bound, b at its lower:
        b = torch.full((2, 3), 0.1, requires_grad=True)  # P(z=0) ~ 1e-12, P(z=1) ~ 0.95
        dist = HardKumaraswamy(a, b)
        out = RationaleOutput(logits=torch.zeros(2, 3), z=torch.ones(2, 3), mask=mask, dist=dist)
        ctrl = ControllerConfig.preset("rationale", damping=0.0, lambda_init=1.0)
        obj = RationaleObjective(ObjectiveConfig(selection=0.3, controller=ctrl,
                                                 selection_gradient=selection_gradient), "hardkuma").train()
        loss, _ = obj(out, y)
        return torch.autograd.grad(loss, (a, b))

    ga, gb = grads("l0")
    assert ga.abs().max() < 1e-9 and gb.abs().max() < 1e-9  # the expected L0 is flat here
    ga, gb = grads("open")
    assert ga.abs().min() > 1e-4 and gb.abs().min() > 1e-3  # P(z=1) still moves ...
    assert (ga > 0).all() and (gb < 0).all()  # ... and descending closes the gates (a down, b up)
    with pytest.raises(ValueError, match="--selection-measure decoded"):
        ObjectiveConfig(selection=0.3, selection_gradient="open",
                        controller=ControllerConfig.preset("rationale", observe="expected"))
