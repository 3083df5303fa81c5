r"""``hardkuma-rationale`` command line (also ``python -m hardkuma_attention.rationale``).

Subcommands::

    hardkuma-rationale train    --format sst --train T --dev D [--test X] --embeddings glove.txt.gz
                                --gate hardkuma --selection 0.3 --out runs/sst_hk30
    hardkuma-rationale evaluate --model runs/sst_hk30/model.pt --format sst --data test.txt --out-dir DIR
    hardkuma-rationale predict  --model runs/sst_hk30/model.pt "a gorgeous , witty film"
    hardkuma-rationale plot     runs/*/results.json --out accuracy_vs_selected.png
    hardkuma-rationale table    runs/*/results.json --columns accuracy,selected,token_f1
    hardkuma-rationale explain  mask|decoy-digits ...   (see hardkuma_attention.explain.cli)

``train`` writes to ``--out``: ``model.pt`` (best on dev), ``history.jsonl`` (one dev evaluation a
line), ``checkpoint_last.pt`` (the whole training state after each dev evaluation: ``--resume``
continues an interrupted run bit-identically), then ``predictions.<split>.jsonl``,
``rationales.<split>.html`` and, last, ``results.json`` (configs, best dev and test metrics,
timing).  A non-empty ``--out`` is refused unless ``--resume`` or ``--overwrite`` is given.
Under ``torchrun --nproc_per_node N -m hardkuma_attention.rationale train ...`` it trains
data-parallel (:mod:`.distributed`; rank 0 writes the outputs).
Errors (bad flags, data, embeddings, model files) are one line, ``file:line: message`` or
``--flag: message``, exit code 2, before any work (``--debug`` shows the traceback).  Model / objective / training options are generated from the
fields of :class:`~.models.ModelConfig`, :class:`~.objectives.ObjectiveConfig` and
:class:`~.train.TrainConfig` (``--hidden-size``, ``--lagrange-lr``, ``--max-minutes``, ...).
"""
from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

__all__ = ["main", "build_parser"]

_HELP = {
    "gate": "hardkuma | bernoulli (REINFORCE) | none (full-text baseline)",
    "selector": "independent | dependent (autoregressive over z; HardKuma only)",
    "selection": "HardKuma: Lagrangian target for the expected fraction of selected tokens",
    "lasso": "HardKuma: Lagrangian upper bound on transitions (fused lasso), per selected token by default (2/L: runs of L tokens; --lasso-measure rate: per token, the paper)",
    "equality": "treat the Lagrangian constraints as equalities (drive to the target from both sides)",
    "selection_gradient": "what the selection multiplier pushes: l0 (expected L0) | open ((1 - P0 + P1) / 2: "
                          "its gradient survives when every gate is confidently open; needs --selection-measure decoded)",
    "lagrange_damping": "proportional term d of the Lagrangian controllers (selection and lasso): "
                        "push by lambda + d * (rate - target)",
    "selection_measure": "what the selection multiplier tracks: expected (expected L0, the paper) | decoded "
                         "(share of tokens kept by the deterministic test-time decision; the gradient: --selection-gradient)",
    "sparsity_weight": "Bernoulli: weight of |rate - sparsity_target| in the REINFORCE cost",
    "sparsity_target": "Bernoulli: selection rate the sparsity term aims at (0 = Lei et al.'s plain L1)",
    "coherence_weight": "Bernoulli: weight of the transition rate in the REINFORCE cost",
    "skip_zeros": "classifier drops tokens whose gate is exactly 0",
    "freeze_embeddings": "keep pre-trained embeddings fixed",
    "max_minutes": "wall-clock training budget in minutes (0 = none)",
    "eval_every": "dev evaluation every N updates (0 = once per epoch)",
}
# Filled from the data / embeddings, not from the command line.
_DERIVED = {"vocab_size", "embed_dim", "num_outputs", "task", "progress"}
# Allowed values of the generated flags: (low, high, low_open, high_open); None = unbounded.
_RANGES = {
    "hidden_size": (1, None, False, False), "dependent_hidden": (1, None, False, False),
    "dropout": (0, 1, False, True), "selection": (0, 1, False, False), "lasso": (0, 1, False, False),
    "lagrange_lr": (0, None, True, False), "lagrange_alpha": (0, 1, False, True), "lambda_max": (0, None, True, False),
    "sparsity_weight": (0, None, False, False), "sparsity_target": (0, 1, False, False),
    "coherence_weight": (0, None, False, False), "baseline_decay": (0, 1, False, True),
    "constraint_warmup": (0, None, False, False), "selection_anneal": (0, None, False, False),
    "lagrange_damping": (0, None, False, False), "epochs": (1, None, False, False), "batch_size": (1, None, False, False),
    "lr": (0, None, True, False), "selector_lr": (0, None, True, False), "weight_decay": (0, None, False, False),
    "max_grad_norm": (0, None, False, False), "eval_every": (0, None, False, False), "max_minutes": (0, None, False, False),
    "selection_tolerance": (0, 1, False, False), "eval_batch_size": (1, None, False, False),
    "bernoulli_decode_rate": (0, 1, True, False), "lambda_init": (None, None, False, False),
}
_CHOICES = {"gate": ("hardkuma", "bernoulli", "none"), "selector": ("independent", "dependent"),
            "ab_map": ("sigmoid", "clamp"), "pooling": ("final", "max"),
            "selection_measure": ("expected", "decoded"), "selection_gradient": ("l0", "open")}


