#!/usr/bin/env python
r"""HardKuma attention on the GPU (Triton kernels) against FlashAttention and FlexAttention.

One call measures everything and writes a Markdown table (``--out``); it installs nothing (it
needs torch with CUDA, triton, and this repository on ``PYTHONPATH``)::

    python benchmarks/gpu_attention.py --out gpu_attention.md

1. **Speed and memory** (bf16, H = 16 heads, head dims 64 and 128, ``B T = 32k`` tokens, T = 1k
   ... 32k): forward-only and forward+backward time (CUDA events after warm-up, median of
   ``--reps``) and the peak memory allocated by one forward+backward above the inputs, for

   - ``sdpa-flash``: ``F.scaled_dot_product_attention`` with the FlashAttention backend only;
   - ``flex-sigmoid``: compiled FlexAttention with the elementwise score_mod ``log(sigmoid(s))``
     (softmax of it = sigmoid attention normalised over the row; the closest kernel class: one
     elementwise transcendental map per cell on top of softmax);
   - ``hardkuma``: :func:`hardkuma_attention.triton_kernels.scaled_dot_product_hardkuma_triton`,
     training (sampled gates), ``normalize="softmax"``, split parameterisation (the a/b scores
     from the two halves of the head dim, as ``HardKumaAttention``), expected-L0 statistics on and
     their gradient in the backward; ``hardkuma-eval``: the deterministic gates, forward only.

   Ratios are to ``sdpa-flash`` at the same shape, measured in the same run.
2. **Agreement** of the GPU kernels with the CPU reference path
   (:func:`hardkuma_attention.functional.scaled_dot_product_hardkuma`, same seed, hence the same
   counter noise) on real shapes: H = 16, T = S = 1024, head dim 64, key padding and causal
   masks, float32 and bfloat16; outputs, statistics and gradients.
3. **Transcendental ops per cell** of the kernels, counted by running them under Triton's
   interpreter with ``exp``/``log``/division instrumented (elements of (query block x key block)
   tiles only, divided by the number of cells; T = S = 32, blocks 16).  Measured with this
   script (``--count-only``) at commit time:

   =====================================  =====  =====  ========
   pass                                    exp    log   division
   =====================================  =====  =====  ========
   forward, training, none                  4      4       4
   forward, training, softmax + stats       7      5       4
   forward, eval, softmax + stats           9      5       4
   backward, training, softmax + L0 grad   14     10      20
   backward, eval, softmax + L0 grad       18     10      20
   backward, training, atomic dq            7      5      10
   =====================================  =====  =====  ========

   (backward: both backward kernels, ``dk/dv`` and ``dq``, recompute the cell's gate, so per
   cell it is twice one recomputation.)  Softmax attention needs one exp per cell forward and one
   backward; the GPU's special-function units, not its tensor cores, bound this kernel.

``--dry-run`` runs the same code on CPU tensors through Triton's interpreter with tiny shapes
(checks the table code; the times mean nothing).  No GPU was lent while this was written: there is
no measured table in the README yet.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path



def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=False, help="Markdown file to write the tables to (required unless --count-only)")
    p.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384, 32768])
    p.add_argument("--head-dims", type=int, nargs="+", default=[64, 128])
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--tokens", type=int, default=32768, help="B * T per call")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--methods", nargs="+", default=["sdpa-flash", "flex-sigmoid", "hardkuma", "hardkuma-eval"])
    p.add_argument("--agreement-length", type=int, default=1024)
    p.add_argument("--skip-agreement", action="store_true")
    p.add_argument("--no-tune", dest="tune", action="store_false",
                   help="use the default launch parameters instead of timing a small grid first")
    p.add_argument("--tune-length", type=int, default=4096)
    p.add_argument("--skip-count", action="store_true")
    p.add_argument("--count-only", action="store_true", help="print the op-count table and exit")
    p.add_argument("--compile-only", type=int, metavar="ARCH", default=None,
                   help="compile the training kernels for sm_ARCH (e.g. 90) without a GPU and print registers "
                        "and spills per launch configuration (--compile-configs), then exit")
    p.add_argument("--compile-configs", nargs="+", default=None, metavar="BM,BN,WARPS,STAGES,BWD_BM,BWD_BN,BWD_WARPS,BWD_STAGES",
                   help="launch configurations for --compile-only (default: the --tune grid)")
    p.add_argument("--dry-run", action="store_true",
                   help="tiny shapes on CPU through TRITON_INTERPRET=1 (checks the script, not a measurement)")
    args = p.parse_args(argv)
    if not args.count_only and args.compile_only is None and not args.out:
        p.error("--out is required (a Markdown file)")
    if args.dry_run:
        args.lengths, args.head_dims, args.heads, args.tokens = [32], [32], 2, 64
        args.warmup, args.reps, args.agreement_length, args.tune = 0, 1, 32, False
    return args


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _reexec_interpreted(argv) -> int:
    """Run this script again with ``TRITON_INTERPRET=1`` (it must be set before triton is
    imported)."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    return subprocess.call([sys.executable, __file__] + list(argv), env=env)


