"""Time and memory of attention layers, as ratios to softmax attention measured in the same run.

Per-length mode (the default): forward+backward time and saved-tensor memory at fixed batch::

    python benchmarks/attention_speed.py                       # B=32, H=8, E=512, T in {128, 256}
    python benchmarks/attention_speed.py --lengths 128 --repeats 5 --threads 2

``--mode eval`` times the eval forward under ``no_grad`` instead (per-length mode)::

    python benchmarks/attention_speed.py --lengths 1024 --batch 8 --threads 1 --mode eval --variants softmax hardkuma

Length sweep at a constant token budget (``--sweep``; B = tokens / T), training (forward +
backward) and inference (eval forward under ``no_grad``), saved-tensor bytes and peak RSS::

    python benchmarks/attention_speed.py --sweep --threads 2 --rounds 7 --markdown --out sweep.json
    python benchmarks/attention_speed.py --sweep --lengths 128 256 --tokens 1024 --rounds 3   # a quick check

Every variant is a full attention layer (projections included) on the same random input, fp32 on
the CPU.  Timings are medians over ``--repeats``/``--rounds`` rounds in which the variants run
interleaved (so a load change on the machine hits them all alike); ratios are to
``nn.MultiheadAttention`` with ``need_weights=False`` (PyTorch's SDPA path) measured in the same
process.  "saved" is the activation memory kept for the backward pass: the bytes of the distinct
tensors autograd saves during a training forward (``torch.autograd.graph.saved_tensors_hooks``),
parameters and the input not counted.

In the sweep, each (length, variant) first runs alone in a fresh subprocess for the memory figures
(a variant whose run fails, e.g. killed for memory, is reported and left out of the timings), then
each length's timings run in one fresh subprocess (all variants, interleaved).  Memory figures:
"saved" as above; "peak RSS", the process's peak resident set (``getrusage(RUSAGE_SELF).ru_maxrss``)
over the whole run (interpreter, imports, any one-off kernel compilation, a warm-up training and
inference step, the measured steps); "step RSS", the peak over one training and one inference step
after the warm-up minus the resident set before them (the peak is reset through
``/proc/self/clear_refs``, and glibc's mmap threshold is fixed in that subprocess so that freed
blocks go back to the OS), i.e. the memory the variant needs at this length.  Variants that materialise the whole (B, H, T, S) map
(entmax15, sparsemax, softmax+weights, hardkuma-naive) are skipped, with the reason printed, when one
fp32 map would exceed ``--map-budget-mib``.  ``--out FILE`` keeps every figure (JSON, written after
each length through a temporary file); rerunning the same command resumes after the lengths it holds.

Variants:
  softmax            nn.MultiheadAttention, need_weights=False (PyTorch's SDPA path; the baseline)
  softmax+weights    nn.MultiheadAttention, need_weights=True (materialises the attention matrix)
  entmax15/sparsemax the same layer with entmax15 / sparsemax in place of softmax (`entmax` package)
  hardkuma-default   HardKumaAttention(E, H): the default constructor, nothing else passed
  hardkuma           HardKumaAttention, split parameterisation, compile=False (the eager kernels)
  hardkuma-separate  HardKumaAttention, separate a/b projections, compile=False
  hardkuma-compiled  as hardkuma, with compile=True (torch.compile'd kernels)
  hardkuma-separate-compiled
  hardkuma-naive     the split layer's gate math as a chain of autograd ops on whole score maps
  fairseq-hardkuma   fairseq_plugins' HardKumaMultiheadAttention (self-attention, its defaults;
                     needs fairseq)
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

from hardkuma_attention import HardKumaAttention
from hardkuma_attention.functional import hardkuma_weights_from_scores
from hardkuma_attention.cli.common import ranged

PER_LENGTH_VARIANTS = ["softmax", "softmax+weights", "entmax15", "sparsemax", "hardkuma", "hardkuma-separate",
                       "hardkuma-compiled", "hardkuma-separate-compiled", "hardkuma-naive"]
SWEEP_VARIANTS = ["softmax", "hardkuma-default", "hardkuma", "fairseq-hardkuma", "entmax15", "sparsemax"]
ALL_VARIANTS = PER_LENGTH_VARIANTS + ["hardkuma-default", "fairseq-hardkuma"]
MAP_VARIANTS = ("softmax+weights", "entmax15", "sparsemax", "hardkuma-naive")  # keep a (B, H, T, S) map
SWEEP_LENGTHS = [128, 256, 512, 1024, 2048, 4096, 8192]
RESULT = "RESULT "  # prefix of a worker's JSON line on stdout


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


def naive_hardkuma(m: HardKumaAttention, x: torch.Tensor) -> torch.Tensor:
    """``m``'s self-attention (split parameterisation, batch-first ``x``) with the gate math as a
    chain of autograd ops on whole score maps (``hardkuma_weights_from_scores(fused=False)``)."""
    B, T, E = x.shape
    H, d = m.num_heads, m.head_dim
    q, k, v = (proj(x).view(B, T, H, d).transpose(1, 2) for proj in (m.q_proj, m.k_proj, m.v_proj))
    half = d // 2
    sa = q[..., :half] @ k[..., :half].transpose(-1, -2) / math.sqrt(half)
    sb = q[..., half:] @ k[..., half:].transpose(-1, -2) / math.sqrt(half)
    w = hardkuma_weights_from_scores(sa, sb, None, training=m.training, normalize=m.normalize,
                                     support=m.support, ab_clamp=m.ab_clamp, fused=False)
    return m.out_proj((w @ v).transpose(1, 2).reshape(B, T, E))


def batch_first_fn(fn, seq_first):
    """Call a batch-first ``fn`` on ``(T, B, E)`` input when ``seq_first``."""
    if not seq_first:
        return fn
    return lambda x: fn(x.transpose(0, 1)).transpose(0, 1)


def build(name, E, H, seq_first=False):
    """``(module, fn)``: ``fn(x)`` runs the variant's forward on ``x`` ((T, B, E) when
    ``seq_first``, else (B, T, E)) and returns the attention output."""
    if name.startswith("softmax"):
        m = nn.MultiheadAttention(E, H, batch_first=not seq_first)
        need = name == "softmax+weights"
        return m, lambda x: m(x, x, x, need_weights=need)[0]
    if name in ("entmax15", "sparsemax"):
        import entmax

        m = MapAttention(E, H, getattr(entmax, name))
        return m, batch_first_fn(m, seq_first)
    if name == "fairseq-hardkuma":
        from fairseq_plugins.translation.hardkuma_multihead_attention import HardKumaMultiheadAttention

        m = HardKumaMultiheadAttention(E, H, self_attention=True)
        fn = lambda x: m(x, x, x, need_weights=False)[0]  # noqa: E731  (fairseq is sequence-first)
        return m, (fn if seq_first else lambda x: fn(x.transpose(0, 1)).transpose(0, 1))
    if name == "hardkuma-default":
        m = HardKumaAttention(E, H) if seq_first else HardKumaAttention(E, H, batch_first=True)
        return m, lambda x: m(x, x, x, need_weights=False)[0]
    if name.startswith("hardkuma"):
        param = "separate" if "separate" in name else "split"
        m = HardKumaAttention(E, H, batch_first=not seq_first, parameterization=param, compile="compiled" in name)
        if name == "hardkuma-naive":
            return m, batch_first_fn(lambda x: naive_hardkuma(m, x), seq_first)
        return m, lambda x: m(x, x, x, need_weights=False)[0]
    raise ValueError(f"unknown variant {name!r}")


def train_step(module, fn, x):
    module.train()
    module.zero_grad(set_to_none=True)
    x.grad = None
    fn(x).sum().backward()


def eval_step(module, fn, x):
    module.eval()
    with torch.no_grad():
        fn(x)


def saved_bytes(module, fn, x):
    """Bytes of the distinct storages autograd saves in one training forward (parameters and
    ``x`` excluded)."""
    seen = {}

    def pack(t):
        try:
            key = (t.untyped_storage().data_ptr(), t.dtype)
            seen[key] = max(seen.get(key, 0), t.untyped_storage().nbytes())
        except RuntimeError:
            pass
        return t

    module.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(x)
    params = {p.untyped_storage().data_ptr() for p in module.parameters()}
    params.add(x.untyped_storage().data_ptr())
    del out
    return sum(v for (ptr, _), v in seen.items() if ptr not in params)


def timed(step, module, fn, x):
    start = time.perf_counter()
    step(module, fn, x)
    return time.perf_counter() - start


# ------------------------------------------------------------------ per-length mode (fixed batch)
def per_length(args):
    step = eval_step if args.mode == "eval" else train_step
    print(f"torch {torch.__version__}, {args.threads} threads, fp32 CPU, batch {args.batch}, "
          f"heads {args.heads}, embed {args.embed_dim}, {args.mode} step, median of {args.repeats} interleaved rounds")
    for T in args.lengths:
        torch.manual_seed(0)
        x = torch.randn(args.batch, T, args.embed_dim, requires_grad=True)
        layers = {name: build(name, args.embed_dim, args.heads) for name in args.variants}
        times = {name: [] for name in args.variants}
        for name, (m, fn) in layers.items():  # warm-up (and any one-off compilation)
            step(m, fn, x)
        for _ in range(args.repeats):
            for name, (m, fn) in layers.items():
                times[name].append(timed(step, m, fn, x))
        mem = {name: saved_bytes(m, fn, x) for name, (m, fn) in layers.items()}
        base_t = statistics.median(times["softmax"]) if "softmax" in times else None
        base_m = mem.get("softmax")
        print(f"\nT = {T}")
        head = "fwd+bwd ms" if args.mode == "train" else "eval ms"
        print(f"{'variant':<27} {head:>10} {'x softmax':>9} {'saved MiB':>10} {'x softmax':>9}")
        for name in args.variants:
            t = statistics.median(times[name])
            rt = f"{t / base_t:9.2f}" if base_t else "        -"
            rm = f"{mem[name] / base_m:9.2f}" if base_m else "        -"
            print(f"{name:<27} {1000 * t:10.1f} {rt} {mem[name] / 2**20:10.1f} {rm}")


# ------------------------------------------------------------------ sweep workers (subprocesses)
def _sweep_input(job, T=None, B=None):
    torch.manual_seed(0)
    T, B = T or job["T"], B or job["B"]
    return torch.randn(T, B, job["E"], requires_grad=True)


def worker_time(job):
    """All of ``job["variants"]`` at one length, training and inference rounds interleaved."""
    x = _sweep_input(job)
    layers = {name: build(name, job["E"], job["H"], seq_first=True) for name in job["variants"]}
    times = {(name, kind): [] for name in layers for kind in ("train", "eval")}
    for m, fn in layers.values():  # warm-up (and any one-off compilation)
        train_step(m, fn, x)
        eval_step(m, fn, x)
    for _ in range(job["rounds"]):
        for kind, step in (("train", train_step), ("eval", eval_step)):
            for name, (m, fn) in layers.items():
                times[(name, kind)].append(timed(step, m, fn, x))
    return {name: {kind: statistics.median(times[(name, kind)]) for kind in ("train", "eval")} for name in layers}


def _max_rss() -> int:
    """The process's peak resident set so far, bytes (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_peak_rss() -> bool:
    """Start the peak-RSS count afresh (Linux: ``5`` to ``/proc/self/clear_refs`` resets the
    high-water mark that ``ru_maxrss`` reports); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def worker_memory(job):
    """One variant alone at this length: saved bytes, the process's peak RSS over everything
    (imports, a warm-up training and inference step that also absorbs any kernel compilation, the
    measured steps) and the step RSS: the peak over one training and one inference step after
    the warm-up, minus the resident set before them.  ``run_worker`` fixes glibc's mmap threshold
    so that freed blocks go back to the OS and the warm-up leaves no cached memory behind."""
    (name,) = job["variants"]
    x = _sweep_input(job)
    m, fn = build(name, job["E"], job["H"], seq_first=True)
    train_step(m, fn, x)
    eval_step(m, fn, x)
    warm_peak = _max_rss()
    row = {}
    if not _reset_peak_rss():
        row["errors"] = ["cannot reset the peak RSS (/proc/self/clear_refs): step RSS not measured"]
    base = _max_rss()
    row["saved"] = saved_bytes(m, fn, x)
    train_step(m, fn, x)
    eval_step(m, fn, x)
    peak = _max_rss()
    row["rss_peak"] = max(warm_peak, peak)
    if "errors" not in row:
        row["rss_step"] = peak - base
    return {name: row}


def run_worker(job, threads):
    """Run one worker job in a fresh Python process; its result dict, or ``{"error": ...}``."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if job["kind"] == "memory":  # large blocks always mmap'd, so a free returns them to the OS
        env.update(MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(job), "--threads", str(threads)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT)]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"worker exited with {proc.returncode}: {tail}"}
    return json.loads(lines[-1][len(RESULT):])


