"""Turn official SNLI / MultiNLI ``*.jsonl`` files into the plain-text layout of the ``nli`` task.

For every split it writes ``OUT/{split}.input0`` (premise), ``OUT/{split}.input1`` (hypothesis)
and ``OUT/{split}.label``, one example a line, tokenised (lower-cased, punctuation and the clitics
``n't`` / ``'s`` split off, as in the GloVe vocabulary).  Rows with ``gold_label == "-"`` (no
annotator majority) are dropped; any other label outside entailment/neutral/contradiction, a
malformed line or a missing field is an error naming ``file:line``.

Usage::

    python -m fairseq_plugins.nli.prepare_data --out DIR \\
        --split train=snli_1.0_train.jsonl[,multinli_1.0_train.jsonl] --split valid=snli_1.0_dev.jsonl \\
        [--max-examples train=6520] [--seed 1]

``--max-examples split=N`` keeps the first N kept rows of that split after a seeded shuffle (0: all).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Tuple

LABELS = ("entailment", "neutral", "contradiction")
_TOKEN = re.compile(r"n't|'\w+|\w+(?=n't)|\w+|[^\w\s]")


class DataError(ValueError):
    """Bad input data; the message names the file and line."""


def tokenize(text: str) -> List[str]:
    """Lower-case and split into words, punctuation and clitics: ``"Isn't it?"`` -> ``is n't it ?``."""
    return _TOKEN.findall(text.lower())


def read_nli_jsonl(path: str | os.PathLike) -> Iterator[Tuple[List[str], List[str], str]]:
    """Yield ``(premise tokens, hypothesis tokens, label)`` of an official NLI jsonl file.

    Raises :class:`DataError` (``file:line: reason``) on malformed JSON, a missing field or an
    unknown label; rows whose gold label is ``-`` are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{where}: not UTF-8 text (byte 0x{raw[e.start]:02x} at character {e.start + 1})") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: malformed JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
            for key in ("sentence1", "sentence2", "gold_label"):
                if not isinstance(row.get(key), str):
                    raise DataError(f"{where}: missing or non-string field {key!r}")
            label = row["gold_label"]
            if label == "-":
                continue
            if label not in LABELS:
                raise DataError(f"{where}: unknown gold_label {label!r} (expected one of {LABELS} or '-')")
            yield tokenize(row["sentence1"]), tokenize(row["sentence2"]), label


def _write_atomic(path: Path, lines: Sequence[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")
    os.replace(tmp, path)


def read_split(files: Sequence[str], split: str, max_examples: int = 0, seed: int = 1) -> List[Tuple]:
    """Read and check ``files`` (concatenated), optionally subsample; the rows of the split."""
    rows = [r for f in files for r in read_nli_jsonl(f)]
    if max_examples and max_examples < len(rows):
        rng = random.Random(seed)
        order = list(range(len(rows)))
        rng.shuffle(order)
        rows = [rows[i] for i in sorted(order[:max_examples])]
    if not rows:
        raise DataError(f"{', '.join(map(str, files))}: no labelled examples for split {split!r}")
    return rows


def prepare_split(files: Sequence[str], out: Path, split: str, max_examples: int = 0, seed: int = 1) -> Dict[str, int]:
    """Read ``files`` (concatenated), optionally subsample, write the split; return label counts."""
    return write_split(read_split(files, split, max_examples, seed), out, split)


def write_split(rows: Sequence[Tuple], out: Path, split: str) -> Dict[str, int]:
    """Write ``OUT/{split}.{input0,input1,label}`` (each atomically); return label counts."""
    out.mkdir(parents=True, exist_ok=True)
    # An empty sentence would be an empty line, which fairseq-preprocess keeps as a 0-token row.
    _write_atomic(out / f"{split}.input0", [" ".join(p) for p, _, _ in rows])
    _write_atomic(out / f"{split}.input1", [" ".join(h) for _, h, _ in rows])
    _write_atomic(out / f"{split}.label", [lab for _, _, lab in rows])
    counts = {lab: 0 for lab in LABELS}
    for _, _, lab in rows:
        counts[lab] += 1
    return counts


def _pairs(values: Sequence[str], name: str) -> Dict[str, str]:
    out = {}
    for v in values or ():
        if "=" not in v:
            raise DataError(f"{name}: expects split=value, got {v!r}")
        k, val = v.split("=", 1)
        out[k] = val
    return out


def _limits(values: Sequence[str]) -> Dict[str, int]:
    out = {}
    for k, v in _pairs(values, "--max-examples").items():
        if not v.isdigit():
            raise DataError(f"--max-examples: {k}={v}: expected a count >= 0")
        out[k] = int(v)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--split", action="append", required=True,
                   help="split=file1.jsonl[,file2.jsonl] (repeatable)")
    p.add_argument("--max-examples", action="append", default=[],
                   help="split=N: keep N examples of that split (seeded shuffle; 0 = all)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    try:
        splits = _pairs(args.split, "--split")
        limits = _limits(args.max_examples)
        # every split is read and checked before any file is written
        rows = {split: read_split(files.split(","), split, limits.get(split, 0), args.seed) for split, files in splits.items()}
        for split in splits:
            counts = write_split(rows[split], Path(args.out), split)
            total = sum(counts.values())
            print(f"[prepare] {split}: {total} pairs {counts} -> {args.out}/{split}.{{input0,input1,label}}")
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