# ---------------------------------------------------------------------- timing


def _time_ms(fn, warmup: int, reps: int, cuda: bool) -> float:
    import torch

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, reps)):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _peak_mib(fn, cuda: bool) -> float:
    """Peak memory allocated by ``fn`` above what was allocated before (MiB; NaN on CPU)."""
    import torch

    if not cuda:
        return float("nan")
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


# ---------------------------------------------------------------------- methods


def _inputs(B, H, T, D, dtype, device, seed=0):
    import torch

    g = torch.Generator(device=device).manual_seed(seed)
    xs = [torch.randn(B, H, T, D, device=device, dtype=dtype, generator=g) for _ in range(4)]
    q, k, v = (x.requires_grad_() for x in xs[:3])
    return q, k, v, xs[3]


def _clear(*xs):
    for x in xs:
        x.grad = None


def _sdpa(q, k, v, go, cuda):
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    ctx = (lambda: sdpa_kernel(SDPBackend.FLASH_ATTENTION)) if cuda else contextlib.nullcontext

    def fwd():
        with ctx(), __import__("torch").no_grad():
            F.scaled_dot_product_attention(q, k, v)

    def step():
        _clear(q, k, v)
        with ctx():
            F.scaled_dot_product_attention(q, k, v).backward(go)

    return fwd, step


def _flex(q, k, v, go, cuda):
    import torch
    from torch.nn.attention.flex_attention import flex_attention

    def score_mod(score, b, h, q_idx, kv_idx):
        return torch.log(torch.sigmoid(score))

    flex = torch.compile(flex_attention) if cuda else flex_attention  # dynamic after the first new shape

    def fwd():
        with torch.no_grad():
            flex(q, k, v, score_mod=score_mod)

    def step():
        _clear(q, k, v)
        flex(q, k, v, score_mod=score_mod).backward(go)

    return fwd, step


def _hardkuma(q, k, v, go, cuda, training=True, normalize="softmax", kernel=None):
    import torch

    from hardkuma_attention.triton_kernels import scaled_dot_product_hardkuma_triton

    half = q.shape[-1] // 2
    scale = 1.0 / math.sqrt(half)

    def call():
        qa, qb, ka, kb = q[..., :half], q[..., half:], k[..., :half], k[..., half:]
        return scaled_dot_product_hardkuma_triton(qa, ka, qb, kb, v, scale=scale, training=training,
                                                  normalize=normalize, want_stats=True, kernel=kernel)

    def fwd():
        with torch.no_grad():
            call()

    def step():
        _clear(q, k, v)
        out, _, st = call()
        torch.autograd.backward([out, st.l0_sum], [go, torch.ones_like(st.l0_sum)])

    return fwd, step


_METHODS = {
    "sdpa-flash": lambda q, k, v, go, cuda, kernel: _sdpa(q, k, v, go, cuda),
    "flex-sigmoid": lambda q, k, v, go, cuda, kernel: _flex(q, k, v, go, cuda),
    "hardkuma": lambda q, k, v, go, cuda, kernel: _hardkuma(q, k, v, go, cuda, training=True, kernel=kernel),
    "hardkuma-eval": lambda q, k, v, go, cuda, kernel: _hardkuma(q, k, v, go, cuda, training=False, kernel=kernel),
}
#: launch parameters tried by --tune: (block_m, block_n, num_warps, num_stages) of the forward, then
#: the same of the backward kernels, then optionally 1 for atomic_dq (the first is KernelConfig's default)
_TUNE_GRID = ((64, 32, 4, 2, 64, 16, 4, 2), (64, 32, 4, 2, 64, 16, 4, 2, 1), (64, 64, 8, 2, 32, 16, 4, 2),
              (128, 32, 8, 2, 64, 32, 8, 2))


