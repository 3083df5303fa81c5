r"""Markdown tables from ``results.json`` files (``hardkuma-rationale table runs/*/results.json``).

One row per run: name, gate, the selection target (HardKuma ``selection`` or Bernoulli
``sparsity_target``), then the chosen metrics of one split in percent (``selected`` is the mean
per-text fraction of tokens with a non-zero gate under deterministic decoding), plus training
updates and minutes.
"""
from __future__ import annotations

from typing import Sequence

__all__ = ["results_table", "DEFAULT_COLUMNS"]

DEFAULT_COLUMNS = ("accuracy", "selected")
_PERCENT = {"accuracy", "selected", "selected_tokens", "token_precision", "token_recall", "token_f1",
            "token_f1_macro", "iou_f1", "comprehensiveness", "sufficiency", "human_rationale_rate",
            "gates_exact_0_or_1"}


def _target(r: dict) -> str:
    o, gate = r["objective_config"], r["model_config"]["gate"]
    if gate == "hardkuma" and o.get("selection") is not None:
        return f"{o['selection']:g}"
    if gate == "bernoulli" and o.get("sparsity_target"):
        return f"{o['sparsity_target']:g}"
    return "-"


def results_table(results: Sequence[dict], split: str = "test", columns: Sequence[str] = DEFAULT_COLUMNS) -> str:
    """A Markdown table (string) of ``columns`` of ``split`` for each run."""
    head = ["run", "gate", "target"] + [f"{split} {c}" + (" %" if c in _PERCENT else "") for c in columns]
    head += ["updates", "train min"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        m = r.get(split) or {}
        cells = [r.get("name", ""), r["model_config"]["gate"], _target(r)]
        for c in columns:
            v = m.get(c)
            cells.append("-" if v is None else (f"{100 * v:.1f}" if c in _PERCENT else f"{v:.4f}"))
        t = r.get("training", {})
        cells += [str(t.get("steps", "-")), f"{t.get('train_minutes', 0):.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
