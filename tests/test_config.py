"""The controller and gate configurations: presets, overrides, validation, and that what they
build matches the objects built by hand (the update rule, the a/b maps)."""
import math

import pytest
import torch

from hardkuma_attention import ControllerConfig, GateConfig, LagrangianConstraint
from hardkuma_attention.config import CONTROLLER_PRESETS, DEFAULT_AB_RANGE, GATE_PRESETS
from hardkuma_attention.distributions import DEFAULT_SUPPORT
from hardkuma_attention.fused import ab_from_scores


def test_paper_preset_is_the_core_default():
    built = ControllerConfig.preset("paper").build(0.2)
    by_hand = LagrangianConstraint(0.2)
    for name in ("alpha", "lr", "lambda_min", "lambda_max", "equality", "damping"):
        assert getattr(built, name) == getattr(by_hand, name), name
    assert built.multiplier == by_hand.multiplier


@pytest.mark.parametrize("name", sorted(CONTROLLER_PRESETS))
def test_preset_builds_same_trajectory_as_hand_built(name):
    cfg = ControllerConfig.preset(name)
    built = cfg.build(0.3, valid_range=(0.0, 1.0))
    by_hand = LagrangianConstraint(0.3, alpha=cfg.alpha, lr=cfg.lr, lambda_init=cfg.initial_multiplier,
                                   lambda_min=cfg.lambda_min, lambda_max=cfg.lambda_max,
                                   equality=cfg.equality, damping=cfg.damping)
    gen = torch.Generator().manual_seed(0)
    for _ in range(25):
        x = torch.rand((), generator=gen)
        assert torch.equal(built(x), by_hand(x))
    assert torch.equal(built.lagrange_multiplier, by_hand.lagrange_multiplier)
    assert torch.equal(built.moving_average, by_hand.moving_average)


def test_overrides_and_none_keep_preset():
    cfg = ControllerConfig.preset("multi30k", lr=0.1)
    assert cfg.lr == 0.1 and cfg.lambda_max == 0.1 and cfg.alpha == 0.9
    assert cfg.replace(lr=None, damping=2.0) == ControllerConfig.preset("multi30k", lr=0.1, damping=2.0)
    assert CONTROLLER_PRESETS["multi30k"].lr == 0.05  # presets are not mutated
    assert ControllerConfig.preset("paper").build(0.1, equality=True).equality


def test_initial_multiplier_default():
    assert ControllerConfig(lambda_init=None, equality=True).initial_multiplier == 0.0
    assert ControllerConfig(lambda_init=None).initial_multiplier == 1e-3
    assert ControllerConfig.preset("rationale").build(0.1).multiplier == 0.0


@pytest.mark.parametrize("bad", [dict(alpha=1.0), dict(lr=0.0), dict(damping=-1.0), dict(observe="x"),
                                 dict(warmup=-1), dict(lambda_min=0.0), dict(lambda_min=2.0, lambda_max=1.0)])
def test_controller_validation(bad):
    with pytest.raises(ValueError):
        ControllerConfig(**bad)


def test_unknown_presets_name_the_choices():
    with pytest.raises(ValueError, match="paper"):
        ControllerConfig.preset("nope")
    with pytest.raises(ValueError, match="rationale"):
        GateConfig.preset("nope")


def test_gate_defaults_and_maps():
    g = GateConfig()
    assert g.support == DEFAULT_SUPPORT and g.ab_range == DEFAULT_AB_RANGE and g == GATE_PRESETS["attention"]
    s = torch.linspace(-30, 30, 101, dtype=torch.float64)
    assert torch.equal(g.shape(s), ab_from_scores(s, DEFAULT_AB_RANGE))
    r = GateConfig.preset("rationale")
    a = r.shape(s)
    # independent formula: log a is an affine map of sigmoid(s) between log 0.1 and log 10
    expected = torch.exp(math.log(0.1) + (math.log(10.0) - math.log(0.1)) / (1 + torch.exp(-s)))
    assert torch.allclose(a, expected, rtol=1e-12)
    assert float(r.shape(torch.zeros((), dtype=torch.float64))) == pytest.approx(1.0, rel=1e-12)
    assert torch.all(a >= 0.1 - 1e-12) and torch.all(a <= 10.0 + 1e-12)


def test_sigmoid_map_gradient_never_flat_where_clamp_is():
    s = torch.tensor([-20.0, 20.0], dtype=torch.float64, requires_grad=True)
    GateConfig.preset("rationale").shape(s).sum().backward()
    assert torch.all(s.grad != 0)
    s2 = torch.tensor([-20.0, 20.0], dtype=torch.float64, requires_grad=True)
    GateConfig(ab_range=(0.1, 10.0)).shape(s2).sum().backward()
    assert torch.all(s2.grad == 0)


@pytest.mark.parametrize("bad", [dict(normalize="max"), dict(ab_map="exp"), dict(support=(0.0, 1.1)),
                                 dict(support=(-0.1, 1.0)), dict(ab_range=(0.0, 1.0)), dict(ab_range=(2.0, 1.0))])
def test_gate_validation(bad):
    with pytest.raises(ValueError):
        GateConfig(**bad)


def test_round_trip_through_dict():
    for cfg in list(CONTROLLER_PRESETS.values()):
        assert ControllerConfig(**cfg.to_dict()) == cfg
    for g in GATE_PRESETS.values():
        assert GateConfig(**g.to_dict()) == g


def test_resolve_gate_from_preset_keywords_or_config():
    """``GateConfig.resolve``: None -> the default preset with the keywords replacing fields; a
    name or a config -> that gate, with agreeing keywords accepted and disagreeing ones refused."""
    assert GateConfig.resolve() == GATE_PRESETS["attention"]
    assert GateConfig.resolve(None, normalize=None, support=None) == GATE_PRESETS["attention"]
    assert GateConfig.resolve(None, normalize="sum", ab_range=[0.1, 10]) == GateConfig(normalize="sum",
                                                                                        ab_range=(0.1, 10.0))
    assert GateConfig.resolve(default="rationale") == GATE_PRESETS["rationale"]
    assert GateConfig.resolve("rationale", ab_range=[0.1, 10], ab_map="sigmoid") == GATE_PRESETS["rationale"]
    g = GateConfig(normalize="softmax")
    assert GateConfig.resolve(g, normalize="softmax", support=list(DEFAULT_SUPPORT)) is g
    with pytest.raises(ValueError, match=r"layer: gate= and normalize='sum' \(gate: 'softmax'\) disagree"):
        GateConfig.resolve(g, owner="layer", normalize="sum")
    with pytest.raises(ValueError, match="unknown gate preset"):
        GateConfig.resolve("softmax")
    with pytest.raises(TypeError):
        GateConfig.resolve(("none", (-0.1, 1.1)))


def test_default_ab_range_is_one_object():
    """The clamp map's default range is defined once (beside the map in ``fused``) and is the
    default of every core entry point."""
    import inspect

    from hardkuma_attention import fused, functional, streaming

    assert DEFAULT_AB_RANGE == (1e-3, 100.0) and DEFAULT_AB_RANGE is fused.DEFAULT_AB_RANGE
    for fn in (fused.hardkuma_gates, fused.expected_l0_sum, functional.hardkuma_weights_from_scores,
               functional.scaled_dot_product_hardkuma):
        assert inspect.signature(fn).parameters["ab_clamp"].default is DEFAULT_AB_RANGE, fn.__name__
    assert streaming.StreamConfig(scale=1.0).ab_clamp is DEFAULT_AB_RANGE
