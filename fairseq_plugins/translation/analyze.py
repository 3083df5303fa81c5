r"""Look inside a trained Multi30k model: attention sparsity and a cross-attention heatmap.

    python -m fairseq_plugins.translation.analyze sparsity --data-bin DIR --path CKPT [--subset test] [--json OUT]
        Teacher-forced pass over the references of a split, one sentence pair at a time (so no
        padding enters the counts), in eval mode (deterministic HardKuma gates).  Prints, per
        attention type (encoder_self / decoder_self / cross), the % of valid attention cells
        (all layers and heads) whose weight is exactly non-zero and the expected L0.
    python -m fairseq_plugins.translation.analyze heatmap --data-bin DIR --path CKPT --index 0 --out PNG
        Translates sentence ``index`` of the split with beam search, then draws the cross-attention
        of the last decoder layer (each head and their mean) over the generated tokens.
    python -m fairseq_plugins.translation.analyze rows --data-bin DIR --path CKPT [--subset test] [--json OUT]
        (or ``sparsity ... --rows-json OUT``: both from one model load, as evaluate.sh does)
        Same teacher-forced eval pass; per decoder layer, over the cross-attention rows (one row =
        one target token x head): % of rows with no non-zero weight (the head reads nothing from
        the source for that token), mean number of non-zero cells of the other rows, mean largest
        weight of a row; and the % of target tokens whose rows are empty in every layer and head.
        Works for softmax models too (0 % empty rows).

Models are loaded with ``fairseq.checkpoint_utils`` after importing ``fairseq_plugins`` (which
wraps fairseq's checkpoint loader so that fairseq checkpoints load on torch >= 2.6: full pickle
inside that call only, see ``fairseq_plugins/checkpoints.py``).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, Optional

import torch

import fairseq_plugins  # noqa: F401  (registers the model; checkpoint loading on torch >= 2.6)
from hardkuma_attention import collect_attention_stats

from ..checkpoints import cli_errors
from ..common.cli import ranged


def load(data_bin: Path, path: Path, subset: str):
    """(model in eval mode, task with ``subset`` loaded)."""
    from fairseq import checkpoint_utils

    if not path.is_file():
        raise FileNotFoundError(f"--path {path}: no such checkpoint")
    models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(path)], arg_overrides={"data": str(data_bin)}
    )
    task.load_dataset(subset)
    model = models[0].eval()
    return model, task


@torch.no_grad()
def sparsity(model, task, subset: str, limit: int = 0) -> Dict[str, Dict[str, float]]:
    """Per stats key: ``nonzero_pct`` (exact non-zero weights / valid cells, in %), ``expected_l0``
    and ``cells``; key ``"all"`` sums every HardKuma attention.  Empty for a softmax model."""
    dataset = task.dataset(subset)
    n = len(dataset) if limit <= 0 else min(limit, len(dataset))
    sums = defaultdict(lambda: [0.0, 0.0, 0.0])  # key -> [l0_sum, cells, nonzero]
    for i in range(n):
        sample = dataset.collater([dataset[i]])
        with collect_attention_stats() as stats:
            model(**sample["net_input"])
        for key in stats.keys() + ["all"]:
            total = stats.total(None if key == "all" else key)
            if total is None:
                continue
            acc = sums[key]
            acc[0] += float(total.l0_sum)
            acc[1] += float(total.cells)
            acc[2] += float(total.nonzero)
    return {
        key: {"nonzero_pct": 100.0 * nz / cells, "expected_l0": l0 / cells, "cells": cells}
        for key, (l0, cells, nz) in sorted(sums.items())
        if cells > 0
    }


class CrossAttentionRecorder:
    """Context manager: every decoder layer's ``encoder_attn`` is asked for per-head weights and
    they are appended to ``self.weights[layer]`` as ``(H, B, T, S)``; the layer itself still gets
    what it asked for (``need_weights``/``need_head_weights`` as called)."""

    def __init__(self, model):
        self.modules = [layer.encoder_attn for layer in model.decoder.layers]
        self.weights = [[] for _ in self.modules]
        self.handles = []

    def __enter__(self):
        for i, module in enumerate(self.modules):
            asked = {}

            def force(mod, args, kwargs, asked=asked):
                asked["w"], asked["h"] = kwargs.get("need_weights", True), kwargs.get("need_head_weights", False)
                return args, dict(kwargs, need_weights=True, need_head_weights=True)

            def record(mod, args, kwargs, out, i=i, asked=asked):
                x, w = out
                self.weights[i].append(w.detach().float())
                if asked["h"]:
                    return x, w
                return x, (w.mean(0) if asked["w"] else None)

            self.handles.append(module.register_forward_pre_hook(force, with_kwargs=True))
            self.handles.append(module.register_forward_hook(record, with_kwargs=True))
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


@torch.no_grad()
def cross_attention_rows(model, task, subset: str, limit: int = 0) -> Dict[str, object]:
    """Row statistics of the cross-attention (teacher forced, one sentence at a time, eval mode).

    Returns ``{"layers": [{"empty_rows_pct", "mean_open_cells", "mean_max_weight", "rows"}, ...],
    "blind_tokens_pct", "tokens"}``: per decoder layer, a row is one (target token, head) weight
    vector over the source; ``empty``: every weight exactly 0; ``mean_open_cells``: mean count of
    non-zero weights over the non-empty rows; ``mean_max_weight``: mean of ``max_s w`` over all
    rows (0 for empty ones); ``blind``: target tokens whose rows are empty in every layer and head.
    """
    dataset = task.dataset(subset)
    n = len(dataset) if limit <= 0 else min(limit, len(dataset))
    L = len(model.decoder.layers)
    rows, empty, open_cells, max_w = [0] * L, [0] * L, [0.0] * L, [0.0] * L
    blind = tokens = 0
    with CrossAttentionRecorder(model) as rec:
        for i in range(n):
            for w in rec.weights:
                w.clear()
            model(**dataset.collater([dataset[i]])["net_input"])
            any_open = None
            for layer, (w,) in enumerate(rec.weights):  # one forward: (H, 1, T, S)
                nz = (w[:, 0] != 0).sum(-1)  # (H, T)
                rows[layer] += nz.numel()
                empty[layer] += int((nz == 0).sum())
                open_cells[layer] += float(nz.sum())
                max_w[layer] += float(w[:, 0].max(-1).values.sum())
                opened = (nz > 0).any(0)
                any_open = opened if any_open is None else any_open | opened
            blind += int((~any_open).sum())
            tokens += any_open.numel()
    layers = [
        {
            "empty_rows_pct": 100.0 * empty[l] / rows[l],
            "mean_open_cells": open_cells[l] / max(rows[l] - empty[l], 1),
            "mean_max_weight": max_w[l] / rows[l],
            "rows": rows[l],
        }
        for l in range(L)
    ]
    return {"layers": layers, "blind_tokens_pct": 100.0 * blind / max(tokens, 1), "tokens": tokens}


@torch.no_grad()
def cross_attention_of_translation(model, task, subset: str, index: int, beam: int = 5):
    """Translate sentence ``index`` and return ``(src_tokens, hyp_tokens, weights (H, T, S))``."""
    from argparse import Namespace

    dataset = task.dataset(subset)
    if not 0 <= index < len(dataset):
        raise IndexError(f"--index {index} out of range: {subset} has {len(dataset)} sentences")
    sample = dataset.collater([dataset[index]])
    generator = task.build_generator([model], Namespace(beam=beam, max_len_b=200))
    hyp = task.inference_step(generator, [model], sample)[0][0]["tokens"]  # ends with </s>
    eos = task.target_dictionary.eos()
    prev = torch.cat([hyp.new_tensor([eos]), hyp[:-1]]).unsqueeze(0)
    captured = {}
    layer = model.decoder.layers[-1].encoder_attn
    handle = layer.register_forward_hook(lambda mod, inp, out: captured.__setitem__("w", out[1]))
    try:
        net_input = sample["net_input"]
        model(net_input["src_tokens"], net_input["src_lengths"], prev)
    finally:
        handle.remove()
    weights = captured["w"]  # (H, 1, T, S): the decoder asks its last layer for per-head weights
    src = [task.source_dictionary[t] for t in net_input["src_tokens"][0].tolist()]
    tgt = [task.target_dictionary[t] for t in hyp.tolist()]
    return src, tgt, weights[:, 0].float()


def draw_heatmap(src, tgt, weights: torch.Tensor, out: Path, title: str) -> None:
    """One panel per head plus the head mean; rows = generated tokens, columns = source tokens;
    exact zeros white."""
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # fairseq leaves the root logger chatty
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("viridis").copy()
    cmap.set_under("white")  # exact zeros are white; any positive weight is coloured
    panels = list(weights) + [weights.mean(0)]
    names = [f"head {h}" for h in range(weights.size(0))] + ["mean"]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels) + 1, 0.22 * len(tgt) + 2.2))
    for ax, w, name in zip(axes, panels, names):
        im = ax.imshow(w.numpy(), vmin=1e-9, vmax=1.0, cmap=cmap, aspect="auto")
        ax.set_xticks(range(len(src)), src, rotation=90, fontsize=6)
        ax.set_yticks(range(len(tgt)), tgt if ax is axes[0] else [""] * len(tgt), fontsize=6)
        ax.set_title(f"{name}: {100.0 * float((w > 0).float().mean()):.0f}% > 0", fontsize=8)
    fig.colorbar(im, ax=list(axes), fraction=0.02)
    fig.suptitle(title, fontsize=9)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp" + out.suffix)
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, out)


def write_json(result, path: Optional[Path]) -> None:
    """Write ``result`` to ``path`` (temp file then rename); nothing when ``path`` is None."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("sparsity", "rows", "heatmap"):
        p = sub.add_parser(name)
        p.add_argument("--data-bin", type=Path, required=True)
        p.add_argument("--path", type=Path, required=True, help="checkpoint file")
        p.add_argument("--subset", default="test")
        p.add_argument("--debug", action="store_true", help="show the traceback of an error")
        if name in ("sparsity", "rows"):
            p.add_argument("--limit", type=ranged(int, 0), default=0, help="only the first N sentences (0: all)")
            p.add_argument("--json", type=Path, help="also write the numbers here")
        if name == "sparsity":
            p.add_argument("--rows-json", type=Path, help="also run `rows` and write its numbers here")
        if name == "heatmap":
            p.add_argument("--index", type=ranged(int, 0), default=0)
            p.add_argument("--beam", type=ranged(int, 1), default=5)
            p.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if not args.path.is_file():
        parser.error(f"--path: {args.path}: no such checkpoint")
    with cli_errors(f"{parser.prog} {args.cmd}", args.debug):
        model, task = load(args.data_bin, args.path, args.subset)
    if args.cmd == "sparsity":
        result = sparsity(model, task, args.subset, args.limit)
        if not result:
            print("no HardKuma attention in this model (softmax weights: all > 0 up to float underflow)")
        for key, r in result.items():
            print(f"{key:13s} non-zero {r['nonzero_pct']:6.2f}%  expected L0 {r['expected_l0']:.4f}  cells {int(r['cells'])}")
        write_json(result, args.json)
    if args.cmd == "rows" or getattr(args, "rows_json", None):
        result = cross_attention_rows(model, task, args.subset, args.limit)
        for l, r in enumerate(result["layers"]):
            print(f"cross-attention layer {l}: empty rows {r['empty_rows_pct']:5.1f}%  open cells per non-empty row "
                  f"{r['mean_open_cells']:5.2f}  mean max weight {r['mean_max_weight']:.3f}")
        print(f"target tokens with every cross-attention row empty: {result['blind_tokens_pct']:.2f}%")
        write_json(result, args.json if args.cmd == "rows" else args.rows_json)
    if args.cmd == "heatmap":
        n = len(task.dataset(args.subset))
        if not 0 <= args.index < n:  # before any translation: one line, exit 2
            parser.error(f"--index: {args.index} out of range: {args.subset} has {n} sentences")
        src, tgt, weights = cross_attention_of_translation(model, task, args.subset, args.index, args.beam)
        draw_heatmap(src, tgt, weights, args.out, f"{args.subset} sentence {args.index}: last-layer cross-attention")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
