"""The Triton kernels (hardkuma_attention/triton_kernels.py) against the CPU reference path, run
through Triton's interpreter (``TRITON_INTERPRET=1``) on CPU tensors.

The interpreter must be switched on before ``triton`` is imported, so the kernels run in one
subprocess (this file run as a script, ``--worker OUT.json``) that computes every case and writes
the largest differences to the reference; the tests here check them case by case.  The reference
is :func:`hardkuma_attention.functional.scaled_dot_product_hardkuma` (streaming CPU path) on the
same seed, hence the same counter noise: outputs, statistics and the gradients of every input
(``qa, ka, qb, kb, v`` and a bias that requires grad) must agree up to float rounding.  Skipped
only where triton cannot be imported.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HAS_TRITON = importlib.util.find_spec("triton") is not None

# name -> dict(shape=(B, H, T, S, D), dtype, training, normalize, masks...)
CASES = {
    "eval_none_plain_d32": dict(training=False, normalize="none"),
    "eval_softmax_padding_causal_atomic": dict(training=False, normalize="softmax", padding=True, causal=True,
                                               atomic=True),
    "eval_sum_bias_d64_no_skip": dict(training=False, normalize="sum", bias=True, D=64, no_skip=True),
    "train_none_padding_bias": dict(training=True, normalize="none", padding=True, bias=True),
    "train_sum_causal_key_bias": dict(training=True, normalize="sum", causal=True, key_bias=True),
    "train_softmax_all_masks_dropout": dict(training=True, normalize="softmax", padding=True, bias=True,
                                            causal=True, dropout=0.25),
    "train_softmax_d64_causal_bwd_blocks": dict(training=True, normalize="softmax", causal=True, D=64, T=17, S=17,
                                                bwd_blocks=(32, 16)),
    "train_none_3d_mask_kv_broadcast": dict(training=True, normalize="none", mask3d=True, kv_broadcast=True),
    "train_softmax_fully_masked_rows_atomic": dict(training=True, normalize="softmax", empty_rows=True, atomic=True),
    "train_sum_length_1": dict(training=True, normalize="sum", T=1, S=1),
    "train_none_no_keys": dict(training=True, normalize="none", S=0),
    "train_softmax_bf16": dict(training=True, normalize="softmax", padding=True, dtype="bfloat16"),
    "train_none_fp16_causal_atomic": dict(training=True, normalize="none", causal=True, dtype="float16", atomic=True),
    "eval_softmax_bf16": dict(training=False, normalize="softmax", dtype="bfloat16"),
}
NAMES = ("out", "l0_sum", "nonzero", "cells", "d_qa", "d_ka", "d_qb", "d_kb", "d_v", "d_bias")
TOL = {"float32": (2e-5, 2e-5), "bfloat16": (3e-2, 3e-2), "float16": (4e-3, 4e-3)}


# ---------------------------------------------------------------------- worker (subprocess)


def _inputs(case, torch):
    B, H = 2, 2
    T, S, D = case.get("T", 19), case.get("S", 23), case.get("D", 32)
    g = torch.Generator().manual_seed(1234)
    dtype = getattr(torch, case.get("dtype", "float32"))
    rnd = lambda *s: torch.randn(*s, generator=g).to(dtype)  # noqa: E731
    kv_lead = (B, 1) if case.get("kv_broadcast") else (B, H)
    xs = [rnd(B, H, T, D), rnd(*kv_lead, S, D), rnd(B, H, T, D), rnd(*kv_lead, S, D), rnd(*kv_lead, S, D)]
    xs = [x * 1.5 for x in xs]
    valid = bias = None
    if case.get("padding"):
        lengths = torch.tensor([S, max(S - 7, 1)])
        valid = (torch.arange(S) < lengths.view(B, 1)).view(B, 1, 1, S)
    if case.get("mask3d"):
        valid = torch.rand(B, H, T, S, generator=g) > 0.3
    if case.get("empty_rows"):
        valid = torch.ones(B, 1, T, S, dtype=torch.bool)
        valid[0, :, 3:9] = False  # six fully masked query rows
        valid[1] = False  # a whole batch element
    if case.get("bias"):
        bias = torch.randn(1, H, T, S, generator=g).requires_grad_()
    if case.get("key_bias"):  # the same for every query: the kernels load it once per key block
        bias = torch.randn(B, 1, 1, S, generator=g).requires_grad_()
    return xs, valid, bias


def _run_one(fn, case, torch, extra):
    xs, valid, bias = _inputs(case, torch)
    xs = [x.requires_grad_() for x in xs]
    gen = torch.Generator().manual_seed(99)
    out, _, stats = fn(*xs, scale=0.35, valid=valid, bias=bias, is_causal=case.get("causal", False),
                       training=case["training"], normalize=case["normalize"],
                       dropout_p=case.get("dropout", 0.0), want_stats=True, generator=gen, **extra)
    w = torch.cos(torch.arange(out.shape[-1], dtype=torch.float32))
    loss = (out.float() * w).sum() + 0.3 * stats.l0_sum
    loss.backward()
    res = [out, stats.l0_sum, stats.nonzero, stats.cells] + [x.grad for x in xs]
    res.append(bias.grad if bias is not None else torch.zeros(()))
    return [r.detach().float() for r in res]


def _worker(path):
    import warnings

    import numpy as np
    import torch

    warnings.simplefilter("ignore")
    np.seterr(all="ignore")  # both branches of tl.where are evaluated by the interpreter
    from hardkuma_attention.functional import scaled_dot_product_hardkuma
    from hardkuma_attention.triton_kernels import (
        KernelConfig, scaled_dot_product_hardkuma_triton, unsupported_reason,
    )

    results = {}
    for name, case in CASES.items():
        bm, bn = case.get("bwd_blocks", (16, 16))
        kernel = KernelConfig(block_m=16, block_n=16, num_warps=1, num_stages=1, bwd_block_m=bm, bwd_block_n=bn,
                              bwd_num_warps=1, bwd_num_stages=1, skip_zero_tiles=not case.get("no_skip"),
                              atomic_dq=bool(case.get("atomic")))
        tri = _run_one(scaled_dot_product_hardkuma_triton, case, torch, dict(kernel=kernel))
        ref = _run_one(scaled_dot_product_hardkuma, case, torch, dict(compile=False))
        rows = {}
        for key, a, b in zip(NAMES, tri, ref):
            rows[key] = dict(diff=float((a - b).abs().max()) if a.numel() else 0.0,
                             scale=float(b.abs().max()) if b.numel() else 0.0,
                             finite=bool(torch.isfinite(a).all()), shape_ok=a.shape == b.shape)
        if case.get("empty_rows"):
            rows["masked_rows_zero"] = bool((tri[0][0, :, 3:9] == 0).all() and (tri[0][1] == 0).all())
        results[name] = rows
    import inspect

    ref_args = set(inspect.signature(scaled_dot_product_hardkuma).parameters)
    results["missing_args"] = sorted(ref_args - set(inspect.signature(scaled_dot_product_hardkuma_triton).parameters))
    x = torch.zeros(1, 1, 4, 32)
    results["reasons"] = dict(
        need_weights=unsupported_reason(x, x, x, x, x, need_weights=True),
        float64=unsupported_reason(*(x.double(),) * 5),
        ok=unsupported_reason(x, x, x, x, x),
    )
    Path(path).write_text(json.dumps(results))


# ---------------------------------------------------------------------- tests (parent process)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    if not HAS_TRITON:
        pytest.skip("triton is not installed (pip install .[gpu])")
    out = tmp_path_factory.mktemp("triton") / "results.json"
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, __file__, "--worker", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("name", sorted(CASES))
def test_kernels_match_reference(results, name):
    """Outputs, statistics and gradients equal the CPU path's on the same noise."""
    atol, rtol = TOL[CASES[name].get("dtype", "float32")]
    rows = results[name]
    for key in NAMES:
        r = rows[key]
        assert r["shape_ok"], (name, key)
        assert r["finite"], (name, key)
        tol = atol + rtol * r["scale"]
        if key in ("nonzero", "cells") and CASES[name].get("dtype", "float32") == "float32":
            tol = 0.0  # the same gates: exactly the same count of non-zero cells
        assert r["diff"] <= tol, f"{name}: {key} differs by {r['diff']:.3g} (scale {r['scale']:.3g}, tol {tol:.3g})"