def _kernel_config(c):
    from hardkuma_attention.triton_kernels import KernelConfig

    return KernelConfig(block_m=c[0], block_n=c[1], num_warps=c[2], num_stages=c[3], bwd_block_m=c[4],
                        bwd_block_n=c[5], bwd_num_warps=c[6], bwd_num_stages=c[7], atomic_dq=len(c) > 8 and bool(c[8]))
_FWD_ONLY = {"hardkuma-eval"}


def _measure(method, B, H, T, D, args, device, dtype, kernel=None):
    """``dict(fwd, step, peak)`` (ms, ms, MiB) of one method at one shape, or an ``error``."""
    import torch

    cuda = device.type == "cuda"
    try:
        q, k, v, go = _inputs(B, H, T, D, dtype, device)
        fwd, step = _METHODS[method](q, k, v, go, cuda, kernel if kernel is not None else args.kernels.get(D))
        res = dict(fwd=_time_ms(fwd, args.warmup, args.reps, cuda))
        if method not in _FWD_ONLY:
            res["step"] = _time_ms(step, args.warmup, args.reps, cuda)
            res["peak"] = _peak_mib(step, cuda)
        return res
    except Exception as e:  # noqa: BLE001 - one failing cell must not lose the whole GPU run
        return dict(error=f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}")
    finally:
        if cuda:
            torch.cuda.empty_cache()


