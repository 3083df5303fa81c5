"""optimise_masks gives the masks it gave before the #13 redesign of MaskConfig.

Until #13 the controller and gate settings were MaskConfig fields (``gate="sigmoid"|"hardkuma"``,
``lagrange_lr``, ``lagrange_alpha``, ``lambda_init``, ``support``, ``ab_range``; ``lambda_max=10``
hard-coded in mask.py); they are now ``gate_type``, ``controller=ControllerConfig.preset("explain")
.replace(lr=, alpha=, lambda_init=)`` and ``gate=GateConfig.preset("rationale").replace(support=,
ab_range=)``.  ``OLD_CASES`` lists settings in the old spelling; ``RECORDED`` holds what the old code
(main at 87492bb, ``MaskConfig(**OLD_CASES[name])``, this file's problem) returned on CPU, printed
as the shortest decimal of each float32 (so ``torch.tensor(..., dtype=float32)`` is the recorded
value exactly).  On the machine that recorded them the new code reproduces them bit for bit; the
test allows float32 rounding (rtol 1e-5) for other CPUs; a changed setting moves the masks by far
more (measured on "kernel_hardkuma": 9e-3 for l0_target 0.1 instead of 0.2, 0.04-0.2 for the
controller's lr / alpha / lambda_init or the gate's ab_range; checked below).
"""
import pytest
import torch

from hardkuma_attention.config import ControllerConfig, GateConfig
from hardkuma_attention.explain.mask import MaskConfig, image_positions, optimise_masks

OLD_CASES = {
    "kernel_sigmoid": dict(parameterization="kernel", gate="sigmoid", max_steps=25),
    "logit_sigmoid": dict(parameterization="logit", gate="sigmoid", max_steps=25),
    "kernel_hardkuma": dict(parameterization="kernel", gate="hardkuma", max_steps=25, l0_target=0.2),
    "logit_hardkuma_lr": dict(parameterization="logit", gate="hardkuma", max_steps=25, l0_target=0.1,
                              lagrange_lr=0.1, lagrange_alpha=0.8, lambda_init=0.5),
    "kernel_hardkuma_range": dict(parameterization="kernel", gate="hardkuma", max_steps=20, l0_target=0.3,
                                  ab_range=(0.2, 5.0), support=(-0.2, 1.2), seed=3),
    "converge": dict(parameterization="kernel", gate="sigmoid", max_steps=200, min_steps=1, tol=0.01, patience=4,
                     noise_std=0.0, force_zero=0.0, force_one=0.0),
    "image_tv": dict(parameterization="kernel", gate="sigmoid", max_steps=15, init_weight=0.3, init_sigma=1.0,
                     sigma_max=3.0, lambda_sigma=0.2, tv_weight=0.3),
}