def ranged(kind, low=None, high=None, low_open=False, high_open=False):
    """An argparse ``type`` that parses ``kind`` (int / float) and checks the range: the error
    reads ``argument --flag: must be >= 1, got 0`` (exit code 2)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"must be finite, got {text}")
        if low is not None and (value < low or (low_open and value == low)):
            raise argparse.ArgumentTypeError(f"must be {'>' if low_open else '>='} {low}, got {text}")
        if high is not None and (value > high or (high_open and value == high)):
            raise argparse.ArgumentTypeError(f"must be {'<' if high_open else '<='} {high}, got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _add_dataclass_args(parser: argparse.ArgumentParser, cls, title: str) -> None:
    group = parser.add_argument_group(title)
    for f in dataclasses.fields(cls):
        if f.name in _DERIVED or f.default is dataclasses.MISSING:
            continue
        flag = "--" + f.name.replace("_", "-")
        default, help_text = f.default, _HELP.get(f.name, "")
        bounds = _RANGES.get(f.name, (None, None, False, False))
        if isinstance(default, bool):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif isinstance(default, tuple):
            group.add_argument(flag, type=ranged(float), nargs=len(default), default=default, help=help_text)
        elif default is None:
            group.add_argument(flag, type=ranged(float, *bounds), default=None, help=help_text)
        elif isinstance(default, str):
            group.add_argument(flag, choices=_CHOICES.get(f.name), default=default, help=help_text + f" (default {default})")
        else:
            group.add_argument(flag, type=ranged(type(default), *bounds), default=default,
                               help=help_text + f" (default {default})")


def _dataclass_from_args(cls, args, **derived):
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in vars(args).items() if k in names}
    values.update({k: v for k, v in derived.items() if k in names})
    return cls(**values)


def _add_data_args(p: argparse.ArgumentParser) -> None:
    from .data import FORMATS

    p.add_argument("--format", required=True, choices=sorted(FORMATS), help="input format")
    p.add_argument("--docs-dir", default=None, help="ERASER docs folder (default: docs/ beside the jsonl)")
    p.add_argument("--aspect", default="0", help="BeerAdvocate aspect: 0..4 or appearance/aroma/palate")
    p.add_argument("--max-length", type=ranged(int, 1), default=None, help="truncate texts to this many tokens")


def build_parser() -> argparse.ArgumentParser:
    from .models import ModelConfig
    from .objectives import ObjectiveConfig
    from .train import TrainConfig

    parser = argparse.ArgumentParser(
        prog="hardkuma-rationale", description=__doc__.split("\n")[0],
        epilog="hardkuma-rationale explain {mask,decoy-digits,rrr-eval} ...: post-hoc explanations "
        "(input-mask optimisation, right-for-the-right-reasons); see `hardkuma-rationale explain -h`.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a rationale model (or a full-text baseline)")
    _add_data_args(t)
    t.add_argument("--train", required=True, help="training file")
    t.add_argument("--dev", default=None, help="dev file (model selection); or use --holdout")
    t.add_argument("--holdout", type=ranged(int, 0), default=0,
                   help="without --dev: hold out N training examples (seeded shuffle) as the dev set")
    t.add_argument("--test", default=None, help="optional test file, evaluated with the best model")
    t.add_argument("--embeddings", default=None, help="GloVe-format text file (.txt/.gz); none: random, trained")
    t.add_argument("--embed-dim-random", type=ranged(int, 1), default=50, help="embedding size without --embeddings")
    t.add_argument("--min-count", type=ranged(int, 1), default=1, help="vocabulary: min training count")
    t.add_argument("--regression", action="store_true", help="regression (default for beer formats)")
    t.add_argument("--out", required=True, help="output folder (must be empty, unless --resume or --overwrite)")
    t.add_argument("--resume", action="store_true",
                   help="continue the interrupted (or finished) run in --out from its checkpoint_last.pt, bit-identically")
    t.add_argument("--overwrite", action="store_true", help="delete the earlier run's outputs in --out first")
    t.add_argument("--name", default=None, help="run name (default: the output folder's name)")
    t.add_argument("--threads", type=ranged(int, 1), default=1, help="torch intra-op threads")
    t.add_argument("--html-examples", type=ranged(int, 0), default=100, help="examples in rationales.<split>.html")
    t.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    _add_dataclass_args(t, ModelConfig, "model")
    _add_dataclass_args(t, ObjectiveConfig, "objective")
    _add_dataclass_args(t, TrainConfig, "training")
    r = t.add_argument_group("right for the right reasons (full-text classifier, --gate none)")
    r.add_argument("--rrr", action="store_true",
                   help="add λ1 Σ (A ⊙ ∂/∂emb Σ_k log p_k)^2 with A = tokens outside the human rationale "
                   "(hardkuma_attention.explain.rrr_text)")
    r.add_argument("--rrr-fraction", type=ranged(float, 0, 1), default=0.5,
                   help="share of the training examples with a human rationale that get the penalty (default 0.5)")
    r.add_argument("--rrr-lambda1", type=ranged(float, 0), default=None, help="penalty weight (default: auto x --rrr-lambda1-scale)")
    r.add_argument("--rrr-lambda1-scale", type=ranged(float, 0, None, True), default=1.0,
                   help="multiplies the auto λ1 (cross-entropy / penalty of the initial model) (default 1)")
    r.add_argument("--rrr-per-dimension", action="store_true",
                   help="penalise every embedding coordinate's gradient, not the per-token sum over the embedding")
    r.add_argument("--rrr-lambda2", type=ranged(float, 0), default=0.0, help="weight of ||θ||^2 (default 0: weight decay only)")

    e = sub.add_parser("evaluate", help="metrics, predictions jsonl and HTML for a data file")
    _add_data_args(e)
    e.add_argument("--model", required=True, help="model.pt written by train")
    e.add_argument("--data", required=True, help="data file")
    e.add_argument("--out-dir", required=True, help="writes metrics.json, predictions.jsonl, rationales.html")
    e.add_argument("--html-examples", type=ranged(int, 0), default=100)
    e.add_argument("--threads", type=ranged(int, 1), default=1)
    e.add_argument("--bernoulli-decode-rate", type=ranged(float, 0, 1, True), default=None,
                   help="Bernoulli models: select the top ceil(rate * n) tokens instead of p >= 1/2")

    p = sub.add_parser("predict", help="highlight the rationale of texts in the terminal")
    p.add_argument("--model", required=True, help="model.pt written by train")
    p.add_argument("texts", nargs="*", help="whitespace-tokenised texts")
    p.add_argument("--file", default=None, help="read texts from this file, one a line")
    p.add_argument("--jsonl", default=None, help="also write prediction records here")
    p.add_argument("--color", action=argparse.BooleanOptionalAction, default=None,
                   help="ANSI colours (default: when stdout is a terminal)")

    g = sub.add_parser("plot", help="accuracy vs %% selected from results.json files")
    g.add_argument("results", nargs="+", help="results.json files")
    g.add_argument("--out", required=True, help="PNG path")
    g.add_argument("--split", default="test", choices=["dev", "test"])
    g.add_argument("--metric", default="accuracy")
    g.add_argument("--title", default="")
    tb = sub.add_parser("table", help="Markdown table of results.json files")
    tb.add_argument("results", nargs="+", help="results.json files")
    tb.add_argument("--split", default="test", choices=["dev", "test"])
    tb.add_argument("--columns", default="accuracy,selected", help="comma-separated metric names")
    add_debug_flag(t, e, p, g, tb)
    return parser


class UsageError(ValueError):
    """A bad combination of arguments; the message starts with the flag."""


def _read(args, path):
    """Read a data file (every row checked by the reader); an empty file is an error, and the
    ERASER reader's skipped empty evidence spans are reported on stderr."""
    from .data import DataFormatError, read_eraser, read_examples

    if args.format == "eraser":
        examples = read_eraser(path, args.docs_dir)
    else:
        try:
            examples = read_examples(path, args.format, args.aspect)
        except ValueError as err:  # an unknown beer aspect
            if isinstance(err, DataFormatError):
                raise
            raise UsageError(f"--aspect: {err}") from None
    if not examples:
        raise DataFormatError(path, None, "no examples (empty file?)")
    empty = sum(int(ex.meta.get("empty_evidence_spans", 0)) for ex in examples)
    if empty:
        print(f"note: {path}: {empty} empty evidence spans (start_token == end_token) skipped", file=sys.stderr)
    return examples


