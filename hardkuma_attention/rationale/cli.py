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
line), ``results.json`` (configs, best dev and test metrics, timing), ``predictions.<split>.jsonl``
and ``rationales.<split>.html``.  Model / objective / training options are generated from the
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


def _add_dataclass_args(parser: argparse.ArgumentParser, cls, title: str) -> None:
    group = parser.add_argument_group(title)
    for f in dataclasses.fields(cls):
        if f.name in _DERIVED or f.default is dataclasses.MISSING:
            continue
        flag = "--" + f.name.replace("_", "-")
        default, help_text = f.default, _HELP.get(f.name, "")
        if isinstance(default, bool):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif isinstance(default, tuple):
            group.add_argument(flag, type=float, nargs=len(default), default=default, help=help_text)
        elif default is None:
            group.add_argument(flag, type=float, default=None, help=help_text)
        else:
            group.add_argument(flag, type=type(default), default=default, help=help_text + f" (default {default})")


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
    p.add_argument("--max-length", type=int, default=None, help="truncate texts to this many tokens")


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
    t.add_argument("--holdout", type=int, default=0,
                   help="without --dev: hold out N training examples (seeded shuffle) as the dev set")
    t.add_argument("--test", default=None, help="optional test file, evaluated with the best model")
    t.add_argument("--embeddings", default=None, help="GloVe-format text file (.txt/.gz); none: random, trained")
    t.add_argument("--embed-dim-random", type=int, default=50, help="embedding size without --embeddings")
    t.add_argument("--min-count", type=int, default=1, help="vocabulary: min training count")
    t.add_argument("--regression", action="store_true", help="regression (default for beer formats)")
    t.add_argument("--out", required=True, help="output folder")
    t.add_argument("--name", default=None, help="run name (default: the output folder's name)")
    t.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    t.add_argument("--html-examples", type=int, default=100, help="examples in rationales.<split>.html")
    t.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    _add_dataclass_args(t, ModelConfig, "model")
    _add_dataclass_args(t, ObjectiveConfig, "objective")
    _add_dataclass_args(t, TrainConfig, "training")
    r = t.add_argument_group("right for the right reasons (full-text classifier, --gate none)")
    r.add_argument("--rrr", action="store_true",
                   help="add λ1 Σ (A ⊙ ∂/∂emb Σ_k log p_k)^2 with A = tokens outside the human rationale "
                   "(hardkuma_attention.explain.rrr_text)")
    r.add_argument("--rrr-fraction", type=float, default=0.5,
                   help="share of the training examples with a human rationale that get the penalty (default 0.5)")
    r.add_argument("--rrr-lambda1", type=float, default=None, help="penalty weight (default: auto x --rrr-lambda1-scale)")
    r.add_argument("--rrr-lambda1-scale", type=float, default=1.0,
                   help="multiplies the auto λ1 (cross-entropy / penalty of the initial model) (default 1)")
    r.add_argument("--rrr-per-dimension", action="store_true",
                   help="penalise every embedding coordinate's gradient, not the per-token sum over the embedding")
    r.add_argument("--rrr-lambda2", type=float, default=0.0, help="weight of ||θ||^2 (default 0: weight decay only)")

    e = sub.add_parser("evaluate", help="metrics, predictions jsonl and HTML for a data file")
    _add_data_args(e)
    e.add_argument("--model", required=True, help="model.pt written by train")
    e.add_argument("--data", required=True, help="data file")
    e.add_argument("--out-dir", required=True, help="writes metrics.json, predictions.jsonl, rationales.html")
    e.add_argument("--html-examples", type=int, default=100)
    e.add_argument("--threads", type=int, default=1)
    e.add_argument("--bernoulli-decode-rate", type=float, default=None,
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
    return parser


def _read(args, path):
    from .data import read_eraser, read_examples

    if args.format == "eraser":
        return read_eraser(path, args.docs_dir)
    return read_examples(path, args.format, args.aspect)


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


def cmd_train(args) -> int:
    import torch

    from .embeddings import build_vocab, load_embedding_matrix, read_glove
    from .models import ModelConfig, RationaleModel
    from .objectives import ObjectiveConfig, RationaleObjective
    from .train import LabelMap, Pipeline, TrainConfig, train, write_json

    torch.set_num_threads(args.threads)
    t0 = time.time()
    train_ex = _read(args, args.train)
    if args.dev:
        dev_ex = _read(args, args.dev)
    elif 0 < args.holdout < len(train_ex):
        order = list(range(len(train_ex)))
        random.Random(args.seed).shuffle(order)
        dev_ex = [train_ex[i] for i in order[: args.holdout]]
        train_ex = [train_ex[i] for i in sorted(order[args.holdout :])]
    else:
        raise SystemExit("train: give --dev, or --holdout N with 0 < N < number of training examples")
    test_ex = _read(args, args.test) if args.test else None
    task = "regression" if (args.regression or args.format.startswith("beer")) else "classification"
    labels = LabelMap.from_examples(train_ex, task)
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
    out_dir = Path(args.out)
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
    try:
        summary = train(pipeline, train_ex, dev_ex, tcfg, out_dir, extra_loss=extra_loss)
    finally:
        if extra_loss is not None:
            torch.set_flush_denormal(False)

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

    torch.set_num_threads(args.threads)
    pipeline = load_pipeline(args.model)
    if args.max_length:
        pipeline.max_length = args.max_length
    if args.bernoulli_decode_rate is not None:
        pipeline.model.config.bernoulli_decode_rate = args.bernoulli_decode_rate
    examples = _read(args, args.data)
    out_dir = Path(args.out_dir)
    metrics = _write_outputs(pipeline, Path(args.data).stem, examples, out_dir, args.html_examples,
                             not pipeline.labels.is_regression)
    write_json(out_dir / "metrics.json", metrics)
    print(", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))
    return 0


def cmd_predict(args) -> int:
    from .data import Example
    from .highlight import terminal_highlight
    from .train import load_pipeline, write_jsonl

    texts: List[str] = list(args.texts)
    if args.file:
        with open(args.file, encoding="utf-8") as f:
            texts.extend(line.strip() for line in f if line.strip())
    if not texts:
        raise SystemExit("predict: give texts as arguments or --file")
    pipeline = load_pipeline(args.model)
    examples = [Example(t.split(), None, id=f"input{i}") for i, t in enumerate(texts)]
    for i, ex in enumerate(examples):
        if not ex.tokens:
            raise SystemExit(f"predict: text {i} is empty")
    records = pipeline.predict(examples)
    for rec in records:
        pred = rec["prediction"] if rec["probs"] is None else f"{rec['prediction']} (p={max(rec['probs']):.2f})"
        print(f"{pred}\t{100 * rec['selected']:.0f}% selected\t{terminal_highlight(rec['tokens'], rec['gates'], args.color)}")
    if args.jsonl:
        write_jsonl(args.jsonl, records)
    return 0


def cmd_plot(args) -> int:
    from .plot import load_results, plot_accuracy_vs_selection

    plot_accuracy_vs_selection(load_results(args.results), args.out, args.split, args.metric, args.title)
    print(args.out)
    return 0


def cmd_table(args) -> int:
    from .plot import load_results
    from .report import results_table

    print(results_table(load_results(args.results), args.split, args.columns.split(",")), end="")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["explain"]:  # post-hoc explanations: hardkuma_attention.explain
        from ..explain.cli import main as explain_main

        return explain_main(argv[1:])
    args = build_parser().parse_args(argv)
    from .data import DataFormatError

    try:
        return {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "plot": cmd_plot, "table": cmd_table}[args.command](args)
    except (DataFormatError, FileNotFoundError) as err:
        print(f"hardkuma-rationale {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
