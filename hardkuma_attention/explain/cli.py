r"""Command line: ``python -m hardkuma_attention.explain <command>`` (to be wired in as
``hardkuma-rationale explain <command>``).

- ``decoy-digits``: RRR on decoy digits (accuracy with / without the penalty over seeds) and a PNG
  of 2-D image masks of both models;
- ``mask``: post-hoc input-mask rationales for a model trained by ``hardkuma-rationale train``
  (ERASER-style evaluation against human spans, with gradient baselines; see
  :mod:`hardkuma_attention.explain.text`);
- ``rrr-eval``: accuracy, input-gradient mass inside the human rationales and input×gradient
  token F1 of text classifiers trained with / without ``hardkuma-rationale train --rrr``
  (:mod:`hardkuma_attention.explain.rrr_text`).

Every command checks its inputs (data files, labels against the models', model files) before any
work; a non-empty ``--out`` is refused unless ``--overwrite`` (which first deletes the command's own
earlier outputs there; :mod:`.checks`).  Errors are one line on stderr, ``file:line: message`` or
``--flag: message``, exit code 2, no traceback (``--debug`` shows it).
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from ..rationale.cli import add_debug_flag, ranged, run_command
from ..rationale.extras import require
from ..rationale.io import write_json

__all__ = ["build_parser", "main"]


def _mean_std(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


# ---------------------------------------------------------------------------------------- decoy
def cmd_decoy_digits(args) -> int:
    from .decoy import (DecoyData, TrainDecoyConfig, accuracy, decoy_gradient_mass, explain_images,
                        load_decoy_digits, train_mlp)
    from .checks import OUTPUTS, prepare_out

    prepare_out(args.out, args.overwrite, OUTPUTS["decoy-digits"])
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    rows: List[Dict] = []
    first_models = None
    for patch in args.patch:
        for seed in args.seeds:
            train, test = load_decoy_digits(seed=seed, patch=patch)
            clean = DecoyData(test.clean, test.y, test.annotation, test.corner, test.clean)
            for rrr in (False, True):
                cfg = TrainDecoyConfig(rrr=rrr, lambda1=args.lambda1, lambda1_scale=args.lambda1_scale,
                                       lambda2=args.lambda2, epochs=args.epochs, lr=args.lr, seed=seed)
                model, info = train_mlp(train, cfg)
                row = {"patch": patch, "seed": seed, "rrr": rrr, "lambda1": info["lambda1"],
                       "train_acc": accuracy(model, train), "decoy_test_acc": accuracy(model, test),
                       "clean_test_acc": accuracy(model, clean),
                       "grad_mass_on_patch": decoy_gradient_mass(model, test)}
                rows.append(row)
                print(json.dumps(row), flush=True)
                if first_models is None or (len(first_models) < 2 and first_models[0][1] == (patch, seed)):
                    first_models = (first_models or []) + [(model, (patch, seed), train)]
    summary = {}
    lines = ["| patch | model | train acc | decoy test acc | clean test acc | input-grad mass on patch | λ1 |",
             "|---|---|---|---|---|---|---|"]
    for patch in args.patch:
        for rrr in (False, True):
            sel = [r for r in rows if r["patch"] == patch and r["rrr"] == rrr]
            key = f"patch{patch}_{'rrr' if rrr else 'plain'}"
            summary[key] = {k: statistics.mean(r[k] for r in sel) for k in
                            ("train_acc", "decoy_test_acc", "clean_test_acc", "grad_mass_on_patch", "lambda1")}
            lines.append(f"| {patch}×{patch} | {'RRR' if rrr else 'plain CE'} | "
                         f"{_mean_std([r['train_acc'] for r in sel])} | {_mean_std([r['decoy_test_acc'] for r in sel])} | "
                         f"{_mean_std([r['clean_test_acc'] for r in sel])} | "
                         f"{_mean_std([r['grad_mass_on_patch'] for r in sel])} | {summary[key]['lambda1']:.3g} |")
    table = "\n".join(lines)
    print(table)

    masks_info = {}
    n = max(args.mask_examples, args.mask_stat_examples)
    if n > 0 and first_models:
        _, (patch, seed), train = first_models[0]
        x, y, ann = train.x[:n], train.y[:n], train.annotation[:n]
        masks, titles = [], []
        for (model, _, _), name in zip(first_models, ("plain", "rrr")):
            m = explain_images(model, x, y).mask
            masks.append(m[: args.mask_examples])
            masks_info[name] = {"images": n, "mask_mass_on_patch": float(((m * ann).sum(1) / m.sum(1).clamp_min(1e-9)).mean()),
                                "patch_mask_mean": float((m * ann).sum() / ann.sum()), "mask_mean": float(m.mean())}
            titles.append(f"{'plain CE' if name == 'plain' else 'RRR'}: mask")
        if args.png and args.mask_examples > 0:
            from .plot import save_image_masks

            save_image_masks(args.png, x[: args.mask_examples], masks, titles,
                             [f"y={int(v)}" for v in y[: args.mask_examples]])
            print(f"wrote {args.png}")
        print(f"image masks ({n} training images of patch {patch}, seed {seed}, decoy present):", json.dumps(masks_info))
    write_json(out / "decoy_digits.json", {"args": vars(args), "runs": rows, "summary": summary,
                                            "image_masks": masks_info, "table": table})
    print(f"wrote {out / 'decoy_digits.json'}")
    return 0


# ---------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hardkuma-rationale explain",
                                     description="Explain trained classifiers: input-mask rationales, RRR demos.")
    sub = parser.add_subparsers(dest="command", required=True)

    d = sub.add_parser("decoy-digits", help="RRR on scikit-learn digits with a decoy corner patch")
    d.add_argument("--out", required=True, help="output folder (decoy_digits.json; must be empty, unless --overwrite)")
    d.add_argument("--overwrite", action="store_true", help="delete this command's earlier outputs in --out first")
    d.add_argument("--png", default=None, help="PNG of image masks of the plain and the RRR model")
    d.add_argument("--patch", type=ranged(int, 1), nargs="+", default=[2], help="decoy patch side(s) (default 2)")
    d.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    d.add_argument("--epochs", type=ranged(int, 1), default=60)
    d.add_argument("--lr", type=ranged(float, 0, None, True), default=3e-3)
    d.add_argument("--lambda1", type=ranged(float, 0), default=None, help="RRR weight (default: auto x --lambda1-scale)")
    d.add_argument("--lambda1-scale", type=ranged(float, 0, None, True), default=0.01,
                   help="multiplies the auto λ1 (CE / penalty at init); 1 over-regularises here (default 0.01)")
    d.add_argument("--lambda2", type=ranged(float, 0), default=1e-4, help="L2 weight on the parameters")
    d.add_argument("--mask-examples", type=ranged(int, 0), default=6, help="images shown in the PNG")
    d.add_argument("--mask-stat-examples", type=ranged(int, 0), default=200,
                   help="training images explained by mask optimisation for the mask-on-patch statistic")
    d.add_argument("--threads", type=ranged(int, 1), default=1)

    try:
        from .text import add_mask_parser
    except ImportError:  # pragma: no cover - text module optional while it is being built
        add_mask_parser = None
    if add_mask_parser is not None:
        add_mask_parser(sub)
    from .rrr_text import add_rrr_eval_parser

    add_rrr_eval_parser(sub)
    add_debug_flag(*sub.choices.values())
    return parser


def _requirements(args) -> List[str]:
    """Modules of the ``explain`` extra that ``args.command`` needs: scikit-learn (the digits data)
    and matplotlib for ``decoy-digits --png``; ``mask`` and ``rrr-eval`` need the core only."""
    if args.command == "decoy-digits":
        return ["sklearn"] + (["matplotlib"] if args.png and args.mask_examples > 0 else [])
    return []


def _checked(command):
    def run(args) -> int:
        require(_requirements(args), "explain", f"explain {args.command}")
        return command(args)
    return run


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    command = cmd_decoy_digits if args.command == "decoy-digits" else args.func
    return run_command(f"hardkuma-rationale explain {args.command}", _checked(command), args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