def test_fully_masked_rows_are_zero(results):
    assert results["train_softmax_fully_masked_rows_atomic"]["masked_rows_zero"]


def test_no_keys_gives_zero_output(results):
    rows = results["train_none_no_keys"]
    assert rows["out"]["scale"] == 0.0 and rows["out"]["diff"] == 0.0 and rows["cells"]["scale"] == 0.0


def test_takes_every_argument_of_the_reference(results):
    """A dispatcher can pass the reference call's keyword arguments on unchanged."""
    assert results["missing_args"] == []


def test_unsupported_inputs_are_named(results):
    reasons = results["reasons"]
    assert "need_weights" in reasons["need_weights"]
    assert "float64" in reasons["float64"]
    assert reasons["ok"] is None


# ---------------------------------------------------------------------- the GPU benchmark script

BENCH = ROOT / "benchmarks" / "gpu_attention.py"


def _doc_counts(text: str):
    """The op-count rows ``(pass, exp, log, division)`` of a docstring table."""
    rows = re.findall(r"^\s*((?:forward|backward)[^|\n]*?)\s{2,}(\d+)\s+(\d+)\s+(\d+)\s*$", text, re.M)
    return {name.strip(): tuple(float(x) for x in nums) for name, *nums in rows}


def test_benchmark_help():
    proc = subprocess.run([sys.executable, str(BENCH), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--dry-run" in proc.stdout and "--out" in proc.stdout


def test_benchmark_needs_out():
    proc = subprocess.run([sys.executable, str(BENCH)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--out" in proc.stderr


@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed (pip install .[gpu])")
def test_benchmark_dry_run(tmp_path):
    """The table code runs end to end on tiny CPU shapes through the interpreter; its agreement
    rows are small and its op counts are the ones the docstrings state."""
    out = tmp_path / "gpu.md"
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(BENCH), "--dry-run", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = out.read_text()
    assert "error" not in text.lower()
    assert re.search(r"^\| hardkuma \| 32 \| 32 \| 2 \| [0-9.]+ \|", text, re.M)
    assert re.search(r"^\| sdpa-flash \| 32 \| 32 \|", text, re.M)
    diffs = re.findall(r"^\| float32 \| (\w+) \| ([0-9.e+-]+) \| ([0-9.e+-]+) \|$", text, re.M)
    assert len(diffs) == 8
    for name, diff, scale in diffs:
        assert float(diff) <= 1e-4 * (1 + float(scale)), (name, diff, scale)
    measured = {m[0].strip(): tuple(float(x) for x in m[1:])
                for m in re.findall(r"^\| ((?:forward|backward)[^|]*)\| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", text, re.M)}
    assert len(measured) == 6
    for doc in (BENCH.read_text(), (ROOT / "hardkuma_attention" / "triton_kernels.py").read_text()):
        assert _doc_counts(doc) == measured


@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed (pip install .[gpu])")
def test_kernels_compile_for_the_gpu():
    """What the interpreter cannot check: the training kernels (key padding, causal, softmax,
    statistics; bf16, head dim 64; with and without atomic dq) compile to sm_90 machine code
    (triton's own ptxas, no GPU needed)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               TRITON_DEFAULT_FP_FUSION="1")
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run([sys.executable, str(BENCH), "--compile-only", "90", "--head-dims", "64",
                           "--compile-configs", "64,32,4,2,64,16,4,2", "64,32,4,2,64,16,4,2,1"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = re.findall(r"^\| (forward|backward dk/dv|backward dq|backward dk/dv \+ atomic dq) \| (?:64 \| 32|64 \| 16) "
                      r"\| 4 \| 2 \| (\d+) \|", proc.stdout, re.M)
    assert len(rows) == 5 and all(int(r[1]) > 0 for r in rows), proc.stdout


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        _worker(sys.argv[2])
    else:
        sys.exit("usage: test_triton_interpret.py --worker OUT.json (run by pytest)")
