r"""Data readers for rationale tasks, all returning a list of :class:`Example` records.

Every reader returns the same record so that one trainer (``rationale/train.py``) and one set of
metrics (``rationale/metrics.py``) serve all data sets:

=============================  =====================================================================
reader                          format
=============================  =====================================================================
:func:`read_sst`                Stanford Sentiment Treebank PTB trees, one tree a line
                                (``trainDevTestTrees_PTB``); 5-class or binary (``binary=True``:
                                labels 0/1 -> 0, 3/4 -> 1, neutral 2 dropped); leaf labels kept as
                                ``token_labels`` for analysis.
:func:`read_eraser`             ERASER jsonl (``annotation_id``, ``classification``, ``evidences``)
                                plus a ``docs/`` folder with one whitespace-tokenised document per
                                file (Movies: one sentence a line); evidence token spans become the
                                human ``rationale`` mask.
:func:`read_beer`               BeerAdvocate of Lei et al. (2016): ``s0 s1 s2 s3 s4<TAB>tokens``,
                                label = the score of one aspect (a float in [0, 1]).
:func:`read_beer_annotations`   BeerAdvocate ``annotations.json``: one JSON object a line with
                                ``"x"`` (tokens), ``"y"`` (scores) and ``"0".."4"`` (per-aspect
                                ``[start, end)`` spans).
:func:`read_jsonl`              generic: ``{"text": str | "tokens": [str], "label": ..., "rationale":
                                [[start, end], ...] (optional), "id": ... (optional)}``.
:func:`read_tsv`                generic: a header row naming ``text`` and ``label`` (and optionally
                                ``rationale`` with spans ``"0:3 5:7"`` and ``id``) then one row a line.
=============================  =====================================================================

Malformed input (including bytes that are not UTF-8) raises :class:`DataFormatError` whose message
starts with ``file:line``; each example's ``meta["line"]`` is its line in the file.  Span offsets must
be integers (:func:`span_bound`); empty ERASER evidence spans (``start_token == end_token``) are
skipped and counted in ``meta["empty_evidence_spans"]``.
:func:`read_examples` dispatches on a format name (the CLI's ``--format``).
Rationale spans are token offsets, ``[start, end)``, as in ERASER.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

__all__ = [
    "Example",
    "DataFormatError",
    "FORMATS",
    "read_examples",
    "read_sst",
    "parse_ptb_tree",
    "read_eraser",
    "read_beer",
    "read_beer_annotations",
    "read_jsonl",
    "read_tsv",
    "spans_to_mask",
    "mask_to_spans",
    "span_bound",
    "text_lines",
]

Label = Union[int, float, str]
PathLike = Union[str, os.PathLike]


class DataFormatError(ValueError):
    """Malformed input; the message starts with ``path:line:`` (``path:`` when the problem is the
    whole file, ``line=None``)."""

    def __init__(self, path: PathLike, line: Optional[int], message: str):
        self.path, self.line = str(path), line
        super().__init__(f"{path}:{line}: {message}" if line is not None else f"{path}: {message}")


@dataclass
class Example:
    """One input text with its label.

    Attributes:
        tokens: the tokens, already split (readers never lower-case; the vocabulary may).
        label: class name / int (classification) or float (regression).
        id: a stable identifier (file:line when the format has none).
        rationale: optional human rationale, one bool per token (True = part of the rationale).
        token_labels: optional per-token labels (SST leaf sentiment), for analysis only.
    """

    tokens: List[str]
    label: Label
    id: str = ""
    rationale: Optional[List[bool]] = None
    token_labels: Optional[List[int]] = None
    meta: Dict[str, object] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.tokens)


def span_bound(value) -> int:
    """A span offset: an int, an integral float (``3.0``) or a string of digits; anything else
    (``1.5``, ``True``, ``None``) raises ``ValueError`` (offsets are never truncated)."""
    if isinstance(value, bool):
        raise ValueError(f"span offsets must be integers, got {value!r}")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"span offsets must be integers, got {value!r}")
        return int(value)
    if isinstance(value, (int, str)):
        return int(value)
    raise ValueError(f"span offsets must be integers, got {value!r}")


def spans_to_mask(spans: Iterable[Sequence[int]], length: int) -> List[bool]:
    """``[[start, end), ...]`` token spans -> a bool mask of ``length`` (spans clipped to it)."""
    mask = [False] * length
    for start, end in spans:
        for i in range(max(0, int(start)), min(length, int(end))):
            mask[i] = True
    return mask


def mask_to_spans(mask: Sequence[Union[bool, float]]) -> List[Tuple[int, int]]:
    """Maximal runs of truthy (non-zero) entries as ``[start, end)`` spans."""
    spans, start = [], None
    for i, keep in enumerate(mask):
        if keep and start is None:
            start = i
        elif not keep and start is not None:
            spans.append((start, i))
            start = None
    if start is not None:
        spans.append((start, len(mask)))
    return spans


def text_lines(path: PathLike, what: str = "data file") -> Iterator[Tuple[int, str]]:
    """Every line of a UTF-8 text file (``.gz``: gzip-compressed) with its 1-based number, without
    the line break.  A missing file raises ``FileNotFoundError`` ("no such <what>"); bytes that are
    not UTF-8 or a broken gzip stream raise :class:`DataFormatError` naming ``path:line``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such {what}: {path}")
    lineno = 0
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            for lineno, raw in enumerate(f, 1):
                try:
                    yield lineno, raw.decode("utf-8").rstrip("\n").rstrip("\r")
                except UnicodeDecodeError as err:
                    raise DataFormatError(path, lineno, f"not UTF-8 text (byte 0x{raw[err.start]:02x} at "
                                                        f"character {err.start + 1})") from None
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise DataFormatError(path, lineno + 1, f"cannot read the gzip stream ({err})") from None


