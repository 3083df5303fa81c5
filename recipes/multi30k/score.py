r"""Corpus BLEU of detokenised hypotheses against raw references with the sacrebleu API.

    python recipes/multi30k/score.py --hyp HYP.txt --ref REF.txt [--json OUT]

Prints ``BLEU = ...`` and the sacrebleu signature (never ``fairseq-score --sacrebleu``, which is
broken with sacrebleu 2).  Line counts must match.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def read(path: Path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def bleu(hyps, refs):
    from sacrebleu.metrics import BLEU

    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
    metric = BLEU()
    score = metric.corpus_score(hyps, [refs])
    return score, str(metric.get_signature())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hyp", type=Path, required=True)
    parser.add_argument("--ref", type=Path, required=True)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    score, signature = bleu(read(args.hyp), read(args.ref))
    print(f"{score}")
    print(f"signature: {signature}")
    if args.json:
        args.json.write_text(json.dumps({"bleu": score.score, "signature": signature, "text": str(score)}))


if __name__ == "__main__":
    main()