# ------------------------------------------------------------------ sweep driver
def sweep_variants(args, T, B):
    """The variants to run at this length, and ``{variant: reason}`` for those skipped."""
    skipped = {}
    map_mib = B * args.heads * T * T * 4 / 2**20
    keep = []
    for name in args.variants:
        if name in MAP_VARIANTS and map_mib > args.map_budget_mib:
            skipped[name] = f"one (B, H, T, T) fp32 map is {map_mib:.0f} MiB > --map-budget-mib {args.map_budget_mib:g}"
        elif name in ("entmax15", "sparsemax") and not _importable("entmax"):
            skipped[name] = "entmax not installed (pip install -e '.[bench]')"
        elif name == "fairseq-hardkuma" and not _importable("fairseq"):
            skipped[name] = "fairseq not importable"
        else:
            keep.append(name)
    return keep, skipped


def _importable(module):
    import importlib.util

    return importlib.util.find_spec(module) is not None


def sweep_length(args, T):
    """Timing and memory figures of every variant at length ``T`` (subprocesses).  The memory runs
    come first, one variant each: a variant whose run fails (e.g. killed for memory) is left out of
    the timing run, with the reason, so that it cannot take the other variants' timings with it."""
    B = args.tokens // T
    names, skipped = sweep_variants(args, T, B)
    job = {"T": T, "B": B, "E": args.embed_dim, "H": args.heads, "rounds": args.rounds}
    rows = {}
    for name in names:
        memory = run_worker(dict(job, kind="memory", variants=[name]), args.threads)
        if "error" in memory:
            skipped[name] = f"memory run failed: {memory['error']}"
        else:
            rows[name] = memory[name]
    timing = run_worker(dict(job, kind="time", variants=list(rows)), args.threads)
    for name, row in rows.items():
        row.update(timing.get(name, {}))
        if "error" in timing:
            row.setdefault("errors", []).append(f"timing run failed: {timing['error']}")
    return {"T": T, "B": B, "rows": rows, "skipped": skipped}