def _read_text(path: PathLike, what: str = "data file") -> str:
    return "\n".join(line for _, line in text_lines(path, what))


def _lines(path: PathLike) -> Iterator[Tuple[int, str]]:
    """Non-blank lines with their 1-based line number."""
    for lineno, line in text_lines(path):
        if line.strip():
            yield lineno, line


# ---------------------------------------------------------------------------------------- SST
def _json_objects(path: PathLike) -> Iterator[Tuple[int, dict]]:
    """``(line number, object)`` for each non-empty line of a jsonl file; a line that is not a JSON
    object raises :class:`DataFormatError` naming ``path:line``."""
    for lineno, line in _lines(path):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataFormatError(path, lineno, f"invalid JSON: {err.msg}") from None
        if not isinstance(record, dict):
            raise DataFormatError(path, lineno, "expected a JSON object")
        yield lineno, record


def parse_ptb_tree(text: str) -> Tuple[int, List[str], List[int]]:
    """Parse one SST PTB tree ``(3 (2 The) (4 (2 film) ...))``.

    Returns ``(root_label, leaf_tokens, leaf_labels)``; raises ``ValueError`` on malformed trees.
    """
    pos, n = 0, len(text)
    tokens: List[str] = []
    labels: List[int] = []

    def skip_ws():
        nonlocal pos
        while pos < n and text[pos].isspace():
            pos += 1

    def parse_node() -> int:
        nonlocal pos
        skip_ws()
        if pos >= n or text[pos] != "(":
            raise ValueError(f"expected '(' at character {pos}")
        pos += 1
        start = pos
        while pos < n and not text[pos].isspace() and text[pos] not in "()":
            pos += 1
        label_text = text[start:pos]
        try:
            label = int(label_text)
        except ValueError:
            raise ValueError(f"node label must be an integer, got {label_text!r} at character {start}") from None
        skip_ws()
        if pos < n and text[pos] == "(":
            while True:
                parse_node()
                skip_ws()
                if pos < n and text[pos] == "(":
                    continue
                break
        else:
            start = pos
            while pos < n and text[pos] != ")" and text[pos] != "(":
                pos += 1
            word = text[start:pos].strip()
            if not word:
                raise ValueError(f"empty leaf at character {start}")
            tokens.append(word)
            labels.append(label)
        skip_ws()
        if pos >= n or text[pos] != ")":
            raise ValueError(f"expected ')' at character {pos}")
        pos += 1
        return label

    root = parse_node()
    skip_ws()
    if pos != n:
        raise ValueError(f"trailing text after the tree at character {pos}")
    return root, tokens, labels