RECORDED = {
    "kernel_sigmoid": dict(
        steps=25, target=[2, 0, 1], last_loss=0.27340129017829895,
        p_keep=[0.75633186, 0.8262944, 0.45847145],
        p_complement=[0.3520258, 0.34138444, 0.43769205],
        mask=[
            [0.9758581, 0.9885461, 0.9931404, 0.99464226, 0.9943737, 0.991676, 0.98265475],
            [0.99556714, 0.9982591, 0.9985864, 0.9974738, 0.99192154, 0.0, 0.0],
            [0.7164486, 0.71582747, 0.0, 0.0, 0.0, 0.0, 0.0],
        ]),
    "logit_sigmoid": dict(
        steps=25, target=[2, 0, 1], last_loss=1.6716011762619019,
        p_keep=[0.76093876, 0.82573515, 0.47125095],
        p_complement=[0.25184616, 0.33632132, 0.341849],
        mask=[
            [0.97269714, 0.9083753, 0.92522264, 0.90720177, 0.97131133, 0.9724821, 0.9091408],
            [0.9746762, 0.90479755, 0.96743447, 0.9021615, 0.96425605, 0.0, 0.0],
            [0.9620619, 0.90185416, 0.0, 0.0, 0.0, 0.0, 0.0],
        ]),
    "kernel_hardkuma": dict(
        steps=25, target=[2, 0, 1], last_loss=0.14288794994354248,
        p_keep=[0.72019553, 0.8272106, 0.45178163],
        p_complement=[0.042468265, 0.27039763, 0.39478478],
        mask=[
            [0.3922581, 0.0, 0.0034336448, 0.069926836, 0.75206643, 0.79933566, 0.56442475],
            [1.0, 0.8768193, 0.9969915, 1.0, 1.0, 0.0, 0.0],
            [0.22287545, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        ]),
    "logit_hardkuma_lr": dict(
        steps=25, target=[2, 0, 1], last_loss=2.6126346588134766,
        p_keep=[0.70988613, 0.80945283, 0.6589774],
        p_complement=[0.08359759, 0.19379865, 0.23613754],
        mask=[
            [0.8516575, 0.06857886, 0.14921242, 0.04150001, 0.8475494, 0.7951192, 0.040364064],
            [0.9108937, 0.0, 0.56539786, 0.4491947, 0.8434096, 0.0, 0.0],
            [0.8614575, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        ]),
    "kernel_hardkuma_range": dict(
        steps=20, target=[2, 0, 1], last_loss=0.5013953447341919,
        p_keep=[0.72518337, 0.8206143, 0.45379737],
        p_complement=[0.08000802, 0.46103933, 0.39358318],
        mask=[
            [0.5291281, 0.27715415, 0.4978596, 0.4557467, 0.7916895, 0.8298518, 0.6647464],
            [0.8664165, 0.6625711, 0.87327856, 0.73317957, 0.8629188, 0.0, 0.0],
            [0.2267916, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        ]),
    "converge": dict(
        steps=103, target=[2, 0, 1], last_loss=-0.8139635920524597,
        p_keep=[0.75854886, 0.8265289, 0.43779695],
        p_complement=[0.33341342, 0.33364156, 0.45807678],
        mask=[
            [0.9999186, 0.99996006, 0.99997437, 0.9999778, 0.99997365, 0.9999578, 0.99991214],
            [0.9998135, 0.9998734, 0.9998839, 0.99985456, 0.9997569, 0.0, 0.0],
            [0.28287947, 0.2823329, 0.0, 0.0, 0.0, 0.0, 0.0],
        ]),
    "image_tv": dict(
        steps=15, target=[1, 2], last_loss=1.5128173828125,
        p_keep=[0.4056314, 0.7603386],
        p_complement=[0.26228762, 0.39451587],
        mask=[
            [0.47212726, 0.44775435, 0.4550959, 0.58216965, 0.55412, 0.5113849, 0.658858, 0.7359043, 0.6017795],
            [0.5723959, 0.6517661, 0.6752139, 0.71480995, 0.8416062, 0.8281465, 0.67522186, 0.82267314, 0.8169297],
        ]),
}


def new_config(old: dict) -> MaskConfig:
    """The old spelling mapped onto MaskConfig(controller=, gate=, gate_type=)."""
    kw = dict(old)
    ctrl = {new: kw.pop(name) for name, new in (("lagrange_lr", "lr"), ("lagrange_alpha", "alpha"),
                                                 ("lambda_init", "lambda_init")) if name in kw}
    gate = {name: kw.pop(name) for name in ("ab_range", "support") if name in kw}
    kw["gate_type"] = kw.pop("gate")
    return MaskConfig(controller=ControllerConfig.preset("explain").replace(**ctrl),
                      gate=GateConfig.preset("rationale").replace(**gate), **kw)


def problem(image: bool):
    """Seeded inputs (text: B=3, T=7, D=4 with two padded rows; image: 2 3x3 images) and a fixed
    two-layer classifier ``tanh(Σ_t x_t W1) W2`` with 3 classes."""
    g = torch.Generator().manual_seed(0)
    bsz, length, dim = (2, 9, 1) if image else (3, 7, 4)
    emb = torch.randn(bsz, length, dim, generator=g)
    valid = torch.ones(bsz, length, dtype=torch.bool)
    if not image:
        valid[1, 5:] = False
        valid[2, 2:] = False
    w1 = torch.randn(dim, 5, generator=g)
    w2 = torch.randn(5, 3, generator=g)

    def model(x, v):
        return torch.tanh((x * v.unsqueeze(-1).to(x.dtype)).sum(1) @ w1) @ w2
    return model, emb, valid


@pytest.mark.parametrize("name", sorted(OLD_CASES))
def test_masks_as_recorded_before_the_redesign(name):
    image = name.startswith("image")
    model, emb, valid = problem(image)
    extra = dict(positions=image_positions(3, 3), grid=(3, 3)) if image else {}
    res = optimise_masks(model, emb, valid, config=new_config(OLD_CASES[name]), **extra)
    want = RECORDED[name]
    assert res.steps == want["steps"] and res.target.tolist() == want["target"]
    f32 = dict(dtype=torch.float32)
    torch.testing.assert_close(res.mask, torch.tensor(want["mask"], **f32), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(res.p_keep, torch.tensor(want["p_keep"], **f32), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(res.p_complement, torch.tensor(want["p_complement"], **f32), rtol=1e-5, atol=1e-6)
    assert res.history[-1] == pytest.approx(want["last_loss"], rel=1e-5, abs=1e-6)


def test_recorded_hardkuma_masks_depend_on_the_controller():
    """The check above can fail: a different l0 target or controller step moves the masks."""
    model, emb, valid = problem(False)
    base = OLD_CASES["kernel_hardkuma"]
    want = torch.tensor(RECORDED["kernel_hardkuma"]["mask"])
    for change in (dict(l0_target=0.1), dict(lagrange_lr=0.02), dict(lagrange_alpha=0.99), dict(lambda_init=0.5),
                   dict(ab_range=(0.1, 5.0))):
        res = optimise_masks(model, emb, valid, config=new_config({**base, **change}))
        assert (res.mask - want).abs().max() > 1e-3, change
