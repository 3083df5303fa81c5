"""Draw the attention matrix of one premise/hypothesis pair as a PNG heatmap.

    python -m fairseq_plugins.nli.heatmap CHECKPOINT --data runs/snli/bin --out pair.png \\
        (--premise "A man plays a guitar." --hypothesis "A person makes music." | --index 3 [--text runs/snli/text])

Rows are premise words, columns hypothesis words (NULL first when the model has a NULL token);
cells are the HardKuma gates z in [0, 1] (softmax: the premise-to-hypothesis softmax weights).
Eval mode, so HardKuma gates are deterministic: an exact 0 is drawn white.  ``--index i`` takes
pair i of ``TEXT/valid.{input0,input1}`` (already tokenised).  Prints the prediction and the
fraction of non-zero cells.
"""
import argparse
import os
import sys

from ..common.cli import ranged
from .prepare_data import tokenize


def _fail(message: str):
    """One line ``heatmap.py: error: <message>`` on stderr, exit code 2."""
    print(f"{os.path.basename(sys.argv[0]) or 'heatmap.py'}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def load_pair(args):
    if args.premise is not None:
        if args.hypothesis is None:
            _fail("--premise needs --hypothesis")
        return " ".join(tokenize(args.premise)), " ".join(tokenize(args.hypothesis)), None
    base = os.path.join(args.text, args.split)
    pair = []
    for ext in ("input0", "input1"):
        path = f"{base}.{ext}"
        if not os.path.isfile(path):
            _fail(f"{path} not found (run recipes/snli/prepare.sh or pass --premise/--hypothesis)")
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        if not 0 <= args.index < len(lines):
            _fail(f"--index {args.index} out of range: {path} has {len(lines)} lines")
        pair.append(lines[args.index])
    gold = None
    if os.path.isfile(f"{base}.label"):
        with open(f"{base}.label", encoding="utf-8") as f:
            labels = f.read().splitlines()
        gold = labels[args.index] if args.index < len(labels) else None
    return pair[0], pair[1], gold


def draw(pred, title: str, out: str) -> None:
    import logging

    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    att = pred.attention.numpy()
    rows, cols = pred.premise_words, pred.hypothesis_words
    fig, ax = plt.subplots(figsize=(0.45 * len(cols) + 2.2, 0.38 * len(rows) + 1.6))
    import numpy as np

    cmap = plt.get_cmap("Blues").copy()
    cmap.set_bad("white")  # exact zeros (closed gates) are masked: pure white
    im = ax.imshow(np.ma.masked_equal(att, 0.0), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=60, ha="right", fontsize=9)
    ax.set_yticks(range(len(rows)), rows, fontsize=9)
    ax.set_xlabel("hypothesis")
    ax.set_ylabel("premise")
    ax.set_title(title, fontsize=9)
    for i in range(att.shape[0]):
        for j in range(att.shape[1]):
            if att[i, j] > 0:
                ax.text(j, i, f"{att[i, j]:.2f}".lstrip("0"), ha="center", va="center", fontsize=6,
                        color="white" if att[i, j] > 0.6 else "black")
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    fig.tight_layout()
    tmp = out + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--data", required=True, help="binarised data dir (dictionaries)")
    p.add_argument("--out", required=True, help="PNG path")
    p.add_argument("--premise")
    p.add_argument("--hypothesis")
    p.add_argument("--index", type=ranged(int, 0), default=0)
    p.add_argument("--text", default="runs/snli/text", help="prepare.sh output dir (with --index)")
    p.add_argument("--split", default="valid")
    p.add_argument("--title", default=None)
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = p.parse_args(argv)
    if not os.path.isfile(args.checkpoint):
        p.error(f"checkpoint: {args.checkpoint} not found")
    premise, hypothesis, gold = load_pair(args)

    import torch

    torch.set_num_threads(1)
    from fairseq_plugins.checkpoints import cli_errors
    from fairseq_plugins.nli.predict import NLIPredictor

    with cli_errors(p.prog, args.debug):
        pred = NLIPredictor.from_checkpoint(args.checkpoint, args.data).predict(premise, hypothesis)
    nz = float((pred.attention != 0).float().mean())
    kind = "HardKuma gates" if (pred.attention == 0).any() else "attention weights"
    gold_text = f", gold {gold}" if gold else ""
    title = args.title or (
        f"{kind}: predicted {pred.label} ({100 * pred.probs[pred.label]:.0f}%){gold_text}, {100 * nz:.0f}% cells non-zero"
    )
    draw(pred, title, args.out)
    print(f"label={pred.label} nonzero={100 * nz:.1f}% png={args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
