#!/usr/bin/env python
"""Time one training step (forward + backward + Adam) of decomposable attention variants, interleaved.

    python recipes/snli/benchmark_step.py [--bin runs/snli/bin] [--steps 100] [--rounds 5]

Takes real batches of 32 pairs from the binarised training data (or random lengths 6..30 when
``--bin`` is absent) and runs the variants round-robin on the same batches, one torch thread, so
that CPU contention from other processes hits them alike.  Prints words/s per variant and the ratio
to softmax.  Outside fairseq: no data loading or logging cost, so ratios are an upper bound on
what fairseq-train shows.
"""
import argparse
import os
import statistics
import sys
import time
from types import SimpleNamespace

import torch

from fairseq_plugins.common.cli import ranged


def batches(args, pad):
    from fairseq.data import Dictionary, data_utils

    g = torch.Generator().manual_seed(0)
    if args.bin:
        d = Dictionary.load(os.path.join(args.bin, "dict.input0.txt"))
        prem = data_utils.load_indexed_dataset(os.path.join(args.bin, "train.input0-input1.input0"), d)
        hyp = data_utils.load_indexed_dataset(os.path.join(args.bin, "train.input0-input1.input1"), d)
        vocab = len(d)
    else:
        vocab, prem, hyp = 5000, None, None
    out = []
    for _ in range(args.steps):
        rows = []
        for _ in range(32):
            if prem is not None:
                i = int(torch.randint(len(prem), (1,), generator=g))
                rows.append((prem[i][:-1], hyp[i][:-1]))
            else:
                rows.append(tuple(torch.randint(4, vocab, (int(torch.randint(6, 30, (1,), generator=g)),), generator=g) for _ in range(2)))
        p = data_utils.collate_tokens([r[0] for r in rows], pad)
        h = data_utils.collate_tokens([r[1] for r in rows], pad)
        out.append((p, h, torch.randint(3, (32,), generator=g), int((p != pad).sum() + (h != pad).sum())))
    return out, vocab


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=None)
    ap.add_argument("--steps", type=ranged(int, 1), default=100)
    ap.add_argument("--rounds", type=ranged(int, 1), default=5)
    ap.add_argument("--variants", default="softmax,hardkuma")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    import fairseq_plugins  # noqa: F401
    from fairseq.data import Dictionary
    from fairseq_plugins.nli.model import DecomposableAttentionConfig, DecomposableAttentionModel
    from hardkuma_attention import LagrangianConstraint, collect_attention_stats

    data, vocab = batches(args, pad=1)
    d = Dictionary()
    for i in range(vocab - len(d)):
        d.add_symbol(f"w{i}")
    task = SimpleNamespace(source_dictionary=d, cfg=SimpleNamespace(num_classes=3))
    variants = {}
    for name in args.variants.split(","):
        attention, _, mlp = name.partition(":")
        kw = {"hardkuma_attend_mlp": mlp} if mlp else {}
        torch.manual_seed(0)
        model = DecomposableAttentionModel.build_model(
            DecomposableAttentionConfig(attention=attention, embed_dim=50, **kw), task).train()
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        variants[name] = (model, opt, LagrangianConstraint(0.1))
    words = sum(b[3] for b in data)
    rates = {n: [] for n in variants}
    for _ in range(args.rounds):
        for name, (model, opt, constraint) in variants.items():
            t = time.perf_counter()
            for p, h, y, _ in data:
                with collect_attention_stats() as stats:
                    logits, _ = model(premise=p, hypothesis=h)
                loss = torch.nn.functional.cross_entropy(logits, y, reduction="sum")
                total = stats.total()
                if total is not None:
                    loss = loss + 32 * constraint(total.expected_l0)
                opt.zero_grad()
                loss.backward()
                opt.step()
            rates[name].append(words / (time.perf_counter() - t))
    base = statistics.median(rates[next(iter(rates))])
    for name, r in rates.items():
        med = statistics.median(r)
        print(f"{name:28s} words/s {med:8.0f}  ratio {med / base:.3f}  (rounds: {', '.join(f'{x:.0f}' for x in r)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