def binary_sst_label(label: int) -> Optional[int]:
    """SST 5-class -> binary: 0, 1 -> 0; 3, 4 -> 1; 2 (neutral) -> None (dropped)."""
    return None if label == 2 else int(label > 2)


def read_sst(path: PathLike, binary: bool = False) -> List[Example]:
    """Read SST PTB trees (one a line).  5-class labels 0..4, or binary with neutral dropped."""
    examples = []
    for lineno, line in _lines(path):
        try:
            root, tokens, leaf_labels = parse_ptb_tree(line.strip())
        except ValueError as err:
            raise DataFormatError(path, lineno, f"malformed SST tree: {err}") from None
        if not 0 <= root <= 4:
            raise DataFormatError(path, lineno, f"SST label must be in 0..4, got {root}")
        label: Optional[int] = root
        if binary:
            label = binary_sst_label(root)
            if label is None:
                continue
        examples.append(Example(tokens, label, id=f"{Path(path).name}:{lineno}", token_labels=leaf_labels,
                                meta={"line": lineno}))
    return examples


# ---------------------------------------------------------------------------------------- ERASER
def read_eraser_document(path: PathLike) -> List[str]:
    """An ERASER document: whitespace-separated tokens (sentence breaks are newlines)."""
    return _read_text(path, "ERASER document").split()


def read_eraser(path: PathLike, docs_dir: Optional[PathLike] = None) -> List[Example]:
    """Read an ERASER split (``train.jsonl`` etc.); documents come from ``docs_dir``
    (default: the ``docs`` folder beside ``path``).  Label = ``classification`` (e.g. POS/NEG);
    ``rationale`` marks the tokens of every evidence span of the document."""
    path = Path(path)
    docs_dir = Path(docs_dir) if docs_dir is not None else path.parent / "docs"
    if not docs_dir.is_dir():
        raise FileNotFoundError(f"ERASER docs folder not found: {docs_dir} (needed by {path})")
    examples = []
    for lineno, record in _json_objects(path):
        empty = 0
        for key in ("annotation_id", "classification"):
            if key not in record:
                raise DataFormatError(path, lineno, f"missing field {key!r}")
        evidences = record.get("evidences") or []
        docids = {ev.get("docid") for group in evidences for ev in group if isinstance(ev, dict)}
        docids.discard(None)
        docid = record.get("docids", [None])[0] if record.get("docids") else None
        docid = docid or (sorted(docids)[0] if docids else record["annotation_id"])
        doc_path = docs_dir / docid
        if not doc_path.is_file():
            raise DataFormatError(path, lineno, f"document {docid!r} not found in {docs_dir}")
        tokens = read_eraser_document(doc_path)
        spans = []
        for group in evidences:
            for ev in group:
                try:
                    if ev.get("docid", docid) != docid:
                        continue
                    start, end = span_bound(ev["start_token"]), span_bound(ev["end_token"])
                except (KeyError, TypeError, ValueError, AttributeError):
                    raise DataFormatError(path, lineno, f"evidence needs integer start_token/end_token: {ev!r}") from None
                if start == end and 0 <= start <= len(tokens):
                    empty += 1  # an empty evidence span (the official Movies test split has some): skipped
                    continue
                if not 0 <= start < end <= len(tokens):
                    raise DataFormatError(
                        path, lineno, f"evidence span [{start}, {end}) outside document {docid} ({len(tokens)} tokens)"
                    )
                spans.append((start, end))
        examples.append(
            Example(tokens, record["classification"], id=str(record["annotation_id"]),
                    rationale=spans_to_mask(spans, len(tokens)), meta={"line": lineno, "empty_evidence_spans": empty})
        )
    return examples