# (key, heading, scale to the printed unit, with a ratio to softmax)
COLUMNS = [("train", "train ms", 1e3, True), ("eval", "eval ms", 1e3, True), ("saved", "saved MiB", 2**-20, True),
           ("rss_peak", "peak RSS MiB", 2**-20, False), ("rss_step", "step RSS MiB", 2**-20, True)]


def ratio(row, base, key):
    if base is None or row.get(key) is None or not base.get(key):
        return None
    return row[key] / base[key]


def fmt(x, spec, suffix=""):
    return "-" if x is None else format(x, spec) + suffix


def headings():
    out = []
    for _, head, _, with_ratio in COLUMNS:
        out += [head, "×"] if with_ratio else [head]
    return out


def cells(row, base):
    """The printed figures of one row, in the order of :func:`headings`."""
    out = []
    for key, _, scale, with_ratio in COLUMNS:
        out.append(fmt(row[key] * scale if row.get(key) is not None else None, ".1f"))
        if with_ratio:
            out.append(fmt(ratio(row, base, key), ".2f", "×"))
    return out


def print_length(result):
    rows, base = result["rows"], result["rows"].get("softmax")
    print(f"\nT = {result['T']}, batch {result['B']}")
    print(f"{'variant':<18}" + "".join(f" {h:>{max(len(h), 7)}}" for h in headings()))
    for name, row in rows.items():
        print(f"{name:<18}" + "".join(f" {c:>{max(len(h), 7)}}" for c, h in zip(cells(row, base), headings())))
        for err in row.get("errors", []):
            print(f"  {name}: {err}")
    for name, reason in result["skipped"].items():
        print(f"  skipped {name}: {reason}")
    sys.stdout.flush()


