r"""Text processing of the Multi30k recipe: Moses tokenisation + a joint SentencePiece model.

    python -m fairseq_plugins.translation.text prepare --raw-dir DIR --out-dir OUT [--vocab-size 8000] [--max-train N] [--max-eval N]
        reads DIR/{train,val,test_2016_flickr}.{de,en}[.gz], writes OUT/spm.model and
        OUT/{train,valid,test}.{de,en} (space-separated pieces) for fairseq-preprocess, and
        OUT/raw/{train,valid,test}.{de,en} (the untouched reference text).
    python -m fairseq_plugins.translation.text detok --spm OUT/spm.model --lang en < pieces > text
        pieces -> SentencePiece decode -> Moses detokenisation, one line per line.

Pipeline per line: ``MosesPunctNormalizer`` -> ``MosesTokenizer(escape=False)`` -> SentencePiece
(unigram, joint de+en, character coverage 1.0).  Detokenisation inverts it; BLEU is computed on
the detokenised output against the raw references (see ``score.py``).
"""
from __future__ import annotations

import argparse
import gzip
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterable, List

from ..common.cli import ranged

SPLITS = {"train": "train", "valid": "val", "test": "test_2016_flickr"}
LANGS = ("de", "en")


def find_raw(raw_dir: Path, stem: str, lang: str) -> Path:
    """``raw_dir/stem.lang`` or ``raw_dir/stem.lang.gz``; a clear error naming both otherwise."""
    for name in (f"{stem}.{lang}", f"{stem}.{lang}.gz"):
        if (raw_dir / name).is_file():
            return raw_dir / name
    raise FileNotFoundError(f"missing {raw_dir / (stem + '.' + lang)}[.gz] (Multi30k raw file)")


class DataError(ValueError):
    """Bad raw data; the message starts with ``file:line`` (or the file)."""


def read_lines(path: Path) -> List[str]:
    """The sentences of a raw file, one a line; an empty sentence, bytes that are not UTF-8 or a
    broken gzip stream raise :class:`DataError` naming ``path:line``."""
    opener = gzip.open if path.suffix == ".gz" else open
    lines = []
    try:
        with opener(path, "rb") as f:
            for i, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8").rstrip("\n").rstrip("\r")
                except UnicodeDecodeError as e:
                    raise DataError(f"{path}:{i}: not UTF-8 text (byte 0x{raw[e.start]:02x})") from None
                if not line.strip():
                    raise DataError(f"{path}:{i}: empty sentence")
                lines.append(line)
    except (OSError, EOFError) as e:
        raise DataError(f"{path}:{len(lines) + 1}: cannot read the gzip stream ({e})") from None
    return lines


def write_lines(path: Path, lines: Iterable[str]) -> None:
    """Write to a temp file in the same folder, then rename (no half-written outputs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")
    os.replace(tmp, path)


def moses_tokenize(lines: List[str], lang: str) -> List[str]:
    from sacremoses import MosesPunctNormalizer, MosesTokenizer

    norm, tok = MosesPunctNormalizer(lang=lang), MosesTokenizer(lang=lang)
    return [tok.tokenize(norm.normalize(line), escape=False, return_str=True) for line in lines]


def read_raw(raw_dir: Path, max_train: int = 0, max_eval: int = 0) -> dict:
    """``{split: {lang: sentences}}`` of every split, read and checked (aligned line counts)."""
    texts = {}
    for split, stem in SPLITS.items():
        pair = [read_lines(find_raw(raw_dir, stem, lang)) for lang in LANGS]
        if len(pair[0]) != len(pair[1]):
            raise DataError(f"{raw_dir}/{stem}: {len(pair[0])} de lines but {len(pair[1])} en lines")
        limit = max_train if split == "train" else max_eval
        if limit > 0:
            pair = [p[:limit] for p in pair]
        texts[split] = dict(zip(LANGS, pair))
    return texts


def prepare(raw_dir: Path, out_dir: Path, vocab_size: int, max_train: int, max_eval: int = 0) -> None:
    texts = read_raw(raw_dir, max_train, max_eval)  # every split checked before anything is written
    import sentencepiece as spm

    for split in SPLITS:
        for lang in LANGS:
            write_lines(out_dir / "raw" / f"{split}.{lang}", texts[split][lang])
    tokenized = {s: {l: moses_tokenize(texts[s][l], l) for l in LANGS} for s in SPLITS}
    spm_input = out_dir / "spm_train.txt"
    write_lines(spm_input, tokenized["train"]["de"] + tokenized["train"]["en"])
    spm.SentencePieceTrainer.train(
        input=str(spm_input), model_prefix=str(out_dir / "spm"), vocab_size=vocab_size,
        model_type="unigram", character_coverage=1.0, hard_vocab_limit=False,
        minloglevel=2, num_threads=1,
    )
    sp = spm.SentencePieceProcessor(model_file=str(out_dir / "spm.model"))
    for split in SPLITS:
        for lang in LANGS:
            pieces = sp.encode(tokenized[split][lang], out_type=str)
            write_lines(out_dir / f"{split}.{lang}", (" ".join(p) for p in pieces))
    spm_input.unlink()


def detokenize(lines: Iterable[str], spm_model: Path, lang: str) -> List[str]:
    import sentencepiece as spm
    from sacremoses import MosesDetokenizer

    sp = spm.SentencePieceProcessor(model_file=str(spm_model))
    detok = MosesDetokenizer(lang=lang)
    return [detok.detokenize(sp.decode_pieces(line.split()).split()) for line in lines]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--raw-dir", type=Path, required=True)
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--vocab-size", type=ranged(int, 1), default=8000)
    p.add_argument("--max-train", type=ranged(int, 0), default=0, help="keep only the first N training pairs (0: all)")
    p.add_argument("--max-eval", type=ranged(int, 0), default=0, help="keep only the first N valid/test pairs (0: all; smoke tests)")
    d = sub.add_parser("detok")
    d.add_argument("--spm", type=Path, required=True)
    d.add_argument("--lang", default="en")
    args = parser.parse_args(argv)
    if args.cmd == "prepare":
        if not args.raw_dir.is_dir():
            parser.error(f"--raw-dir {args.raw_dir} is not a directory")
        try:
            prepare(args.raw_dir, args.out_dir, args.vocab_size, args.max_train, args.max_eval)
        except (DataError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    else:
        for line in detokenize((l.rstrip("\n") for l in sys.stdin), args.spm, args.lang):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
