"""Forward+backward time and activation memory of attention layers, as ratios to softmax attention.

    python benchmarks/attention_speed.py                       # B=32, H=8, E=512, T in {128, 256}
    python benchmarks/attention_speed.py --lengths 128 --repeats 5 --threads 2

Every variant is a full attention layer (projections included) on the same random input, fp32 on
the CPU.  Timings are medians over ``--repeats`` rounds in which the variants run interleaved (so a
load change on the machine hits them all alike); ratios are to ``nn.MultiheadAttention`` measured in
the same run.  Memory is the activation memory kept for the backward pass: the bytes of the distinct
tensors autograd saves during the forward (``torch.autograd.graph.saved_tensors_hooks``), which is
what scales with batch × heads × T²; parameters and the input are not counted.

Variants:
  softmax            nn.MultiheadAttention, need_weights=False (PyTorch's SDPA path; the baseline)
  softmax+weights    nn.MultiheadAttention, need_weights=True (materialises the attention matrix)
  entmax15/sparsemax the same layer with entmax15 / sparsemax in place of softmax (`entmax` package)
  hardkuma           HardKumaAttention, split parameterisation, fused gate op (the default)
  hardkuma-separate  HardKumaAttention, separate a/b projections, fused gate op
  hardkuma-compiled  as hardkuma, with compile=True (torch.compile'd elementwise kernels)
  hardkuma-separate-compiled
  hardkuma-naive     HardKumaAttention, split, the gate math as a chain of autograd ops
"""
from __future__ import annotations

import argparse
import math
import statistics
import time
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from hardkuma_attention import HardKumaAttention
from hardkuma_attention import attention as attention_module
from hardkuma_attention import functional as hk_functional


class MapAttention(nn.Module):
    """Multi-head attention with an arbitrary normalising map over the scores (entmax, ...)."""

    def __init__(self, embed_dim, num_heads, fn):
        super().__init__()
        self.h, self.d, self.fn = num_heads, embed_dim // num_heads, fn
        self.in_proj = nn.Linear(embed_dim, 3 * embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, x):  # (B, T, E)
        B, T, E = x.shape
        q, k, v = self.in_proj(x).view(B, T, 3, self.h, self.d).permute(2, 0, 3, 1, 4)
        p = self.fn(q @ k.transpose(-1, -2) / math.sqrt(self.d), dim=-1)
        return self.out_proj((p @ v).transpose(1, 2).reshape(B, T, E))


@contextmanager
def unfused():
    """Route HardKumaAttention's training path through the chain-of-autograd-ops reference."""
    original = attention_module.hardkuma_attention_gates

    def reference(qa, ka, qb, kb, scale, bias, valid, support, ab_clamp, normalize_sum, want_l0, compile):
        sa = qa @ ka.transpose(-1, -2) * scale
        sb = qb @ kb.transpose(-1, -2) * scale
        w = hk_functional.hardkuma_weights_from_scores(
            sa, sb, valid, normalize="sum" if normalize_sum else "none", support=support,
            ab_clamp=ab_clamp, fused=False,
        )
        return w, None

    attention_module.hardkuma_attention_gates = lambda *a, **kw: reference(*a, **kw)
    try:
        yield
    finally:
        attention_module.hardkuma_attention_gates = original


def build(name, E, H):
    if name.startswith("softmax"):
        m = nn.MultiheadAttention(E, H, batch_first=True)
        need = name == "softmax+weights"
        return m, lambda x: m(x, x, x, need_weights=need)[0], None
    if name in ("entmax15", "sparsemax"):
        import entmax

        m = MapAttention(E, H, getattr(entmax, name))
        return m, m, None
    if name.startswith("hardkuma"):
        param = "separate" if "separate" in name else "split"
        m = HardKumaAttention(E, H, batch_first=True, parameterization=param, compile="compiled" in name)
        ctx = unfused if name == "hardkuma-naive" else None
        return m, lambda x: m(x, x, x, need_weights=False)[0], ctx
    raise ValueError(f"unknown variant {name!r}")


def step(fn, x, ctx):
    if ctx is None:
        out = fn(x)
    else:
        with ctx():
            out = fn(x)
    out.sum().backward()


def saved_bytes(module, fn, x, ctx):
    seen = {}

    def pack(t):
        try:
            key = (t.untyped_storage().data_ptr(), t.dtype)
            seen[key] = max(seen.get(key, 0), t.untyped_storage().nbytes())
        except RuntimeError:
            pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        if ctx is None:
            out = fn(x)
        else:
            with ctx():
                out = fn(x)
    params = {p.untyped_storage().data_ptr() for p in module.parameters()}
    params.add(x.untyped_storage().data_ptr())
    del out
    return sum(v for (ptr, _), v in seen.items() if ptr not in params)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--embed-dim", type=int, default=512)
    ap.add_argument("--lengths", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--variants", nargs="+",
        default=["softmax", "softmax+weights", "entmax15", "sparsemax", "hardkuma", "hardkuma-separate",
                 "hardkuma-compiled", "hardkuma-separate-compiled", "hardkuma-naive"],
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        import entmax  # noqa: F401
    except ImportError:
        args.variants = [v for v in args.variants if v not in ("entmax15", "sparsemax")]
        print("entmax not installed: skipping entmax15/sparsemax (pip install -e '.[bench]')")
    print(f"torch {torch.__version__}, {args.threads} threads, fp32 CPU, batch {args.batch}, "
          f"heads {args.heads}, embed {args.embed_dim}, median of {args.repeats} interleaved rounds")
    for T in args.lengths:
        torch.manual_seed(0)
        x = torch.randn(args.batch, T, args.embed_dim, requires_grad=True)
        layers = {name: build(name, args.embed_dim, args.heads) for name in args.variants}
        times = {name: [] for name in args.variants}
        for name, (_, fn, ctx) in layers.items():  # warm-up
            step(fn, x, ctx)
        for _ in range(args.repeats):
            for name, (_, fn, ctx) in layers.items():
                start = time.perf_counter()
                step(fn, x, ctx)
                times[name].append(time.perf_counter() - start)
        mem = {}
        for name, (module, fn, ctx) in layers.items():
            mem[name] = saved_bytes(module, fn, x, ctx)
        base_t = statistics.median(times["softmax"]) if "softmax" in times else None
        base_m = mem.get("softmax")
        print(f"\nT = {T}")
        print(f"{'variant':<27} {'fwd+bwd ms':>10} {'x softmax':>9} {'saved MiB':>10} {'x softmax':>9}")
        for name in args.variants:
            t = statistics.median(times[name])
            rt = f"{t / base_t:9.2f}" if base_t else "        -"
            rm = f"{mem[name] / base_m:9.2f}" if base_m else "        -"
            print(f"{name:<27} {1000 * t:10.1f} {rt} {mem[name] / 2**20:10.1f} {rm}")


if __name__ == "__main__":
    main()
