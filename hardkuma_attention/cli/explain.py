r"""``hardkuma-rationale explain <command>`` (also ``python -m hardkuma_attention.explain <command>``).

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
import dataclasses
import json
import statistics
from pathlib import Path
from typing import Dict, List, Sequence

from .checks import OUTPUTS, load_models, prepare_out, read_checked
from .common import add_debug_flag, identity, ranged

__all__ = ["add_explain_commands", "check_requirements", "is_explain_command", "cmd_decoy_digits", "cmd_mask",
           "cmd_rrr_eval"]


def _mean_std(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


# ---------------------------------------------------------------------------------------- decoy
def _decoy_runs(args):
    """``(rows, first_models)``: a plain and an RRR MLP per patch size and seed; ``first_models``
    holds both models of the first (patch, seed) with their training data."""
    from ..explain.decoy import (DecoyData, TrainDecoyConfig, accuracy, decoy_gradient_mass, load_decoy_digits,
                                 train_mlp)

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
    return rows, first_models


def _decoy_table(rows, patches):
    """``(summary, table)``: means per patch and model, and a Markdown table with mean ± std."""
    summary = {}
    lines = ["| patch | model | train acc | decoy test acc | clean test acc | input-grad mass on patch | λ1 |",
             "|---|---|---|---|---|---|---|"]
    for patch in patches:
        for rrr in (False, True):
            sel = [r for r in rows if r["patch"] == patch and r["rrr"] == rrr]
            key = f"patch{patch}_{'rrr' if rrr else 'plain'}"
            summary[key] = {k: statistics.mean(r[k] for r in sel) for k in
                            ("train_acc", "decoy_test_acc", "clean_test_acc", "grad_mass_on_patch", "lambda1")}
            lines.append(f"| {patch}×{patch} | {'RRR' if rrr else 'plain CE'} | "
                         f"{_mean_std([r['train_acc'] for r in sel])} | {_mean_std([r['decoy_test_acc'] for r in sel])} | "
                         f"{_mean_std([r['clean_test_acc'] for r in sel])} | "
                         f"{_mean_std([r['grad_mass_on_patch'] for r in sel])} | {summary[key]['lambda1']:.3g} |")
    return summary, "\n".join(lines)


def _decoy_masks(args, first_models) -> dict:
    """Image masks of the first plain / RRR models: mass on the patch, and the PNG (``--png``)."""
    from ..explain.decoy import explain_images

    masks_info = {}
    n = max(args.mask_examples, args.mask_stat_examples)
    if n <= 0 or not first_models:
        return masks_info
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
        from ..explain.plot import save_image_masks

        save_image_masks(args.png, x[: args.mask_examples], masks, titles,
                         [f"y={int(v)}" for v in y[: args.mask_examples]])
        print(f"wrote {args.png}")
    print(f"image masks ({n} training images of patch {patch}, seed {seed}, decoy present):", json.dumps(masks_info))
    return masks_info


def cmd_decoy_digits(args) -> int:
    import torch

    from ..rationale.io import write_json

    prepare_out(args.out, args.overwrite, OUTPUTS["decoy-digits"])
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    rows, first_models = _decoy_runs(args)
    summary, table = _decoy_table(rows, args.patch)
    print(table)
    masks_info = _decoy_masks(args, first_models)
    write_json(out / "decoy_digits.json", {"args": identity(args, ()), "runs": rows, "summary": summary,
                                            "image_masks": masks_info, "table": table})
    print(f"wrote {out / 'decoy_digits.json'}")
    return 0


def _add_decoy_parser(sub) -> argparse.ArgumentParser:
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
    d.set_defaults(func=cmd_decoy_digits)
    return d


def _add_text_eval_args(p: argparse.ArgumentParser, fraction_help: str, out_help: str) -> None:
    """The flags ``mask`` and ``rrr-eval`` share: data, truncation, subset, batching, output folder."""
    from ..rationale.data import FORMATS

    p.add_argument("--data", required=True, help="data file with human rationales (e.g. movies/val.jsonl)")
    p.add_argument("--format", default="eraser", choices=sorted(FORMATS), help="reader format (default eraser)")
    p.add_argument("--max-length", type=ranged(int, 1), default=None, help="tokens kept (default: the model's)")
    p.add_argument("--fraction", type=ranged(float, 0, 1, True), default=None, help=fraction_help)
    p.add_argument("--limit", type=ranged(int, 0), default=0, help="first N examples only")
    p.add_argument("--batch-size", type=ranged(int, 1), default=50)
    p.add_argument("--threads", type=ranged(int, 1), default=1)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--out", required=True, help=out_help)
    p.add_argument("--overwrite", action="store_true", help="delete this command's earlier outputs in --out first")


# ---------------------------------------------------------------------------------------- mask
def _mask_config(args):
    """The :class:`~hardkuma_attention.explain.mask.MaskConfig` of ``mask``: the "explain"
    controller preset with ``--lagrange-lr`` (None: the preset's)."""
    from ..config import ControllerConfig
    from ..explain.mask import MaskConfig

    return MaskConfig(max_steps=args.max_steps, l0_target=args.l0_target, seed=args.seed,
                      controller=ControllerConfig.preset("explain").replace(lr=args.lagrange_lr))


def _default_l0_target() -> float:
    """``--l0-target``'s default: :class:`~hardkuma_attention.explain.mask.MaskConfig`'s."""
    from ..explain.mask import MaskConfig

    return {f.name: f for f in dataclasses.fields(MaskConfig)}["l0_target"].default


def _write_method_pages(out: Path, args, rows, records) -> None:
    """One HTML page per method: its hard rationales (top fraction) of the first examples."""
    from ..explain.text import method_label
    from ..rationale.highlight import write_html

    for method in args.methods:
        pages = []
        for r in [r for r in records[method] if r is not None][: args.html_examples]:
            hard = [0.0] * len(r["tokens"])
            for s, e in r["rationale_spans"]:
                hard[s:e] = [1.0] * (e - s)
            pages.append({**r, "gates": hard})
        write_html(out / f"{method_label(method, args.occlusion_window, args.occlusion_mode)}.html", pages,
                   title=f"{method} rationales (top {rows[0]['fraction']:.1%} of tokens)")


def cmd_mask(args) -> int:
    import torch

    from ..explain.text import evaluate_methods, markdown_table, rationale_model_row
    from ..rationale.io import write_json
    from ..rationale.checkpoints import load_pipeline

    pipeline = load_pipeline(args.model)
    other = load_pipeline(args.rationale_model) if args.rationale_model else None
    examples = read_checked(args, [pipeline.labels] + ([other.labels] if other is not None else []))
    prepare_out(args.out, args.overwrite, OUTPUTS["mask"])
    torch.set_num_threads(args.threads)
    if args.max_length is not None:
        pipeline.max_length = args.max_length
    if args.limit:
        examples = examples[: args.limit]
    rows, records = evaluate_methods(pipeline, examples, args.methods, args.fraction, args.batch_size, _mask_config(args),
                                     progress=args.progress, occlusion_window=args.occlusion_window,
                                     occlusion_mode=args.occlusion_mode) if args.methods else ([], {})
    if other is not None:
        other.max_length = pipeline.max_length
        rows.append(rationale_model_row(other, examples, args.batch_size))
        print(json.dumps(rows[-1]), flush=True)
    out = Path(args.out)
    table = markdown_table(rows)
    print(table)
    write_json(out / "explain_results.json", {"args": identity(args, ()), "rows": rows, "table": table})
    _write_method_pages(out, args, rows, records)
    print(f"wrote {out}/explain_results.json and HTML pages")
    return 0


def _add_mask_parser(sub) -> argparse.ArgumentParser:
    from ..explain.text import METHODS, OCCLUSION_MODES

    m = sub.add_parser("mask", help="post-hoc rationales of a trained text classifier vs human spans")
    m.add_argument("--model", required=True, help="model.pt from hardkuma-rationale train (e.g. --gate none)")
    m.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    m.add_argument("--rationale-model", default=None,
                   help="also evaluate this select-then-predict model.pt (its own rationales and classifier)")
    _add_text_eval_args(m, "top fraction of tokens kept as the hard rationale (default: human rate of the data)",
                        "output folder (must be empty, unless --overwrite)")
    m.add_argument("--max-steps", type=ranged(int, 1), default=900, help="mask optimisation steps (convergence stop)")
    m.add_argument("--l0-target", type=ranged(float, 0, 1), default=_default_l0_target(),
                   help="mask-hardkuma: expected-L0 target")
    m.add_argument("--lagrange-lr", type=ranged(float, 0, None, True), default=None,
                   help="mask-hardkuma: multiplier step size (default: the 'explain' controller preset's, 0.05)")
    m.add_argument("--occlusion-window", type=ranged(int, 1), default=1, help="occlusion: tokens per window (default 1)")
    m.add_argument("--occlusion-mode", default="remove", choices=OCCLUSION_MODES,
                   help="occlusion: remove the window's tokens (default) or replace them by the padding embedding")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--html-examples", type=ranged(int, 0), default=30)
    m.set_defaults(func=cmd_mask)
    return m


# ---------------------------------------------------------------------------------------- rrr-eval
def _train_results(path) -> dict:
    """``results.json`` of ``train`` beside a model (checked by the rationale reader); ``{}`` if absent."""
    from ..rationale.plot import load_results

    return load_results([path])[0] if path.is_file() else {}


_IXG_KEYS = ("fraction", "token_precision", "token_recall", "token_f1", "iou_f1", "auprc",
             "comprehensiveness", "sufficiency", "aopc_comprehensiveness", "aopc_sufficiency")
_MASS_KEYS = ("n", "accuracy", "grad_mass_inside", "abs_grad_mass_inside", "abs_grad_total", "human_rate")


def _rrr_row(args, name, path, pipeline, results, examples) -> dict:
    """One ``rrr-eval`` row: training facts from ``results``, gradient mass and input×gradient F1."""
    from ..explain.rrr_text import gradient_mass_report
    from ..explain.text import evaluate_methods

    if args.max_length is not None:
        pipeline.max_length = args.max_length
    mass = gradient_mass_report(pipeline, examples, args.batch_size)
    (ixg,), _ = evaluate_methods(pipeline, examples, ["input-x-gradient"], args.fraction, args.batch_size,
                                 progress=args.progress)
    rrr = results.get("rrr") or {}
    return {"name": name, "model": path, "seed": results.get("train_config", {}).get("seed"),
            "lambda1": rrr.get("lambda1", 0.0), "rrr": rrr or None,
            "steps": results.get("training", {}).get("steps"),
            "train_minutes": results.get("training", {}).get("train_minutes"),
            **{k: mass[k] for k in _MASS_KEYS}, **{k: ixg[k] for k in _IXG_KEYS}}


def cmd_rrr_eval(args) -> int:
    import torch

    from ..explain.rrr_text import rrr_table
    from ..rationale.io import write_json

    models = load_models(args.models, "--models")
    examples = read_checked(args, [pipeline.labels for _, _, pipeline in models])
    infos = {path: _train_results(Path(path).with_name("results.json")) for _, path, _ in models}
    prepare_out(args.out, args.overwrite, OUTPUTS["rrr-eval"])
    torch.set_num_threads(args.threads)
    if args.limit:
        examples = examples[: args.limit]
    rows = []
    for name, path, pipeline in models:
        rows.append(_rrr_row(args, name, path, pipeline, infos[path], examples))
        print(json.dumps(rows[-1]), flush=True)
    table = rrr_table(rows)
    print(table)
    out = Path(args.out)
    write_json(out / "rrr_eval.json", {"args": identity(args, ()), "rows": rows, "table": table})
    print(f"wrote {out / 'rrr_eval.json'}")
    return 0


def _add_rrr_eval_parser(sub) -> argparse.ArgumentParser:
    e = sub.add_parser("rrr-eval", help="accuracy and input-gradient mass inside human rationales of text classifiers")
    e.add_argument("--models", nargs="+", required=True,
                   help="NAME=model.pt (from hardkuma-rationale train --gate none [--rrr]); NAME_s<seed> runs are averaged")
    _add_text_eval_args(e, "top fraction of input×gradient tokens kept (default: human rate of the data)",
                        "output folder (rrr_eval.json; must be empty, unless --overwrite)")
    e.set_defaults(func=cmd_rrr_eval)
    return e


# ---------------------------------------------------------------------------------------- group
def _requirements(args) -> List[str]:
    """Modules of the ``explain`` extra that the command needs: scikit-learn (the digits data) and
    matplotlib for ``decoy-digits --png``; ``mask`` and ``rrr-eval`` need the core only."""
    if args.command == "decoy-digits":
        return ["sklearn"] + (["matplotlib"] if args.png and args.mask_examples > 0 else [])
    return []


def check_requirements(args) -> None:
    """:class:`~hardkuma_attention.rationale.extras.MissingExtra` before any work when the
    ``explain`` extra is missing a module the command needs."""
    from ..rationale.extras import require

    require(_requirements(args), "explain", f"explain {args.command}")


def is_explain_command(func) -> bool:
    """Whether ``func`` (``args.func``) is one of the ``explain`` group's commands."""
    return func in (cmd_decoy_digits, cmd_mask, cmd_rrr_eval)


def add_explain_commands(sub) -> argparse.ArgumentParser:
    """The ``explain`` subcommand group (``decoy-digits``, ``mask``, ``rrr-eval``) on ``sub``.
    The chosen command's name lands in ``args.command`` (so the arguments saved with the outputs
    are those of ``python -m hardkuma_attention.explain``)."""
    group = sub.add_parser("explain", help="post-hoc explanations: input-mask rationales, right for the right reasons",
                           description="Explain trained classifiers: input-mask rationales, RRR demos.")
    inner = group.add_subparsers(dest="command", required=True)
    add_debug_flag(_add_decoy_parser(inner), _add_mask_parser(inner), _add_rrr_eval_parser(inner))
    return group
