"""Train a small BERT-style encoder (from a config, no download) on binary SST with
``attn_implementation="sdpa"`` or ``"hardkuma"`` (under the L0 constraint, through
``HardKumaTrainer``); report accuracy and the share of non-zero attention weights.

    python recipes/hf/train.py --data ../shared/data/sst --attn hardkuma --out runs/hf/hardkuma

Tokeniser: lower-cased whitespace tokens of the training set (PTB tokens from the trees), words
seen fewer than ``--min-count`` times -> [UNK]; ``[CLS]`` first, at most ``--max-len`` tokens.
Outputs in ``--out``: ``args.json``, Trainer checkpoints (one per epoch, the last kept; a rerun of
the same command resumes from it), ``metrics.json`` (written last, atomically).  An ``--out``
holding another run (different ``args.json``) or a finished one is refused.

% non-zero: eval mode (HardKuma: the deterministic gates), over the valid (query, key) cells of
every layer and head of the test set; for softmax the weights are recomputed with the eager
implementation and counted the same way (``!= 0``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

DATA_FILES = ("train.txt", "dev.txt", "test.txt")
PAD, UNK, CLS = 0, 1, 2


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="folder with SST train.txt, dev.txt, test.txt (PTB trees)")
    p.add_argument("--attn", required=True, choices=("sdpa", "hardkuma"))
    p.add_argument("--out", required=True, help="output folder of this run")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--epochs", type=float, default=4.0)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--max-len", type=int, default=64)
    p.add_argument("--min-count", type=int, default=2)
    p.add_argument("--target", type=float, default=0.3, help="HardKuma: constraint E[L0] <= target")
    p.add_argument("--constraint-lr", type=float, default=0.1)
    p.add_argument("--normalize", default="none", choices=("none", "sum", "softmax"))
    p.add_argument("--max-train", type=int, default=0, help="use only the first N training sentences (0: all)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def fail(msg):
    print(f"{Path(sys.argv[0]).name}: error: {msg}", file=sys.stderr)
    sys.exit(2)


def check_args(args):
    """All input checks, before any work: exit 2 with the offending flag or file."""
    for name in DATA_FILES:
        if not (Path(args.data) / name).is_file():
            fail(f"--data {args.data}: no {name}")
    for flag in ("layers", "hidden", "heads", "batch", "max_len", "threads"):
        if getattr(args, flag) <= 0:
            fail(f"--{flag.replace('_', '-')} must be > 0")
    if args.hidden % args.heads or (args.hidden // args.heads) % 2:
        fail("--hidden / --heads must be an even head dim (HardKuma splits each head in two)")
    if not 0.0 < args.target < 1.0:
        fail("--target must be in (0, 1)")
    if args.epochs <= 0 or args.lr <= 0 or args.constraint_lr <= 0:
        fail("--epochs, --lr and --constraint-lr must be > 0")
    out = Path(args.out)
    if (out / "metrics.json").exists():
        fail(f"--out {out}: holds a finished run (metrics.json); choose another folder")
    saved = out / "args.json"
    if saved.exists() and json.loads(saved.read_text()) != vars(args):
        fail(f"--out {out}: holds a run with other arguments ({saved}); choose another folder")
    if out.exists() and any(out.iterdir()) and not saved.exists():
        fail(f"--out {out}: not empty and not a run of this script")


def write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- data
def build_vocab(examples, min_count):
    counts = Counter(t.lower() for ex in examples for t in ex.tokens)
    words = sorted(w for w, c in counts.items() if c >= min_count)
    return {w: i + 3 for i, w in enumerate(words)}


def encode(examples, vocab, max_len):
    import torch

    rows = []
    for ex in examples:
        ids = [CLS] + [vocab.get(t.lower(), UNK) for t in ex.tokens][: max_len - 1]
        rows.append({"input_ids": torch.tensor(ids), "labels": torch.tensor(int(ex.label))})
    return rows


def collate(batch):
    """Pad ``input_ids`` with [PAD] to the longest in the batch; ``attention_mask`` 1 = token."""
    import torch

    T = max(len(b["input_ids"]) for b in batch)
    ids = torch.full((len(batch), T), PAD, dtype=torch.long)
    mask = torch.zeros(len(batch), T, dtype=torch.long)
    for i, b in enumerate(batch):
        ids[i, : len(b["input_ids"])] = b["input_ids"]
        mask[i, : len(b["input_ids"])] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.stack([b["labels"] for b in batch])}


# ----------------------------------------------------------------------------- model / eval
def build_model(args, vocab_size):
    import transformers as tf

    cfg = tf.BertConfig(
        vocab_size=vocab_size, hidden_size=args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, intermediate_size=2 * args.hidden,
        max_position_embeddings=args.max_len + 2, num_labels=2, pad_token_id=PAD,
    )
    model = tf.BertForSequenceClassification._from_config(cfg, attn_implementation=args.attn)
    if args.attn == "hardkuma":
        from hardkuma_attention.integrations.transformers import configure

        configure(model, normalize=args.normalize)
    return model


def evaluate(model, rows, batch_size):
    """(accuracy, % non-zero attention weights over valid cells) in eval mode."""
    import torch

    from hardkuma_attention import collect_attention_stats

    model.eval()
    correct, nonzero, cells = 0, 0.0, 0.0
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            batch = collate(rows[i : i + batch_size])
            labels = batch.pop("labels")
            if model.config._attn_implementation == "hardkuma":
                with collect_attention_stats() as st:
                    logits = model(**batch).logits
                total = st.total()
                nonzero += float(total.nonzero)
                cells += float(total.cells)
            else:
                out = model(**batch, output_attentions=True)
                logits = out.logits
                valid = batch["attention_mask"].bool()[:, None, :, None] & batch["attention_mask"].bool()[:, None, None, :]
                for w in out.attentions:
                    v = valid.expand_as(w)
                    nonzero += float((w[v] != 0).sum())
                    cells += float(v.sum())
            correct += int((logits.argmax(-1) == labels).sum())
    return correct / len(rows), 100.0 * nonzero / max(cells, 1.0)


def main(argv=None):
    args = parse_args(argv)
    check_args(args)
    import torch

    torch.set_num_threads(args.threads)
    import hardkuma_attention.integrations.transformers as hk  # registers "hardkuma"
    import transformers as tf
    from hardkuma_attention import LagrangianConstraint
    from hardkuma_attention.rationale.data import read_examples

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "args.json", vars(args))
    splits = {name[:-4]: read_examples(Path(args.data) / name, "sst2") for name in DATA_FILES}
    if args.max_train:
        splits["train"] = splits["train"][: args.max_train]
    vocab = build_vocab(splits["train"], args.min_count)
    rows = {k: encode(v, vocab, args.max_len) for k, v in splits.items()}
    tf.set_seed(args.seed)
    model = build_model(args, len(vocab) + 3)
    targs = tf.TrainingArguments(
        output_dir=str(out), num_train_epochs=args.epochs, per_device_train_batch_size=args.batch,
        learning_rate=args.lr, warmup_steps=100, weight_decay=0.01, logging_steps=50,
        save_strategy="epoch", save_total_limit=1, report_to=[], use_cpu=True, disable_tqdm=True,
        seed=args.seed, dataloader_num_workers=0,
    )
    common = dict(model=model, args=targs, train_dataset=rows["train"], data_collator=collate)
    if args.attn == "hardkuma":
        constraint = LagrangianConstraint(args.target, alpha=0.9, lr=args.constraint_lr, lambda_init=1e-4)
        trainer = hk.HardKumaTrainer(constraint=constraint, **common)
    else:
        trainer = tf.Trainer(**common)
    last = tf.trainer_utils.get_last_checkpoint(str(out))
    if last is not None:
        print(f"[train] resuming from {last}", flush=True)
    t0 = time.time()
    trainer.train(resume_from_checkpoint=last)
    train_s = time.time() - t0
    if args.attn == "sdpa":
        model.set_attn_implementation("eager")  # same weights; eager returns them for counting
    metrics = {"attn": args.attn, "params": sum(p.numel() for p in model.parameters()),
               "vocab": len(vocab) + 3, "train_sentences": len(rows["train"]), "train_seconds": round(train_s, 1)}
    for split in ("dev", "test"):
        acc, nz = evaluate(model, rows[split], 128)
        metrics[f"{split}_accuracy"] = round(100 * acc, 2)
        metrics[f"{split}_nonzero_pct"] = round(nz, 2)
    if args.attn == "hardkuma":
        metrics["lambda"] = trainer.constraint.multiplier
        metrics["train_nz_last_log"] = next((h["nz"] for h in reversed(trainer.state.log_history) if "nz" in h), None)
    write_json(out / "metrics.json", metrics)
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
