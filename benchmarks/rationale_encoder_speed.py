"""Training speed of the rationale model's encoders on whole ERASER Movies reviews (no prefix cut).

Times ``--updates`` training updates (forward, backward, Adam step) of the HardKuma rationale model
with the recipe's Movies settings (hidden 64, batch 16, max pooling, selection 0.1), once per
encoder, in the same process, and prints CPU seconds per update (process time: with one thread it
measures the work, not the share of a loaded machine; wall seconds alongside), the implied CPU time
of one epoch over the training documents and the ratio to the bi-LSTM.  Embeddings are random 50-d vectors (their values
do not change the cost).  Run it with one thread on an otherwise idle machine, or note ``uptime``::

    OMP_NUM_THREADS=1 nice python benchmarks/rationale_encoder_speed.py --data ../shared/data --updates 40
"""
import argparse
import os
import random
import sys
import time
from pathlib import Path

import torch

from hardkuma_attention.rationale import LabelMap, ModelConfig, ObjectiveConfig, Pipeline, RationaleModel
from hardkuma_attention.rationale import RationaleObjective
from hardkuma_attention.rationale.data import read_eraser
from hardkuma_attention.rationale.embeddings import build_vocab


def time_encoder(encoder, examples, vocab, labels, updates, batch_size, seed=1):
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=len(vocab), embed_dim=50, hidden_size=64, num_outputs=2, dropout=0.3,
                      pooling="max", encoder=encoder)
    objective = RationaleObjective(ObjectiveConfig(selection=0.1), "hardkuma")
    pipe = Pipeline(RationaleModel(cfg), objective, vocab, labels)
    opt = torch.optim.Adam([p for p in pipe.model.parameters() if p.requires_grad], lr=1e-3)
    pipe.model.train(), objective.train()
    batches = pipe.batches(examples, batch_size, shuffle=True, rng=random.Random(seed))
    start, cpu_start, tokens = time.time(), time.process_time(), 0
    for _, batch in zip(range(updates), batches):
        loss, _ = objective(pipe.model(batch.tokens, batch.mask), batch.targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        tokens += int(batch.mask.sum())
    seconds, cpu = time.time() - start, time.process_time() - cpu_start
    return seconds / updates, cpu / updates, tokens / cpu


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
    p.add_argument("--updates", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--encoders", nargs="+", default=["lstm", "cnn"])
    a = p.parse_args(argv)
    train_file = Path(a.data) / "movies" / "train.jsonl"
    if not train_file.is_file():
        print(f"error: {train_file} not found (--data)", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    examples = read_eraser(train_file)
    vocab = build_vocab(ex.tokens for ex in examples)
    labels = LabelMap.from_examples(examples, "classification")
    n_tok = sum(len(ex.tokens) for ex in examples) / len(examples)
    print(f"{len(examples)} reviews, mean {n_tok:.0f} tokens, whole documents; load {os.getloadavg()[0]:.1f}")
    per_epoch = -(-len(examples) // a.batch_size)
    base = None
    for enc in a.encoders:
        wall, cpu, tps = time_encoder(enc, examples, vocab, labels, a.updates, a.batch_size)
        base = base or cpu
        print(f"{enc:5s} {cpu:.3f} CPU s/update ({wall:.3f} wall)  {tps:,.0f} tokens per CPU s  epoch "
              f"({per_epoch} updates) {cpu * per_epoch / 60:.1f} CPU min  speed-up x{base / cpu:.1f} (CPU time)  "
              f"load {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