def tune(args, device, dtype) -> dict:
    """The fastest :class:`KernelConfig` of :data:`_TUNE_GRID` for the HardKuma training step per
    head dim, timed at ``T = --tune-length`` (``B T = --tokens``)."""
    best = {}
    T = args.tune_length
    B = max(1, args.tokens // T)
    for D in args.head_dims:
        timed = []
        for c in _TUNE_GRID:
            kernel = _kernel_config(c)
            r = _measure("hardkuma", B, args.heads, T, D, args, device, dtype, kernel=kernel)
            print("tune", D, kernel, r, flush=True)
            if "error" not in r:
                timed.append((r["step"], kernel))
        if timed:
            best[D] = min(timed, key=lambda x: x[0])[1]
    return best


def speed_rows(args, device, dtype):
    """Yields the Markdown rows of the speed table, one measured row at a time."""
    yield "| method | head dim | T | B | fwd ms | fwd ratio | fwd+bwd ms | fwd+bwd ratio | peak MiB | memory ratio |"
    yield "|---|---|---|---|---|---|---|---|---|---|"
    fmt = lambda x, f="{:.2f}": "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f.format(x)  # noqa: E731
    for D in args.head_dims:
        for T in args.lengths:
            B = max(1, args.tokens // T)
            base = None
            for method in args.methods:
                r = _measure(method, B, args.heads, T, D, args, device, dtype)
                print(method, D, T, B, r, flush=True)
                if "error" in r:
                    yield f"| {method} | {D} | {T} | {B} | {r['error']} |  |  |  |  |  |"
                    continue
                if method == "sdpa-flash":
                    base = r
                ratio = lambda key: (r[key] / base[key]) if base and key in r and key in base and base[key] else None  # noqa: E731
                yield (f"| {method} | {D} | {T} | {B} | {fmt(r['fwd'])} | {fmt(ratio('fwd'), '{:.2f}×')} | "
                       f"{fmt(r.get('step'))} | {fmt(ratio('step'), '{:.2f}×')} | {fmt(r.get('peak'), '{:.0f}')} | "
                       f"{fmt(ratio('peak'), '{:.2f}×')} |")


# ---------------------------------------------------------------------- agreement with the CPU path


def _agreement_case(dtype, T, device, heads):
    """Max differences GPU vs CPU (training, softmax, key padding + causal, stats)."""
    import torch

    from hardkuma_attention.functional import scaled_dot_product_hardkuma
    from hardkuma_attention.triton_kernels import scaled_dot_product_hardkuma_triton

    B, D = 2, 64
    g = torch.Generator().manual_seed(7)
    base = [torch.randn(B, heads, T, n, generator=g).to(dtype) for n in (32, 32, 32, 32, D)]
    lengths = torch.tensor([T, (3 * T) // 4])
    valid = (torch.arange(T) < lengths.view(B, 1)).view(B, 1, 1, T)
    go = torch.randn(B, heads, T, D, generator=g).to(dtype)

    def run(fn, dev, **extra):
        xs = [x.to(dev).clone().requires_grad_() for x in base]
        out, _, st = fn(*xs, scale=1 / math.sqrt(32), valid=valid.to(dev), is_causal=True, training=True,
                        normalize="softmax", want_stats=True, generator=torch.Generator().manual_seed(3), **extra)
        torch.autograd.backward([out, st.l0_sum], [go.to(dev), torch.ones_like(st.l0_sum)])
        return [out, st.l0_sum, st.nonzero] + [x.grad for x in xs]

    gpu = run(scaled_dot_product_hardkuma_triton, device)
    cpu = run(scaled_dot_product_hardkuma, torch.device("cpu"), compile=False)
    names = ("out", "l0_sum", "nonzero", "d_qa", "d_ka", "d_qb", "d_kb", "d_v")
    return [(n, float((a.detach().cpu().float() - b.detach().float()).abs().max()), float(b.detach().float().abs().max()))
            for n, a, b in zip(names, gpu, cpu)]


def agreement_table(args, device) -> str:
    import torch

    rows = ["| dtype | quantity | max abs difference | max abs (CPU) |", "|---|---|---|---|"]
    for dtype in (torch.float32, torch.bfloat16):
        try:
            for name, diff, scale in _agreement_case(dtype, args.agreement_length, device, args.heads):
                rows.append(f"| {str(dtype).replace('torch.', '')} | {name} | {diff:.3g} | {scale:.3g} |")
        except Exception as e:  # noqa: BLE001
            rows.append(f"| {dtype} | error | {type(e).__name__}: {str(e).splitlines()[0][:120]} | |")
    return "\n".join(rows)


# ---------------------------------------------------------------------- op counts (interpreter)

_COUNT_PASSES = {
    "forward, training, none": dict(training=True, normalize="none", want_stats=False, backward=False),
    "forward, training, softmax + stats": dict(training=True, normalize="softmax", want_stats=True, backward=False),
    "forward, eval, softmax + stats": dict(training=False, normalize="softmax", want_stats=True, backward=False),
    "backward, training, softmax + L0 grad": dict(training=True, normalize="softmax", want_stats=True, backward=True),
    "backward, eval, softmax + L0 grad": dict(training=False, normalize="softmax", want_stats=True, backward=True),
    "backward, training, atomic dq": dict(training=True, normalize="softmax", want_stats=True,
                                                             backward=True, atomic_dq=True),
}


def count_ops() -> dict:
    """Per-cell counts of exp, log and division in each pass (run under the interpreter)."""
    import numpy as np
    import torch
    from triton.runtime import interpreter as interp

    from hardkuma_attention import triton_kernels as tk

    np.seterr(all="ignore")
    T = S = 32
    bm = bn = 16
    counts = {"exp": 0, "log": 0, "div": 0}
    orig = {name: getattr(interp.InterpreterBuilder, f) for name, f in
            (("exp", "create_exp"), ("log", "create_log"), ("div", "create_fdiv"))}

    def counting(name, f):
        def wrapped(self, *a):
            out = f(self, *a)
            if out.data.size == bm * bn:  # elements of one (query block x key block) tile
                counts[name] += out.data.size
            return out
        return wrapped

    result = {}
    try:
        for name, f in (("exp", "create_exp"), ("log", "create_log"), ("div", "create_fdiv")):
            setattr(interp.InterpreterBuilder, f, counting(name, orig[name]))
        for label, cfg in _COUNT_PASSES.items():
            g = torch.Generator().manual_seed(0)
            xs = [torch.randn(1, 1, n, 32, generator=g).requires_grad_() for n in (T, S, T, S, S)]
            kernel = tk.KernelConfig(block_m=bm, block_n=bn, num_warps=1, num_stages=1, bwd_block_m=bm,
                                     bwd_block_n=bn, bwd_num_warps=1, bwd_num_stages=1,
                                     atomic_dq=cfg.get("atomic_dq", False))
            out, _, st = tk.scaled_dot_product_hardkuma_triton(
                *xs, scale=0.2, training=cfg["training"], normalize=cfg["normalize"],
                want_stats=cfg["want_stats"], kernel=kernel)
            if cfg["backward"]:
                for key in counts:
                    counts[key] = 0
                torch.autograd.backward([out, st.l0_sum], [torch.ones_like(out), torch.ones_like(st.l0_sum)])
            result[label] = {key: counts[key] / (T * S) for key in counts}
            for key in counts:
                counts[key] = 0
    finally:
        for name, f in (("exp", "create_exp"), ("log", "create_log"), ("div", "create_fdiv")):
            setattr(interp.InterpreterBuilder, f, orig[name])
    return result


def count_table(counts: dict) -> str:
    rows = ["| pass (per cell) | exp | log | division |", "|---|---|---|---|"]
    for label, c in counts.items():
        rows.append(f"| {label} | {c['exp']:g} | {c['log']:g} | {c['div']:g} |")
    return "\n".join(rows)


def _counts_via_subprocess() -> dict:
    env = dict(os.environ, TRITON_INTERPRET="1")  # hardkuma_attention: installed or on PYTHONPATH
    code = ("import json, runpy; g = runpy.run_path(%r); print(json.dumps(g['count_ops']()))"
            % str(Path(__file__).resolve()))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------- ahead-of-time compile check

_FLOAT_ARGS = {"scale", "p_drop", "lo", "hi", "amin", "amax", "log_k0", "log_k1"}
_F32_PTRS = {"ML", "STATS", "DELTA", "GL0", "DBIAS"}


def _signature(fn, dtype: str, constexprs: dict, f32=()) -> dict:
    """Triton signature of one of the kernels: data pointers of ``dtype``, masks ``*u8``, the
    float32 buffers and ``f32`` float32."""
    sig = {}
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name.isupper() and name not in ("H", "T", "S"):  # pointers (H, T, S are sizes)
            sig[name] = "*u8" if name == "VALID" else "*fp32" if name in _F32_PTRS or name in f32 else f"*{dtype}"
        else:
            sig[name] = "fp32" if name in _FLOAT_ARGS else "i32"
    return sig


def _ptxas():
    import triton

    bin_dir = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    return next((str(bin_dir / n) for n in ("ptxas-blackwell", "ptxas") if (bin_dir / n).exists()), "ptxas")


def compile_report(arch: int, configs, head_dim: int = 64) -> list:
    """Compile the training kernels (bf16, split head dim, softmax, statistics, key padding,
    causal) for ``sm_<arch>`` without a GPU and read registers / spills from ``ptxas -v``;
    ``configs``: tuples as :data:`_TUNE_GRID`."""
    import re
    import tempfile

    import triton
    from triton.backends.compiler import GPUTarget

    from hardkuma_attention import triton_kernels as tk

    half = head_dim // 2
    common = dict(DA=half, DB=half, BDA=max(16, half), BDB=max(16, half), BDV=head_dim, HAS_BIAS=0,
                  HAS_VALID=1, IS_CAUSAL=True, TRAINING=True, NORM=2, DROPOUT=False, PREC="tf32", DOT_F32=False)
    kernels = {"forward": (tk._fwd_kernel, dict(DV=head_dim, WANT_STATS=True, SKIP_ZERO=True)),
               "backward dk/dv": (tk._bwd_kv_kernel, dict(DV_=head_dim, WANT_L0=True, SKIP_ZERO=True)),
               "backward dq": (tk._bwd_q_kernel, dict(DV_=head_dim, WANT_L0=True, WANT_DBIAS=False))}
    rows = []
    for config in configs:
        for label, (fn, extra) in kernels.items():
            bm, bn, nw, ns = config[:4] if label == "forward" else config[4:8]
            atomic = len(config) > 8 and bool(config[8])
            if atomic and label == "backward dq":
                continue
            ce = dict(common, BLOCK_M=bm, BLOCK_N=bn, **extra)
            if label == "backward dk/dv":
                ce["ATOMIC_DQ"] = atomic
                label = "backward dk/dv + atomic dq" if atomic else label
            sig = _signature(fn, "bf16", ce, f32=("DQA", "DQB") if atomic else ())
            src = triton.compiler.ASTSource(fn=fn, signature=sig, constexprs=ce)
            try:
                k = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=dict(num_warps=nw, num_stages=ns))
                with tempfile.TemporaryDirectory() as d:
                    ptx = Path(d) / "k.ptx"
                    ptx.write_text(k.asm["ptx"])
                    log = subprocess.run([_ptxas(), f"--gpu-name=sm_{arch}a", "-v", str(ptx), "-o", str(ptx) + ".cubin"],
                                         capture_output=True, text=True).stderr
                regs = re.search(r"Used (\d+) registers", log)
                spill = re.search(r"(\d+) bytes spill stores", log)
                rows.append((label, bm, bn, nw, ns, int(regs.group(1)) if regs else -1,
                             int(spill.group(1)) if spill else -1, ""))
            except Exception as e:  # noqa: BLE001
                rows.append((label, bm, bn, nw, ns, -1, -1, f"{type(e).__name__}: {str(e).splitlines()[0][:100]}"))
            print(rows[-1], flush=True)
    return rows


def compile_table(rows) -> str:
    out = ["| kernel | block_m | block_n | warps | stages | registers | spill stores (bytes) | error |",
           "|---|---|---|---|---|---|---|---|"]
    out += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
    return "\n".join(out)


# ---------------------------------------------------------------------- main


def _header(device, dtype, args) -> str:
    import torch
    import triton

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (TRITON_INTERPRET=1, dry run)"
    return (f"Device: {name}; torch {torch.__version__}, triton {triton.__version__}; {str(dtype).replace('torch.', '')}, "
            f"H = {args.heads}, B·T = {args.tokens} tokens, median of {args.reps} after {args.warmup} warm-up.\n"
            f"Command: `python benchmarks/gpu_attention.py {' '.join(sys.argv[1:])}`\n")


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if (args.dry_run or args.count_only) and not _interpreting():
        return _reexec_interpreted(argv)
    if args.count_only:
        print(count_table(count_ops()))
        return 0
    if args.compile_only is not None:
        configs = [tuple(int(x) for x in c.split(",")) for c in args.compile_configs] if args.compile_configs \
            else _TUNE_GRID
        rows = []
        for D in args.head_dims:
            print(f"head dim {D}")
            rows += compile_report(args.compile_only, configs, D)
        print(compile_table(rows))
        return 1 if any(r[-1] for r in rows) else 0
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("error: no CUDA device (use --dry-run to check the script on CPU)", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.dry_run else "cuda")
    dtype = torch.float32 if args.dry_run else torch.bfloat16
    if args.dry_run:
        args.methods = [m for m in args.methods if m != "flex-sigmoid"]  # compiled FlexAttention needs a GPU
    out, t0 = Path(args.out), time.time()
    parts = ["# HardKuma attention on the GPU\n", _header(device, dtype, args)]
    flush = lambda: _write(out, "\n".join(parts) + "\n")  # noqa: E731 - a killed run keeps what it measured
    if not args.skip_count:
        try:
            table = count_table(count_ops() if _interpreting() else _counts_via_subprocess())
        except Exception as e:  # noqa: BLE001 - the timings matter more
            table = f"error: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        parts += ["## Transcendental ops per cell (interpreter count)\n", table, ""]
        flush()
    args.kernels = tune(args, device, dtype) if args.tune else {}
    tuned = "; ".join(f"head dim {d}: {k}" for d, k in args.kernels.items()) or "defaults"
    parts += [f"HardKuma launch parameters: {tuned}.\n", "## Speed and memory\n"]
    for row in speed_rows(args, device, dtype):
        parts.append(row)
        flush()
    parts.append("")
    if not args.skip_agreement:
        parts += ["## Agreement with the CPU reference path (same seed)\n", agreement_table(args, device), ""]
    parts.append(f"Total wall time {time.time() - t0:.0f} s.")
    flush()
    print(out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
