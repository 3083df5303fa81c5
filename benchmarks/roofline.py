"""Roofline of the streaming HardKuma tile kernels: transcendental ops per cell x this CPU's
measured vectorised exp/log throughput, against the measured kernel time.

    python benchmarks/roofline.py [--threads 2] [--cells 1048576] [--compile auto|on|off]
    python benchmarks/roofline.py --cold-start      # first vs second training step, fresh inductor cache
    python benchmarks/roofline.py --profile 4096 2  # where a step's time goes (T, batch), torch.profiler

Softmax attention needs one ``exp`` per cell; a HardKuma gate needs many more (counted below from
``hardkuma_attention/streaming.py``), so at long T the gate math, not the matmuls, sets the limit.
The eager kernels draw the noise with int32 hash states (the same bits as the int64 reference,
about 2.5x faster); the compiled ones keep int64.  The bound is ``sum over op kinds of count x
(ns per element of that op)``, each op timed alone on a tile-sized float32 buffer (in cache,
vectorised, the given threads).  Printed: ns per cell of the
bound and of the kernel, and their ratio (1.0 = at the roofline).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import torch

from hardkuma_attention.cli.common import ranged

# Transcendental calls per cell, read off the kernels in hardkuma_attention/streaming.py
# (softplus = exp + log1p; log(1 - e^x) = log(-expm1(x))).
OPS = {
    # softplus a, b; log u; expm1; log w; exp -> k
    "train forward (no stats)": {"exp": 3, "log1p": 2, "log": 2, "expm1": 1},
    # + log(1 - k0^a), exp(b L)
    "train forward + L0": {"exp": 4, "log1p": 2, "log": 3, "expm1": 2},
    # softplus and sigmoid of a, b; the sample's logs again; L0 and its expm1(-a log k0)
    "train backward + L0": {"exp": 4, "log1p": 2, "log": 3, "expm1": 3, "sigmoid": 2},
    # softplus a, b; 1 - P0 and P1 (log(1 - k^a), exp each); the median (expm1, log, exp).  The
    # decision needs 1 - P0 and P1 themselves, so without the statistics the count is the same
    # (the expected-L0 cell is 1 - P0): nothing else runs in eval (no noise hash, no L0 sum).
    "eval forward (no stats)": {"exp": 5, "log1p": 2, "log": 3, "expm1": 3},
    "eval forward + L0": {"exp": 5, "log1p": 2, "log": 3, "expm1": 3},
}
SOFTMAX = {"exp": 1}


def time_it(fn, reps: int) -> float:
    fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def op_costs(n: int, reps: int) -> dict:
    """ns per element of each op, out-of-place on an n-element float32 buffer in (0.01, 0.99)."""
    x = torch.rand(n) * 0.98 + 0.01
    out = torch.empty_like(x)
    fns = {"exp": torch.exp, "log": torch.log, "log1p": torch.log1p, "expm1": torch.expm1, "sigmoid": torch.sigmoid}
    return {k: time_it(lambda f=f: f(x, out=out), reps) / n * 1e9 for k, f in fns.items()}


def bound(ops: dict, cost: dict) -> float:
    return sum(c * cost[k] for k, c in ops.items())


def tile_inputs(cells: int):
    from hardkuma_attention.streaming import _mix_k, murmur3_row_hash

    H, t = 8, 64
    s = max(1, cells // (H * t))
    g = torch.Generator().manual_seed(0)
    sa, sb = torch.randn(1, H, t, s, generator=g), torch.randn(1, H, t, s, generator=g)
    hrow = murmur3_row_hash(12345, torch.arange(H).view(1, H, 1, 1), torch.arange(t).view(t, 1))
    return sa, sb, hrow, _mix_k(torch.arange(s))


def kernel_times(cells: int, reps: int, compile_mode: str) -> dict:
    from hardkuma_attention import streaming as st
    from hardkuma_attention.config import DEFAULT_AB_RANGE
    from hardkuma_attention.distributions import DEFAULT_SUPPORT

    kernels = st.TileKernels(compile={"auto": None, "on": True, "off": False}[compile_mode])
    compiled = kernels.use_compiled(cells)
    sa, sb, h64, k64 = tile_inputs(cells)
    h32, k32 = st._as_int32(h64), st._as_int32(k64)
    hrow, kcol = h64, k64
    if not compiled:  # the hash states the eager kernels get from the plan
        hrow, kcol = h32, k32
    n = sa.numel()
    (lo, hi), (amin, amax) = DEFAULT_SUPPORT, DEFAULT_AB_RANGE
    lk0 = float(torch.log(torch.tensor(-lo / (hi - lo))))
    dw = torch.randn_like(sa)
    g_l0 = torch.tensor(0.3)

    def fwd(stats):
        return lambda: kernels.run(st._fwd_train_tile, compiled, sa, sb, hrow, kcol, None, None, None,
                                   lo, hi, amin, amax, lk0, 0.0, stats)

    def bwd():
        return kernels.run(st._bwd_train_tile, compiled, sa, sb, hrow, kcol, None, None, None, dw.clone(), None,
                           None, g_l0, lo, hi, amin, amax, lk0, 0.0)

    def evl(stats):
        return lambda: kernels.run(st._fwd_eval_tile, compiled, sa, sb, None, None, lo, hi, amin, amax, lk0, stats)

    res = {"train forward (no stats)": fwd(False), "train forward + L0": fwd(True),
           "train backward + L0": bwd, "eval forward (no stats)": evl(False), "eval forward + L0": evl(True),
           "noise hash alone (eager)": lambda: st._hash_uniform(h64, k64, torch.float32),
           "noise hash, int32 (eager)": lambda: st._hash_uniform(h32, k32, torch.float32)}
    return {k: time_it(f, reps) / n * 1e9 for k, f in res.items()}, compiled


def cold_start() -> None:
    """First and second training step of HardKumaAttention(512, 8) at T = 512, B = 4 (default
    constructor) in a fresh process with an empty inductor cache."""
    code = (
        "import time, torch\n"
        "from hardkuma_attention import HardKumaAttention\n"
        "torch.manual_seed(0); x = torch.randn(4, 512, 512)\n"
        "m = HardKumaAttention(512, 8, batch_first=True)\n"
        "for i in range(2):\n"
        "    t = time.perf_counter(); m(x, x, x, need_weights=False)[0].sum().backward()\n"
        "    print(f'step {i + 1}: {time.perf_counter() - t:.1f} s')\n"
    )
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache)
        for label in ("empty inductor cache", "warm inductor cache"):
            print(f"-- {label}", flush=True)
            subprocess.run([sys.executable, "-c", code], env=env, check=True)


def profile_step(T: int, B: int, threads: int) -> None:
    """Self CPU time of one training step (forward + backward) and one eval forward of
    ``HardKumaAttention(512, 8)`` at (T, B), after one warm-up of each, grouped by op and sorted:
    the compiled gate kernels appear as inductor regions, the projections and scores as
    ``addmm`` / ``bmm`` / ``baddbmm``.  Prints each op's share of the step."""
    from torch.profiler import ProfilerActivity, profile

    from hardkuma_attention import HardKumaAttention

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x = torch.randn(B, T, 512)
    m = HardKumaAttention(512, 8, batch_first=True)

    def train():
        m.train()
        m(x, x, x, need_weights=False)[0].sum().backward()

    def evaluate():
        m.eval()
        with torch.no_grad():
            m(x, x, x, need_weights=False)

    for label, fn in (("training step", train), ("eval forward", evaluate)):
        fn()  # warm-up (compilation, allocator)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t = time.perf_counter()
            fn()
            wall = time.perf_counter() - t
        rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
        total = sum(e.self_cpu_time_total for e in rows)
        print(f"-- {label}, T={T}, B={B}, {threads} threads: {wall * 1e3:.0f} ms wall")
        for e in rows[:12]:
            print(f"   {e.key[:60]:60s} {e.self_cpu_time_total / 1e3:9.1f} ms {100 * e.self_cpu_time_total / total:5.1f} %")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=ranged(int, 1), default=2)
    p.add_argument("--cells", type=ranged(int, 1), default=1 << 20, help="cells per tile")
    p.add_argument("--reps", type=ranged(int, 1), default=5)
    p.add_argument("--compile", choices=("auto", "on", "off"), default="auto")
    p.add_argument("--cold-start", action="store_true")
    p.add_argument("--profile", type=ranged(int, 1), nargs=2, metavar=("T", "B"), help="profile one step at length T, batch B")
    a = p.parse_args(argv)
    if a.cold_start:
        cold_start()
        return
    if a.profile:
        profile_step(*a.profile, a.threads)
        return
    torch.set_num_threads(a.threads)
    cost = op_costs(a.cells, a.reps)
    print(f"threads {a.threads}, tile {a.cells} cells; ns per element: "
          + ", ".join(f"{k} {v:.2f}" for k, v in cost.items()))
    print(f"softmax bound (1 exp per cell): {bound(SOFTMAX, cost):.2f} ns/cell")
    times, compiled = kernel_times(a.cells, a.reps, a.compile)
    print(f"kernels: {'compiled' if compiled else 'eager'}")
    print(f"{'kernel':28s} {'transc./cell':>12s} {'bound ns':>9s} {'measured ns':>12s} {'ratio':>6s}")
    for k, ops in OPS.items():
        b = bound(ops, cost)
        print(f"{k:28s} {sum(ops.values()):12d} {b:9.2f} {times[k]:12.2f} {times[k] / b:6.2f}")
    for k in ("noise hash alone (eager)", "noise hash, int32 (eager)"):  # int64 / int32 states
        print(f"{k:28s} {'':12s} {'':9s} {times[k]:12.2f}")


if __name__ == "__main__":
    main()
