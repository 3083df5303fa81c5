r"""Plot accuracy (or another task score) against the % of tokens selected, one point per run.

Input: the ``results.json`` files written by ``hardkuma-rationale train`` (keys ``name``,
``model_config.gate`` and a ``test`` or ``dev`` metrics dict with ``selected`` and ``accuracy``).
Full-text runs (``gate == "none"``) are drawn as a horizontal reference line.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .io import atomic_output

__all__ = ["load_results", "run_without", "plot_accuracy_vs_selection"]

# Files train rewrites while it runs; results.json is written after them (last).
_TRAINING_FILES = ("history.jsonl", "checkpoint_last.pt")
_STYLE = {"hardkuma": ("o-", "HardKuma"), "bernoulli": ("s--", "Bernoulli (REINFORCE)")}


def load_results(paths: Sequence) -> List[dict]:
    """The ``results.json`` files of ``paths``, each checked: readable JSON of ``train``'s layout,
    and not older than the ``history.jsonl`` / ``checkpoint_last.pt`` beside it (``train`` writes
    ``results.json`` last, so a newer training file means that a later run, interrupted or still
    going, shares the folder: its numbers are not those of ``results.json``).  A bad file raises
    :class:`~.data.DataFormatError` (``path: message``); a missing one ``FileNotFoundError``."""
    return [_load_one(Path(p)) for p in paths]


def _load_one(path: Path) -> dict:
    from .data import DataFormatError

    if not path.is_file():
        raise FileNotFoundError(f"no such results file: {path}")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataFormatError(path, getattr(err, "lineno", None), f"not a results.json of hardkuma-rationale train "
                              f"({err.__class__.__name__})") from None
    if not isinstance(results, dict) or not isinstance(results.get("model_config"), dict):
        raise DataFormatError(path, None, "not a results.json of hardkuma-rationale train (no model_config)")
    written = path.stat().st_mtime_ns
    for name in _TRAINING_FILES:
        beside = path.with_name(name)
        if beside.is_file() and beside.stat().st_mtime_ns > written:
            raise DataFormatError(path, None, f"older than {beside}: a later run (interrupted or still going) "
                                  "shares the folder, so these results are not its numbers")
    return results


def run_without(results: Sequence[dict], split: str, metric: str) -> Optional[dict]:
    """The first of ``results`` without ``metric`` on ``split`` (None: every run has it)."""
    return next((r for r in results if metric not in (r.get(split) or {})), None)


def plot_accuracy_vs_selection(results: Sequence[dict], out_path, split: str = "test",
                               metric: str = "accuracy", title: str = "") -> None:
    """Write a PNG (atomically) of ``metric`` vs ``100 * selected`` on ``split`` (``KeyError`` when a
    run lacks it: :func:`run_without` checks first)."""
    from matplotlib.figure import Figure  # no pyplot: the process's matplotlib backend stays as it is

    groups: Dict[str, List[tuple]] = {}
    baselines = []
    for r in results:
        m = r.get(split) or {}
        if metric not in m:
            raise KeyError(f"run {r.get('name')!r} has no {split}.{metric}")
        gate = r["model_config"]["gate"]
        if gate == "none":
            baselines.append((r.get("name", "full text"), m[metric]))
        else:
            groups.setdefault(gate, []).append((100 * m["selected"], m[metric], r.get("name", "")))
    fig = Figure(figsize=(5.5, 4))
    ax = fig.subplots()
    for gate, pts in sorted(groups.items()):
        pts.sort()
        style, label = _STYLE.get(gate, ("^-", gate))
        ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], style, label=label)
    for name, value in baselines:
        ax.axhline(100 * value, color="gray", linestyle=":", label=f"full text ({name})")
    ax.set_xlabel("% tokens selected")
    ax.set_ylabel(f"{split} {metric} (%)")
    ax.set_title(title or f"{metric} vs selection")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_output(out_path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