# Files `train` writes into --out (with the temporary files of atomic writes, `.NAME.*.tmp`).
_OUTPUTS = ("model.pt", "history.jsonl", "results.json", "checkpoint_last.pt")
_OUTPUT_PATTERNS = ("predictions.*.jsonl", "rationales.*.html")


def prepare_out(out: Path, resume: bool, overwrite: bool) -> None:
    """Make ``out`` ready for a run, before any work: temporary files of an interrupted write are
    removed; a non-empty folder is refused unless ``resume`` (needs ``checkpoint_last.pt``) or
    ``overwrite`` (deletes the files ``train`` writes; refuses when other files are there), so
    that no folder mixes the outputs of two runs."""
    if resume and overwrite:
        raise UsageError("--resume: cannot be combined with --overwrite")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out: {out} is a file")
    stale = sorted(out.glob(".*.tmp")) if out.is_dir() else []
    for path in stale:
        path.unlink()
    if stale:
        print(f"note: {out}: removed {len(stale)} temporary file(s) of an interrupted write", file=sys.stderr)
    present = sorted(out.iterdir()) if out.is_dir() else []
    if resume:
        if not (out / "checkpoint_last.pt").is_file():
            raise UsageError(f"--resume: {out / 'checkpoint_last.pt'} not found (nothing to resume)")
        return
    if not present:
        return
    if not overwrite:
        raise UsageError(f"--out: {out} is not empty (an earlier run?): --resume continues it, --overwrite replaces it")
    ours = [p for p in present if p.name in _OUTPUTS or any(p.match(g) for g in _OUTPUT_PATTERNS)]
    foreign = [p.name for p in present if p not in ours]
    if foreign:
        raise UsageError(f"--overwrite: {out} also holds files train does not write ({', '.join(foreign[:5])}): "
                         "choose another --out")
    for path in ours:
        path.unlink()


