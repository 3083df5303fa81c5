r"""Input checks and output folders of the ``explain`` commands (``hardkuma-rationale explain ...``).

Every command validates its inputs before any work (data files with the rationale package's
readers, every label against the model's label set, every model file), then prepares ``--out``:
a non-empty folder is refused unless ``--overwrite`` is given, and ``--overwrite`` first removes
the files that this command writes (and temporary files of an interrupted write), so that no
folder mixes two runs.  Errors are :class:`~hardkuma_attention.rationale.data.DataFormatError`
(``file:line: message``) or :class:`~hardkuma_attention.cli.common.UsageError`
(``--flag: message``): one line, exit code 2 (``--debug`` shows the traceback).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Sequence, Tuple

from .common import UsageError, check_known_labels, read_data

__all__ = ["OUTPUTS", "prepare_out", "read_checked", "load_models"]

# Files each command writes into --out (glob patterns).
OUTPUTS = {"decoy-digits": ("decoy_digits.json",), "mask": ("explain_results.json", "*.html"),
           "rrr-eval": ("rrr_eval.json",)}


def prepare_out(out, overwrite: bool, patterns: Sequence[str]) -> None:
    """Refuse a non-empty ``out`` unless ``overwrite``; with ``overwrite`` delete the files matching
    ``patterns`` (and ``.*.tmp`` files of an interrupted atomic write) and refuse when ``out`` holds
    other files.  Call after the inputs are validated and before the first output is written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out: {out} is a file")
    present = sorted(out.iterdir()) if out.is_dir() else []
    if not present:
        return
    if not overwrite:
        raise UsageError(f"--out: {out} is not empty (an earlier run?): --overwrite replaces it")
    ours = [p for p in present if p.is_file() and any(p.match(g) for g in (*patterns, ".*.tmp"))]
    foreign = [p.name for p in present if p not in ours]
    if foreign:
        raise UsageError(f"--overwrite: {out} also holds files this command does not write "
                         f"({', '.join(foreign[:5])}): choose another --out")
    for path in ours:
        path.unlink()


def read_checked(args, label_maps: Sequence = ()) -> list:
    """The examples of ``args.data`` in ``args.format`` read by the rationale CLI's reader (every
    row checked; an empty file is an error), each label checked against every classification
    :class:`~hardkuma_attention.rationale.labels.LabelMap` of ``label_maps`` (the models')."""
    examples = read_data(args.data, args.format, getattr(args, "docs_dir", None), getattr(args, "aspect", "0"))
    for labels in label_maps:
        if not labels.is_regression:
            check_known_labels(labels, args.data, examples)
    return examples


def load_models(specs: Sequence[str], flag: str) -> List[Tuple[str, str, object]]:
    """``NAME=PATH`` specs -> ``(name, path, pipeline)``, every model loaded (and so checked)
    before any work; a spec without ``=`` is a ``flag`` error."""
    from ..rationale.checkpoints import load_pipeline

    models = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"{flag}: takes NAME=PATH, got {spec!r}")
        models.append((name, path, load_pipeline(path)))
    return models
