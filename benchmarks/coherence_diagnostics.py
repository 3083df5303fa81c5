"""Why the transition (fused-lasso) constraint collapses a selection: per-step diagnostics on the
synthetic span task (:func:`hardkuma_attention.rationale.synthetic.span_examples`: a 5-token phrase in a 40-token
text decides the label).

Trains a small HardKuma rationale model with the given objective settings and prints, every
``--every`` updates, the task loss, the sampled and decoded selection rates, the measured transition
quantity, both multipliers and the norm of the selector's gradient; after each epoch the dev
accuracy, selection, transition rate (switches per token), token F1, IOU-F1 and the share of texts
whose selection has token-set IOU >= 0.5 with the phrase.  Example (the test's settings)::

    OMP_NUM_THREADS=1 python benchmarks/coherence_diagnostics.py \\
        --objective '{"selection": 0.2, "lagrange_lr": 0.02, "constraint_warmup": 40, "selection_anneal": 150, "lasso": 0.25}'

``--objective`` / ``--model``: JSON objects of ObjectiveConfig / ModelConfig fields.
"""
import argparse
import json
import random
import sys
import time

import torch

from hardkuma_attention.rationale import LabelMap, ModelConfig, ObjectiveConfig, Pipeline, RationaleModel
from hardkuma_attention.rationale import RationaleObjective
from hardkuma_attention.rationale.embeddings import build_vocab
from hardkuma_attention.rationale.synthetic import span_examples

STEP_KEYS = ["task_loss", "selected", "decoded_selected", "expected_transitions", "lambda_selection",
             "lambda_lasso", "lasso_active"]
EPOCH_KEYS = ["accuracy", "selected", "transitions", "token_f1", "iou_f1", "iou_ge_0.5"]


def phrase_iou_share(records, examples):
    """Share of texts whose selected token set has IOU >= 0.5 with the phrase."""
    hits = 0
    for r, ex in zip(records, examples):
        pred = {i for i, g in enumerate(r["gates"]) if g != 0}
        gold = {i for i, g in enumerate(ex.rationale) if g}
        hits += len(pred & gold) / len(pred | gold) >= 0.5
    return hits / len(records)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--objective", default='{"selection": 0.2}', help="ObjectiveConfig fields (JSON)")
    p.add_argument("--model", default='{"pooling": "max"}', help="ModelConfig fields (JSON)")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--n", type=int, default=1000, help="training texts")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--every", type=int, default=20, help="print every N updates")
    a = p.parse_args(argv)
    try:
        a.objective, a.model = json.loads(a.objective), json.loads(a.model)
    except json.JSONDecodeError as e:
        p.error(f"--objective/--model: not JSON: {e}")
    return a


def main(argv=None):
    a = parse_args(argv)
    torch.set_num_threads(1)
    train_ex, dev_ex = span_examples(a.n, seed=a.seed), span_examples(200, seed=100 + a.seed)
    vocab = build_vocab(ex.tokens for ex in train_ex)
    labels = LabelMap.from_examples(train_ex, "classification")
    torch.manual_seed(a.seed)
    mc = dict(vocab_size=len(vocab), embed_dim=16, hidden_size=16, num_outputs=2, gate="hardkuma", dropout=0.0,
              freeze_embeddings=False, **a.model)
    model = RationaleModel(ModelConfig(**mc))
    objective = RationaleObjective(ObjectiveConfig.from_dict(a.objective), "hardkuma")
    pipe = Pipeline(model, objective, vocab, labels)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    rng, step, start = random.Random(a.seed), 0, time.time()
    for epoch in range(1, a.epochs + 1):
        model.train(), objective.train()
        for batch in pipe.batches(train_ex, 25, shuffle=True, rng=rng):
            loss, stats = objective(model(batch.tokens, batch.mask), batch.targets)
            opt.zero_grad()
            loss.backward()
            grad = torch.sqrt(sum((q.grad ** 2).sum() for q in model.selector.parameters() if q.grad is not None))
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            step += 1
            if step % a.every == 0:
                shown = " ".join(f"{k}={stats[k]:.4f}" for k in STEP_KEYS if k in stats)
                print(f"step {step:4d} {shown} selector_grad={float(grad):.1e}", flush=True)
        metrics, records = pipe.evaluate(dev_ex)
        metrics["iou_ge_0.5"] = phrase_iou_share(records, dev_ex)
        shown = " ".join(f"{k}={metrics[k]:.3f}" for k in EPOCH_KEYS)
        print(f"epoch {epoch} dev {shown} ({time.time() - start:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