def _where(path, ex) -> tuple:
    return path, ex.meta.get("line")


def check_labels(task: str, train_path, train_ex, others: Sequence[tuple] = ()):
    """The :class:`~.train.LabelMap` of the training examples after checking every split before
    any training: classification labels of one Python type, at least two classes, and every
    label of ``others`` (``(path, examples)`` pairs: dev, test) seen in training; regression labels
    finite numbers.  Raises :class:`~.data.DataFormatError` naming the first offending
    ``file:line``."""
    import math

    from .data import DataFormatError
    from .train import LabelMap

    def number(path, ex):
        if isinstance(ex.label, bool) or not isinstance(ex.label, (int, float)) or not math.isfinite(ex.label):
            raise DataFormatError(*_where(path, ex), f"regression label must be a finite number, got {ex.label!r}")

    if task == "regression":
        for path, examples in [(train_path, train_ex), *others]:
            for ex in examples:
                number(path, ex)
        return LabelMap(None)
    kind = type(train_ex[0].label)
    for ex in train_ex:
        if type(ex.label) is not kind:
            raise DataFormatError(*_where(train_path, ex), f"label {ex.label!r} is a {type(ex.label).__name__}, earlier "
                                  f"labels are {kind.__name__} (e.g. {train_ex[0].label!r}): use one type")
    labels = LabelMap.from_examples(train_ex, task)
    if len(labels) < 2:
        raise DataFormatError(train_path, None, f"one class only ({labels.names[0]!r}): a classifier needs two or more")
    for path, examples in others:
        for ex in examples:
            if type(ex.label) is not kind or ex.label not in labels.index:
                raise DataFormatError(*_where(path, ex), f"label {ex.label!r} not among the training labels {labels.names}")
    return labels