# ---------------------------------------------------------------------------------------- Beer
BEER_ASPECTS = {"appearance": 0, "look": 0, "aroma": 1, "smell": 1, "palate": 2, "taste": 3, "overall": 4}


def _aspect_index(aspect: Union[int, str]) -> int:
    if isinstance(aspect, str) and not aspect.isdigit():
        if aspect.lower() not in BEER_ASPECTS:
            raise ValueError(f"unknown beer aspect {aspect!r}; use 0..4 or one of {sorted(BEER_ASPECTS)}")
        return BEER_ASPECTS[aspect.lower()]
    idx = int(aspect)
    if not 0 <= idx <= 4:
        raise ValueError(f"beer aspect must be in 0..4, got {aspect!r}")
    return idx


def read_beer(path: PathLike, aspect: Union[int, str] = 0) -> List[Example]:
    """BeerAdvocate (Lei et al. 2016) ``reviews.aspect*.{train,heldout}.txt[.gz]``:
    ``s0 s1 s2 s3 s4<TAB>token token ...``; label = score of ``aspect`` (float)."""
    idx = _aspect_index(aspect)
    examples = []
    for lineno, line in _lines(path):
        if "\t" not in line:
            raise DataFormatError(path, lineno, "expected 'scores<TAB>text'")
        scores_text, text = line.split("\t", 1)
        try:
            scores = [float(s) for s in scores_text.split()]
        except ValueError:
            raise DataFormatError(path, lineno, f"scores must be numbers, got {scores_text!r}") from None
        if len(scores) <= idx:
            raise DataFormatError(path, lineno, f"need a score for aspect {idx}, got {len(scores)} scores")
        tokens = text.split()
        if not tokens:
            raise DataFormatError(path, lineno, "empty review text")
        examples.append(Example(tokens, scores[idx], id=f"{Path(path).name}:{lineno}",
                                meta={"scores": scores, "line": lineno}))
    return examples


def read_beer_annotations(path: PathLike, aspect: Union[int, str] = 0) -> List[Example]:
    """BeerAdvocate ``annotations.json`` (one JSON object a line: ``x`` tokens, ``y`` scores and
    ``"0".."4"`` per-aspect lists of ``[start, end)`` spans); rationale = spans of ``aspect``."""
    idx = _aspect_index(aspect)
    examples = []
    for lineno, record in _json_objects(path):
        if "x" not in record or "y" not in record:
            raise DataFormatError(path, lineno, "expected an object with 'x' (tokens) and 'y' (scores)")
        tokens, scores = record["x"], record["y"]
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise DataFormatError(path, lineno, "'x' must be a list of token strings")
        if not isinstance(scores, list) or len(scores) <= idx:
            raise DataFormatError(path, lineno, f"'y' must list at least {idx + 1} scores")
        spans = record.get(str(idx), [])
        try:
            spans = [(span_bound(s), span_bound(e)) for s, e in spans]
        except (TypeError, ValueError):
            raise DataFormatError(path, lineno, f"aspect {idx} spans must be [start, end] pairs") from None
        for s, e in spans:
            if not 0 <= s < e <= len(tokens):
                raise DataFormatError(path, lineno, f"span [{s}, {e}) outside the review ({len(tokens)} tokens)")
        examples.append(
            Example(tokens, float(scores[idx]), id=f"{Path(path).name}:{lineno}",
                    rationale=spans_to_mask(spans, len(tokens)), meta={"scores": scores, "line": lineno})
        )
    return examples


