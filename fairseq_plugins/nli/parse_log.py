"""Read fairseq logs of the SNLI recipe.

``python -m fairseq_plugins.nli.parse_log validate LOG --split S``: print the ``accuracy= nonzero= pairs= split=`` line of a
``fairseq-validate`` log (pairs: the size of the split's label dataset, as fairseq loaded it).
``python -m fairseq_plugins.nli.parse_log train LOG``: print ``words_per_s=<median over epochs of the epoch-average wps>
best_valid_accuracy=<%> epochs=<n>`` of a ``fairseq-train`` log (resumed runs append to the same
log: each epoch counts once).
``python -m fairseq_plugins.nli.parse_log overlap LOG_A LOG_B``: ``words_per_s_a=.. words_per_s_b=.. ratio_b_over_a=.. intervals=n``
where both are the median of the ``train_inner`` wps values logged while BOTH trainings were
running (timestamps up to the earlier of the two last ``train_inner`` lines): two runs started
together then compare under the same load, and the run that finishes later is not credited with
the speed-up of running alone.
"""
import datetime
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


def train_inner(lines):
    """``(timestamp, wps)`` of every ``train_inner`` line."""
    out = []
    for line in lines:
        if "| train_inner |" not in line:
            continue
        m = re.search(r"wps=([\d.]+)", line)
        if m:
            out.append((datetime.datetime.strptime(line[:19], "%Y-%m-%d %H:%M:%S"), float(m.group(1))))
    return out


def overlap_wps(lines_a, lines_b):
    """Median wps of each log over the window where both were training (see the module doc)."""
    a, b = train_inner(lines_a), train_inner(lines_b)
    if not a or not b:
        raise ValueError("no train_inner lines (use --log-interval smaller than an epoch)")
    end = min(a[-1][0], b[-1][0])
    wa = [w for t, w in a if t <= end]
    wb = [w for t, w in b if t <= end]
    return statistics.median(wa), statistics.median(wb), min(len(wa), len(wb))


def train_summary(lines):
    """``(words_per_s, best_valid_accuracy, epochs)`` of a fairseq-train log: the median over
    epochs of the epoch-average wps, the best dev accuracy logged, the number of finished epochs.
    A log appended to by resumed runs counts each epoch once (its last summary line)."""
    epochs = {}
    for line in lines:
        m = re.search(r"\| train \| epoch (\d+)", line)
        if m:
            epochs[int(m.group(1))] = metrics_of(line)
    valids = [metrics_of(l) for l in lines if "valid on 'valid' subset" in l]
    wps = [e["wps"] for e in epochs.values() if "wps" in e]
    if not wps:
        raise ValueError("no finished training epoch")
    best = max((v["accuracy"] for v in valids if "accuracy" in v), default=float("nan"))
    return statistics.median(wps), best, len(epochs)


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=["validate", "train", "overlap"])
    p.add_argument("log")
    p.add_argument("other", nargs="?", help="second log (overlap)")
    p.add_argument("--split", default="valid")
    args = p.parse_args(argv)
    with open(args.log, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    if args.kind == "overlap":
        with open(args.other, encoding="utf-8", errors="replace") as f:
            other = f.read().splitlines()
        try:
            wa, wb, n = overlap_wps(lines, other)
        except ValueError as e:
            print(f"error: {args.log}, {args.other}: {e}", file=sys.stderr)
            return 2
        print(f"words_per_s_a={wa:.0f} words_per_s_b={wb:.0f} ratio_b_over_a={wb / wa:.2f} intervals={n}")
        return 0
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
    try:
        wps, best, n = train_summary(lines)
    except ValueError as e:
        print(f"error: {args.log}: {e}", file=sys.stderr)
        return 2
    print(f"words_per_s={wps:.0f} best_valid_accuracy={best:.2f} epochs={n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
