r"""Pieces shared by every command of the ``hardkuma-rationale`` command line.

- :func:`ranged`: an argparse ``type`` with a range check (``argument --flag: must be >= 1, got 0``);
- :class:`UsageError`: a bad argument or combination, the message starts with the flag;
- :func:`run_command`: run a command, turn the known errors into one ``error:`` line and exit code 2;
- :func:`add_dataclass_args` / :func:`dataclass_from_args`: flags generated from dataclass fields;
- :func:`read_data`, :func:`check_labels`, :func:`check_known_labels`: data files and their labels,
  checked before any work (errors name ``file:line``).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from typing import Dict, Mapping, Optional, Sequence, Tuple

__all__ = [
    "UsageError", "ranged", "run_command", "add_debug_flag", "add_dataclass_args", "dataclass_from_args",
    "add_data_args", "read_data", "check_labels", "check_known_labels",
]

Bounds = Tuple[Optional[float], Optional[float], bool, bool]  # (low, high, low_open, high_open)


class UsageError(ValueError):
    """A bad combination of arguments; the message starts with the flag."""


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


def run_command(prog: str, command, args) -> int:
    """``command(args)``; a data error (``file:line: ...``), a bad argument (``--flag: ...``), a
    missing or unusable file or a missing extra becomes one line ``<prog>: error: <message>`` on
    stderr and exit code 2, no traceback (``--debug``: the traceback).  torch's thread count and
    flush-denormal state are restored afterwards (:mod:`~hardkuma_attention.rationale.settings`)."""
    from ..rationale.checkpoints import ModelFileError
    from ..rationale.data import DataFormatError
    from ..rationale.distributed import LaunchError
    from ..rationale.extras import MissingExtra
    from ..rationale.settings import restored_torch_settings

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


def _add_field_arg(group, f, help_text: str, bounds: Bounds, choices) -> None:
    """One flag ``--field-name`` for the dataclass field ``f`` (its type from the default)."""
    flag, default = "--" + f.name.replace("_", "-"), f.default
    if isinstance(default, bool):
        group.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
    elif isinstance(default, tuple):
        group.add_argument(flag, type=ranged(float), nargs=len(default), default=default, help=help_text)
    elif default is None:
        group.add_argument(flag, type=ranged(float, *bounds), default=None, help=help_text)
    elif isinstance(default, str):
        group.add_argument(flag, choices=choices, default=default, help=help_text + f" (default {default})")
    else:
        group.add_argument(flag, type=ranged(type(default), *bounds), default=default,
                           help=help_text + f" (default {default})")


def add_dataclass_args(parser: argparse.ArgumentParser, cls, title: str, *, skip=(), helps: Mapping[str, str] = {},
                       ranges: Mapping[str, Bounds] = {}, choices: Mapping[str, Sequence[str]] = {}):
    """A flag for each field of ``cls`` with a plain default (fields with a default factory, no
    default or in ``skip`` are left out), in a group ``title``; returns the group."""
    group = parser.add_argument_group(title)
    for f in dataclasses.fields(cls):
        if f.name in skip or f.default is dataclasses.MISSING:
            continue
        _add_field_arg(group, f, helps.get(f.name, ""), ranges.get(f.name, (None, None, False, False)),
                       choices.get(f.name))
    return group


def dataclass_from_args(cls, args, **derived):
    """``cls`` from the attributes of ``args`` named like its fields, ``derived`` overriding."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in vars(args).items() if k in names}
    values.update({k: v for k, v in derived.items() if k in names})
    return cls(**values)


def add_data_args(p: argparse.ArgumentParser) -> None:
    from ..rationale.data import FORMATS

    p.add_argument("--format", required=True, choices=sorted(FORMATS), help="input format")
    p.add_argument("--docs-dir", default=None, help="ERASER docs folder (default: docs/ beside the jsonl)")
    p.add_argument("--aspect", default="0", help="BeerAdvocate aspect: 0..4 or appearance/aroma/palate")
    p.add_argument("--max-length", type=ranged(int, 1), default=None, help="truncate texts to this many tokens")


def read_data(path, fmt: str, docs_dir=None, aspect="0") -> list:
    """Read a data file (every row checked by the reader); an empty file is an error, and the
    ERASER reader's skipped empty evidence spans are reported on stderr."""
    from ..rationale.data import DataFormatError, read_eraser, read_examples

    if fmt == "eraser":
        examples = read_eraser(path, docs_dir)
    else:
        try:
            examples = read_examples(path, fmt, aspect)
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


def _read(args, path) -> list:
    """:func:`read_data` with ``--format`` / ``--docs-dir`` / ``--aspect`` of ``args``."""
    return read_data(path, args.format, getattr(args, "docs_dir", None), getattr(args, "aspect", "0"))


def _where(path, ex) -> tuple:
    return path, ex.meta.get("line")


def _check_regression(path, examples) -> None:
    from ..rationale.data import DataFormatError

    for ex in examples:
        if isinstance(ex.label, bool) or not isinstance(ex.label, (int, float)) or not math.isfinite(ex.label):
            raise DataFormatError(*_where(path, ex), f"regression label must be a finite number, got {ex.label!r}")


def check_known_labels(labels, path, examples, whose: str = "the model's") -> None:
    """Every label of ``examples`` is one of the classification :class:`~.LabelMap` ``labels``
    (same Python type); else :class:`~hardkuma_attention.rationale.data.DataFormatError` at its line."""
    from ..rationale.data import DataFormatError

    kind = type(labels.names[0])
    for ex in examples:
        if type(ex.label) is not kind or ex.label not in labels.index:
            raise DataFormatError(*_where(path, ex), f"label {ex.label!r} not among {whose} labels {labels.names}")


def check_labels(task: str, train_path, train_ex, others: Sequence[tuple] = ()):
    """The :class:`~hardkuma_attention.rationale.labels.LabelMap` of the training examples after
    checking every split before any training: classification labels of one Python type, at least
    two classes, and every label of ``others`` (``(path, examples)`` pairs: dev, test) seen in
    training; regression labels finite numbers.  Raises
    :class:`~hardkuma_attention.rationale.data.DataFormatError` naming the first offending ``file:line``."""
    from ..rationale.data import DataFormatError
    from ..rationale.labels import LabelMap

    if task == "regression":
        for path, examples in [(train_path, train_ex), *others]:
            _check_regression(path, examples)
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
        check_known_labels(labels, path, examples, "the training")
    return labels


def check_data_labels(labels, path, examples) -> None:
    """Labels of an evaluation file against a loaded model's ``labels`` (regression: finite numbers)."""
    if labels.is_regression:
        _check_regression(path, examples)
    else:
        check_known_labels(labels, path, examples)


def identity(args, exclude) -> Dict[str, object]:
    """The plain values of ``args`` except the names in ``exclude`` (and the command function)."""
    return {k: v for k, v in vars(args).items() if k not in exclude and k != "func"}