# ---------------------------------------------------------------------------------------- generic
def _parse_spans_field(value, path, lineno) -> List[Tuple[int, int]]:
    if value in (None, ""):
        return []
    try:
        if isinstance(value, str):
            spans = [tuple(span_bound(x) for x in item.split(":")) for item in value.split()]
            if any(len(sp) != 2 for sp in spans):
                raise ValueError("spans are start:end")
            return spans  # type: ignore[return-value]
        return [(span_bound(s), span_bound(e)) for s, e in value]
    except (TypeError, ValueError):
        raise DataFormatError(path, lineno, f"rationale must be [start, end] pairs (or 's:e s:e'), got {value!r}") from None


def _generic_example(record: dict, path, lineno) -> Example:
    if "tokens" in record:
        tokens = record["tokens"]
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise DataFormatError(path, lineno, "'tokens' must be a list of strings")
    elif "text" in record:
        if not isinstance(record["text"], str):
            raise DataFormatError(path, lineno, "'text' must be a string")
        tokens = record["text"].split()
    else:
        raise DataFormatError(path, lineno, "missing field 'text' (or 'tokens')")
    if not tokens:
        raise DataFormatError(path, lineno, "empty text")
    if "label" not in record or record["label"] in (None, ""):
        raise DataFormatError(path, lineno, "missing field 'label'")
    rationale = None
    if record.get("rationale") not in (None, ""):
        spans = _parse_spans_field(record["rationale"], path, lineno)
        for s, e in spans:
            if not 0 <= s < e <= len(tokens):
                raise DataFormatError(path, lineno, f"rationale span [{s}, {e}) outside the text ({len(tokens)} tokens)")
        rationale = spans_to_mask(spans, len(tokens))
    ex_id = str(record.get("id") or f"{Path(path).name}:{lineno}")
    return Example(list(tokens), record["label"], id=ex_id, rationale=rationale, meta={"line": lineno})


def read_jsonl(path: PathLike) -> List[Example]:
    """Generic jsonl: ``{"text" | "tokens", "label", "rationale"?, "id"?}`` one object a line."""
    examples = []
    for lineno, record in _json_objects(path):
        examples.append(_generic_example(record, path, lineno))
    return examples


def read_tsv(path: PathLike) -> List[Example]:
    """Generic tsv with a header row naming ``text`` and ``label`` (optional ``rationale``, ``id``)."""
    rows = list(csv.reader(io.StringIO(_read_text(path)), delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows:
        raise DataFormatError(path, 1, "empty file (expected a header row with 'text' and 'label')")
    header = [h.strip() for h in rows[0]]
    missing = {"text", "label"} - set(header)
    if missing:
        raise DataFormatError(path, 1, f"header must name columns 'text' and 'label' (missing {sorted(missing)})")
    examples = []
    for lineno, row in enumerate(rows[1:], 2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise DataFormatError(path, lineno, f"expected {len(header)} tab-separated columns, got {len(row)}")
        examples.append(_generic_example(dict(zip(header, row)), path, lineno))
    return examples


FORMATS: Dict[str, Callable[..., List[Example]]] = {
    "sst": read_sst,
    "sst2": lambda path: read_sst(path, binary=True),
    "eraser": read_eraser,
    "beer": read_beer,
    "beer-annotations": read_beer_annotations,
    "jsonl": read_jsonl,
    "tsv": read_tsv,
}


def read_examples(path: PathLike, fmt: str, aspect: Union[int, str] = 0) -> List[Example]:
    """Read ``path`` in format ``fmt`` (one of :data:`FORMATS`; ``aspect`` for the beer formats)."""
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {sorted(FORMATS)}, got {fmt!r}")
    if fmt.startswith("beer"):
        return FORMATS[fmt](path, aspect)
    return FORMATS[fmt](path)