def _write_outputs(pipeline, name: str, examples, out_dir: Path, html_examples: int, with_faith: bool):
    from .highlight import write_html
    from .train import write_jsonl

    metrics, records = pipeline.evaluate(examples, with_faithfulness=with_faith)
    write_jsonl(out_dir / f"predictions.{name}.jsonl", records)
    shown = []
    for rec, ex in list(zip(records, examples))[:html_examples]:
        shown.append(dict(rec, gold_rationale=ex.rationale[: len(rec["gates"])] if ex.rationale else None))
    write_html(out_dir / f"rationales.{name}.html", shown, title=f"{out_dir.name}: {name}")
    return metrics


# Arguments that may differ between a run and its --resume.
_NOT_IDENTITY = {"resume", "overwrite", "debug", "progress", "threads", "html_examples", "name", "command", "out"}


def cmd_train(args) -> int:
    """``train``; under torchrun (``RANK`` / ``WORLD_SIZE`` set) data-parallel, see :mod:`.distributed`."""
    from .distributed import from_environment

    ctx = from_environment()  # LaunchError (exit 2) for a broken torchrun environment
    try:
        return _cmd_train(args, ctx)
    finally:
        ctx.close()


def _cmd_train(args, ctx) -> int:
    import torch

    from .distributed import dump_rank_state, on_writer
    from .embeddings import build_vocab, load_embedding_matrix, read_glove
    from .models import ModelConfig, RationaleModel
    from .objectives import ObjectiveConfig, RationaleObjective
    from .train import Pipeline, TrainConfig, TrainingInterrupted, train, write_json

    t0 = time.time()
    out_dir = Path(args.out)
    if args.resume and args.overwrite:
        raise UsageError("--resume: cannot be combined with --overwrite")
    if ctx.distributed and args.rrr:
        raise UsageError("--rrr: not supported under torchrun (its double backward does not run through DDP)")
    if not args.dev and not args.holdout:
        raise UsageError("--dev: give a dev file, or --holdout N")
    train_ex = _read(args, args.train)
    if args.dev:
        dev_ex = _read(args, args.dev)
    elif args.holdout < len(train_ex):
        order = list(range(len(train_ex)))
        random.Random(args.seed).shuffle(order)
        dev_ex = [train_ex[i] for i in order[: args.holdout]]
        train_ex = [train_ex[i] for i in sorted(order[args.holdout :])]
    else:
        raise UsageError(f"--holdout: must be smaller than the {len(train_ex)} training examples, got {args.holdout}")
    test_ex = _read(args, args.test) if args.test else None
    if ctx.distributed and -(-len(train_ex) // args.batch_size) < ctx.world_size:
        raise UsageError(f"--batch-size: {len(train_ex)} training examples make fewer batches than the "
                         f"{ctx.world_size} processes (WORLD_SIZE): use a smaller --batch-size")
    task = "regression" if (args.regression or args.format.startswith("beer")) else "classification"
    labels = check_labels(task, args.train, train_ex,
                          [(args.dev or args.train, dev_ex)] + ([(args.test, test_ex)] if test_ex else []))
    # after the data checks: bad data never deletes a run; under torchrun rank 0 alone
    on_writer(ctx, lambda: prepare_out(out_dir, args.resume, args.overwrite), (UsageError,))
    torch.set_num_threads(args.threads)
    if args.embeddings:
        glove_words, glove_vectors = read_glove(args.embeddings)
        vocab = build_vocab((ex.tokens for ex in train_ex), glove_words, args.min_count)
        weight, found = load_embedding_matrix(vocab, glove_words, glove_vectors, seed=args.seed)
        print(f"vocabulary {len(vocab)} words, {found} with pre-trained {weight.size(1)}-d vectors", file=sys.stderr)
        freeze = args.freeze_embeddings
    else:
        vocab = build_vocab((ex.tokens for ex in train_ex), (), args.min_count)
        weight, freeze = None, False
    embed_dim = weight.size(1) if weight is not None else args.embed_dim_random
    mcfg = _dataclass_from_args(ModelConfig, args, vocab_size=len(vocab), embed_dim=embed_dim,
                                num_outputs=len(labels), task=task)
    mcfg.freeze_embeddings = freeze
    ocfg = _dataclass_from_args(ObjectiveConfig, args)
    tcfg = _dataclass_from_args(TrainConfig, args, progress=args.progress)
    torch.manual_seed(tcfg.seed)
    model = RationaleModel(mcfg, weight)
    objective = RationaleObjective(ocfg, mcfg.gate, task)
    pipeline = Pipeline(model, objective, vocab, labels, args.max_length)
    extra_loss = None
    if args.rrr:
        from ..explain.rrr_text import RRRTextConfig, RRRTextPenalty

        extra_loss = RRRTextPenalty(pipeline, train_ex, RRRTextConfig(
            args.rrr_fraction, args.rrr_lambda1, args.rrr_lambda1_scale, args.rrr_lambda2, seed=tcfg.seed,
            per_dimension=args.rrr_per_dimension))
        print(f"RRR: {extra_loss.info}", file=sys.stderr)
        # Double backprop through saturated LSTM gates produces denormal floats, which made CPU steps
        # 2-3x slower on Movies; flush them to zero during training only (process-wide setting,
        # restored to torch's default afterwards so callers in the same process are unaffected).
        torch.set_flush_denormal(True)
    run = {**{k: v for k, v in vars(args).items() if k not in _NOT_IDENTITY}, **ctx.run_identity()}
    try:
        summary = train(pipeline, train_ex, dev_ex, tcfg, out_dir, extra_loss=extra_loss, resume=args.resume, run=run,
                        ctx=ctx)
    except TrainingInterrupted as err:
        print(f"hardkuma-rationale train: {err}; continue with the same command and --resume", file=sys.stderr)
        return 143
    finally:
        if extra_loss is not None:
            torch.set_flush_denormal(False)
    dump_rank_state(ctx, model, objective)
    if not ctx.is_writer:
        return 0  # rank 0 writes the outputs

    from .train import load_pipeline

    best = load_pipeline(out_dir / "model.pt")
    with_faith = task == "classification"
    results = {
        "name": args.name or out_dir.name,
        "command": " ".join(sys.argv),
        "data": {"format": args.format, "train": args.train, "dev": args.dev or f"{args.holdout} held out of --train", "test": args.test,
                 "n_train": len(train_ex), "n_dev": len(dev_ex), "n_test": len(test_ex) if test_ex else 0,
                 "embeddings": args.embeddings, "embed_dim": embed_dim, "vocab_size": len(vocab)},
        "model_config": dataclasses.asdict(mcfg),
        "objective_config": dataclasses.asdict(ocfg),
        "train_config": dataclasses.asdict(tcfg),
        "threads": args.threads,
        "training": summary,
        "rrr": extra_loss.info if extra_loss is not None else None,
        "final_multipliers": {k: float(v) for k, v in best.objective.state_dict().items()},
        "dev": _write_outputs(best, "dev", dev_ex, out_dir, args.html_examples, with_faith),
    }
    if test_ex is not None:
        results["test"] = _write_outputs(best, "test", test_ex, out_dir, args.html_examples, with_faith)
    results["total_minutes"] = (time.time() - t0) / 60
    write_json(out_dir / "results.json", results)
    shown = results.get("test", results["dev"])
    print(f"{results['name']}: " + ", ".join(f"{k}={v:.4f}" for k, v in shown.items() if isinstance(v, float)))
    return 0


def cmd_evaluate(args) -> int:
    import torch

    from .train import load_pipeline, write_json

    pipeline = load_pipeline(args.model)
    if args.max_length:
        pipeline.max_length = args.max_length
    if args.bernoulli_decode_rate is not None:
        pipeline.model.config.bernoulli_decode_rate = args.bernoulli_decode_rate
    examples = _read(args, args.data)
    if pipeline.labels.is_regression:
        check_labels("regression", args.data, examples)
    else:
        _check_known_labels(pipeline.labels, args.data, examples)
    torch.set_num_threads(args.threads)
    out_dir = Path(args.out_dir)
    metrics = _write_outputs(pipeline, Path(args.data).stem, examples, out_dir, args.html_examples,
                             not pipeline.labels.is_regression)
    write_json(out_dir / "metrics.json", metrics)
    print(", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))
    return 0


def _check_known_labels(labels, path, examples) -> None:
    from .data import DataFormatError

    kind = type(labels.names[0])
    for ex in examples:
        if type(ex.label) is not kind or ex.label not in labels.index:
            raise DataFormatError(*_where(path, ex), f"label {ex.label!r} not among the model's labels {labels.names}")


def cmd_predict(args) -> int:
    from .data import Example, text_lines
    from .highlight import terminal_highlight
    from .train import load_pipeline, write_jsonl

    texts: List[str] = list(args.texts)
    if args.file:
        texts.extend(line.strip() for _, line in text_lines(args.file) if line.strip())
    if not texts:
        raise UsageError("--file: give texts as arguments or --file")
    pipeline = load_pipeline(args.model)
    examples = [Example(t.split(), None, id=f"input{i}") for i, t in enumerate(texts)]
    for i, ex in enumerate(examples):
        if not ex.tokens:
            raise UsageError(f"texts: text {i} is empty")
    records = pipeline.predict(examples)
    for rec in records:
        pred = rec["prediction"] if rec["probs"] is None else f"{rec['prediction']} (p={max(rec['probs']):.2f})"
        print(f"{pred}\t{100 * rec['selected']:.0f}% selected\t{terminal_highlight(rec['tokens'], rec['gates'], args.color)}")
    if args.jsonl:
        write_jsonl(args.jsonl, records)
    return 0


def cmd_plot(args) -> int:
    from .extras import require
    from .plot import load_results, plot_accuracy_vs_selection

    require(["matplotlib"], "rationale", "plot")

    plot_accuracy_vs_selection(load_results(args.results), args.out, args.split, args.metric, args.title)
    print(args.out)
    return 0


def cmd_table(args) -> int:
    from .plot import load_results
    from .report import results_table

    print(results_table(load_results(args.results), args.split, args.columns.split(",")), end="")
    return 0


def run_command(prog: str, command, args) -> int:
    """``command(args)``; a data error (``file:line: ...``), a bad argument (``--flag: ...``), a
    missing or unusable file or a missing extra becomes one line ``<prog>: error: <message>`` on
    stderr and exit code 2, no traceback (``--debug``: the traceback).  torch's thread count and
    flush-denormal state are restored afterwards (:mod:`.settings`)."""
    from .data import DataFormatError
    from .extras import MissingExtra
    from .distributed import LaunchError
    from .settings import restored_torch_settings
    from .train import ModelFileError

    try:
        with restored_torch_settings():
            return command(args)
    except (DataFormatError, FileNotFoundError, LaunchError, MissingExtra, ModelFileError, UsageError) as err:
        if getattr(args, "debug", False):
            raise
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2


def add_debug_flag(*parsers) -> None:
    for p in parsers:
        p.add_argument("--debug", action="store_true", help="show the traceback of an error")


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["explain"]:  # post-hoc explanations: hardkuma_attention.explain
        from ..explain.cli import main as explain_main

        return explain_main(argv[1:])
    args = build_parser().parse_args(argv)
    commands = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "plot": cmd_plot, "table": cmd_table}
    return run_command(f"hardkuma-rationale {args.command}", commands[args.command], args)


if __name__ == "__main__":
    sys.exit(main())
