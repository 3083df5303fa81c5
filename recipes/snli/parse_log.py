#!/usr/bin/env python
"""Read fairseq logs of the SNLI recipe.

``parse_log.py validate LOG --split S``: print the ``accuracy= nonzero= pairs= split=`` line of a
``fairseq-validate`` log (pairs: the size of the split's label dataset, as fairseq loaded it).
``parse_log.py train LOG``: print ``words_per_s=<median over epochs of the epoch-average wps>
best_valid_accuracy=<%> epochs=<n>`` of a ``fairseq-train`` log.
"""
import argparse
import re
import statistics
import sys


def metrics_of(line: str) -> dict:
    """``| key value | key value`` fields of a fairseq simple-format summary line."""
    out = {}
    for part in line.split("|"):
        m = re.fullmatch(r"\s*([A-Za-z_][\w]*) (-?[\d.]+(?:e-?\d+)?)\s*", part)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=["validate", "train"])
    p.add_argument("log")
    p.add_argument("--split", default="valid")
    args = p.parse_args(argv)
    with open(args.log, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    if args.kind == "validate":
        found = [metrics_of(l) for l in lines if f"valid on '{args.split}' subset" in l]
        if not found or "accuracy" not in found[-1]:
            print(f"error: {args.log}: no accuracy in the fairseq-validate output", file=sys.stderr)
            return 2
        m = found[-1]
        sizes = re.findall(rf"loaded ([\d,]+) examples from: .*{re.escape(args.split)}\.label-None\.label", "\n".join(lines))
        pairs = sizes[-1].replace(",", "") if sizes else "?"
        nz = f"{100 * m['nz']:.2f}" if "nz" in m else "100.00"  # softmax: every cell is non-zero
        print(f"accuracy={m['accuracy']:.2f} nonzero={nz} pairs={pairs} split={args.split}")
        return 0
    epochs = [metrics_of(l) for l in lines if re.search(r"\| train \| epoch \d+", l)]
    valids = [metrics_of(l) for l in lines if "valid on 'valid' subset" in l]
    if not epochs:
        print(f"error: {args.log}: no finished training epoch", file=sys.stderr)
        return 2
    wps = statistics.median(e["wps"] for e in epochs if "wps" in e)
    best = max((v["accuracy"] for v in valids if "accuracy" in v), default=float("nan"))
    print(f"words_per_s={wps:.0f} best_valid_accuracy={best:.2f} epochs={len(epochs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
