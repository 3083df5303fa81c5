"""Backend dispatch of functional.scaled_dot_product_hardkuma (CPU tensors: no GPU here)."""
import importlib.util

import pytest
import torch

from hardkuma_attention.functional import scaled_dot_product_hardkuma


def _inputs(T=5, S=7, d=4):
    g = torch.Generator().manual_seed(0)
    qa, qb = torch.randn(2, 2, T, d, generator=g), torch.randn(2, 2, T, d, generator=g)
    ka, kb = torch.randn(2, 2, S, d, generator=g), torch.randn(2, 2, S, d, generator=g)
    v = torch.randn(2, 2, S, 3, generator=g)
    return qa, ka, qb, kb, v


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="backend must be one of"):
        scaled_dot_product_hardkuma(*_inputs(), scale=0.5, backend="cuda")


@pytest.mark.parametrize("training", [False, True])
def test_auto_on_cpu_is_the_reference_path(training):
    outs = []
    for backend in ("auto", "reference"):
        torch.manual_seed(3)
        out, _, stats = scaled_dot_product_hardkuma(
            *_inputs(), scale=0.5, training=training, normalize="softmax", want_stats=True, backend=backend
        )
        outs.append((out, stats.l0_sum, stats.nonzero))
    assert torch.equal(outs[0][0], outs[1][0])
    assert torch.equal(outs[0][1], outs[1][1]) and torch.equal(outs[0][2], outs[1][2])


def test_forced_triton_on_cpu_says_why():
    # Outside the interpreter a CPU tensor cannot go to the kernels: a clear error, not a fallback.
    if importlib.util.find_spec("triton") is None:
        match = r"pip install"
    else:
        match = r"backend=\"triton\": .*(device|CUDA|interpret)"
    with pytest.raises(ValueError, match=match):
        scaled_dot_product_hardkuma(*_inputs(), scale=0.5, backend="triton")


def test_module_passes_its_backend_on():
    from hardkuma_attention import HardKumaAttention

    with pytest.raises(ValueError, match="backend must be one of"):
        HardKumaAttention(8, 2, backend="gpu")
    x = torch.randn(2, 5, 8)
    ref = HardKumaAttention(8, 2, batch_first=True, backend="reference").eval()
    auto = HardKumaAttention(8, 2, batch_first=True).eval()
    auto.load_state_dict(ref.state_dict())
    assert auto.backend == "auto" and torch.equal(ref(x, x, x)[0], auto(x, x, x)[0])
    forced = HardKumaAttention(8, 2, batch_first=True, backend="triton").eval()
    with pytest.raises(ValueError, match="backend=\"triton\""):
        forced(x, x, x, need_weights=False)