def markdown(results, settings):
    """A README-ready table: one row per (length, variant), ratios to softmax of the same run."""
    heads = ["T (batch)", "variant"] + headings()
    lines = [
        f"{settings['tokens']} tokens per step (batch = tokens / T), E = {settings['embed_dim']}, "
        f"{settings['heads']} heads, fp32, {settings['threads']} threads, median of {settings['rounds']} "
        "interleaved rounds; × = ratio to `nn.MultiheadAttention` (SDPA path) in the same run.",
        "",
        "| " + " | ".join(heads) + " |",
        "|" + "---|" * len(heads),
    ]
    for res in results:
        base = res["rows"].get("softmax")
        for name, row in res["rows"].items():
            lines.append("| " + " | ".join([f"{res['T']:,} ({res['B']})", name] + cells(row, base)) + " |")
        for name, reason in res["skipped"].items():
            lines.append(f"| {res['T']:,} ({res['B']}) | {name} | skipped: {reason} |" + " |" * (len(heads) - 3))
    return "\n".join(lines)


def write_atomic(path, data):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def sweep(args):
    settings = {k: getattr(args, k) for k in ("tokens", "embed_dim", "heads", "threads", "rounds",
                                              "variants", "map_budget_mib")}
    settings["torch"] = torch.__version__
    done = {}
    if args.out and os.path.exists(args.out):
        with open(args.out) as f:
            previous = json.load(f)
        if previous.get("settings") != settings:
            print(f"error: --out {args.out} holds a run with other settings; pass another --out", file=sys.stderr)
            sys.exit(2)
        done = {res["T"]: res for res in previous["results"]}
        print(f"resuming {args.out}: lengths {sorted(done)} done")
    print(f"torch {torch.__version__}, {args.threads} threads, fp32 CPU, {args.tokens} tokens per step, "
          f"heads {args.heads}, embed {args.embed_dim}, median of {args.rounds} interleaved rounds")
    results = []
    for T in args.lengths:
        res = done.get(T) or sweep_length(args, T)
        results.append(res)
        print_length(res)
        if args.out:
            kept = [res for T, res in done.items() if T not in args.lengths]  # earlier lengths stay
            write_atomic(args.out, {"settings": settings, "command": sys.argv, "results": results + kept})
    if args.markdown:
        print("\n" + markdown(results, settings))


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sweep", action="store_true", help="length sweep at a constant token budget")
    ap.add_argument("--batch", type=ranged(int, 1), default=32, help="batch size (per-length mode)")
    ap.add_argument("--tokens", type=ranged(int, 1), default=8192, help="tokens per step B*T (sweep)")
    ap.add_argument("--heads", type=ranged(int, 1), default=8)
    ap.add_argument("--embed-dim", type=ranged(int, 1), default=512)
    ap.add_argument("--lengths", type=ranged(int, 1), nargs="+", default=None,
                    help=f"sequence lengths (default: 128 256; sweep: {' '.join(map(str, SWEEP_LENGTHS))})")
    ap.add_argument("--repeats", "--rounds", dest="repeats", type=ranged(int, 1), default=7, help="interleaved timing rounds")
    ap.add_argument("--threads", type=ranged(int, 1), default=2)
    ap.add_argument("--mode", choices=("train", "eval"), default="train",
                    help="per-length mode: time training steps (forward + backward) or eval forwards (no_grad)")
    ap.add_argument("--variants", nargs="+", default=None, help="default: see the variant list above")
    ap.add_argument("--map-budget-mib", type=ranged(float, 0, None, True), default=1024.0,
                    help="sweep: skip variants that keep a (B, H, T, T) map larger than this")
    ap.add_argument("--markdown", action="store_true", help="sweep: print a README-ready table at the end")
    ap.add_argument("--out", help="sweep: JSON file of all figures (resumes a run with the same settings)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.rounds = args.repeats
    if args.worker:
        return args
    if args.lengths is None:
        args.lengths = SWEEP_LENGTHS if args.sweep else [128, 256]
    if args.variants is None:
        args.variants = list(SWEEP_VARIANTS if args.sweep else PER_LENGTH_VARIANTS)
    unknown = [v for v in args.variants if v not in ALL_VARIANTS]
    if unknown:
        ap.error(f"--variants: unknown {unknown}; choose from {ALL_VARIANTS}")
    if min(args.lengths) < 1 or args.repeats < 1 or args.threads < 1 or args.heads < 1:
        ap.error("--lengths, --rounds/--repeats, --threads and --heads must be >= 1")
    if args.embed_dim % (2 * args.heads):
        ap.error(f"--embed-dim {args.embed_dim} must be a multiple of 2 * --heads ({2 * args.heads})")
    if args.sweep:
        bad = [T for T in args.lengths if args.tokens % T]
        if bad:
            ap.error(f"--tokens {args.tokens} is not a multiple of --lengths {bad}")
        if "softmax" not in args.variants:
            ap.error("--sweep needs the softmax variant (the baseline of every ratio)")
        if args.mode != "train":
            ap.error("--mode goes with the per-length mode (the sweep times training and eval)")
    elif args.markdown or args.out:
        ap.error("--markdown and --out go with --sweep")
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.worker:
        job = json.loads(args.worker)
        result = (worker_time if job["kind"] == "time" else worker_memory)(job)
        print(RESULT + json.dumps(result), flush=True)
        return
    if args.sweep:
        sweep(args)
        return
    if not _importable("entmax"):
        args.variants = [v for v in args.variants if v not in ("entmax15", "sparsemax")]
        print("entmax not installed: skipping entmax15/sparsemax (pip install -e '.[bench]')")
    per_length(args)


if __name__ == "__main__":
    main()
