r"""Metrics for predictions and rationales (plain Python / torch, no model code).

Task: :func:`accuracy`, :func:`mean_squared_error`.

Rationales against human annotations (ERASER, DeYoung et al. 2020), masks are per-token bools:

- :func:`token_prf`: token precision / recall / F1.  ``average="micro"`` (default) pools the
  token counts of all instances: ``P = TP / #predicted``, ``R = TP / #gold``, ``F1 = 2PR/(P+R)``;
  ``"macro"`` averages the per-instance P, R, F1 (ERASER's ``instance_macro``; an instance with
  no predicted (gold) token has P (R) = 0).
- :func:`iou_f1`: span-level F1 with partial matches.  Spans are maximal runs of selected tokens.
  A predicted span is a true positive when its best IOU (``|p ∩ g| / |p ∪ g|`` over the gold
  spans of the same instance) is ``>= threshold`` (0.5).  ``P = TP_pred / #pred spans``,
  ``R = TP_gold / #gold spans`` (a gold span is matched when some predicted span reaches the
  threshold with it), pooled over instances (micro), ``F1 = 2PR / (P + R)``.

Faithfulness (ERASER), with ``p(ŷ | ·)`` the model's probability of the class it predicts on the
full input ``x`` and ``r`` the selected rationale:

- comprehensiveness ``= p(ŷ | x) - p(ŷ | x \ r)`` (higher: the rationale was needed),
- sufficiency ``= p(ŷ | x) - p(ŷ | r)`` (lower: the rationale alone suffices).

:func:`comprehensiveness` and :func:`sufficiency` take those probabilities;
:func:`faithfulness` computes them from any ``predict_proba(batch_keep_mask) -> (B, C)`` callable.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Sequence

import torch

from ..functional import expected_transitions
from .data import mask_to_spans

__all__ = [
    "prediction_metrics",
    "hard_transition_rates",
    "accuracy",
    "mean_squared_error",
    "token_prf",
    "iou_f1",
    "span_iou",
    "comprehensiveness",
    "sufficiency",
    "faithfulness",
]

Mask = Sequence[bool]


def accuracy(predictions: Sequence, golds: Sequence) -> float:
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions vs {len(golds)} gold labels")
    if not golds:
        return 0.0
    return sum(int(p == g) for p, g in zip(predictions, golds)) / len(golds)


def mean_squared_error(predictions: Sequence[float], golds: Sequence[float]) -> float:
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions vs {len(golds)} gold values")
    if not golds:
        return 0.0
    return sum((float(p) - float(g)) ** 2 for p, g in zip(predictions, golds)) / len(golds)


def _f1(p: float, r: float) -> float:
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def _check_pairs(pred_masks, gold_masks):
    if len(pred_masks) != len(gold_masks):
        raise ValueError(f"{len(pred_masks)} predicted masks vs {len(gold_masks)} gold masks")
    for i, (p, g) in enumerate(zip(pred_masks, gold_masks)):
        if len(p) != len(g):
            raise ValueError(f"instance {i}: predicted mask has {len(p)} tokens, gold has {len(g)}")


def token_prf(pred_masks: Sequence[Mask], gold_masks: Sequence[Mask], average: str = "micro") -> Dict[str, float]:
    """Token-level precision, recall, F1 (see the module docstring)."""
    _check_pairs(pred_masks, gold_masks)
    if average not in ("micro", "macro"):
        raise ValueError(f"average must be 'micro' or 'macro', got {average!r}")
    tp_sum = pred_sum = gold_sum = 0
    ps, rs, fs = [], [], []
    for pred, gold in zip(pred_masks, gold_masks):
        tp = sum(1 for p, g in zip(pred, gold) if p and g)
        n_pred, n_gold = sum(1 for p in pred if p), sum(1 for g in gold if g)
        tp_sum, pred_sum, gold_sum = tp_sum + tp, pred_sum + n_pred, gold_sum + n_gold
        p = tp / n_pred if n_pred else 0.0
        r = tp / n_gold if n_gold else 0.0
        ps.append(p), rs.append(r), fs.append(_f1(p, r))
    if average == "macro":
        n = max(len(ps), 1)
        return {"precision": sum(ps) / n, "recall": sum(rs) / n, "f1": sum(fs) / n}
    p = tp_sum / pred_sum if pred_sum else 0.0
    r = tp_sum / gold_sum if gold_sum else 0.0
    return {"precision": p, "recall": r, "f1": _f1(p, r)}


def span_iou(a, b) -> float:
    """IOU of two ``[start, end)`` spans."""
    inter = max(0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


def iou_f1(pred_masks: Sequence[Mask], gold_masks: Sequence[Mask], threshold: float = 0.5) -> Dict[str, float]:
    """ERASER IOU-F1 (partial span match at ``threshold``), micro over instances."""
    _check_pairs(pred_masks, gold_masks)
    tp_pred = tp_gold = n_pred = n_gold = 0
    for pred, gold in zip(pred_masks, gold_masks):
        pspans, gspans = mask_to_spans(pred), mask_to_spans(gold)
        n_pred, n_gold = n_pred + len(pspans), n_gold + len(gspans)
        tp_pred += sum(1 for p in pspans if any(span_iou(p, g) >= threshold for g in gspans))
        tp_gold += sum(1 for g in gspans if any(span_iou(p, g) >= threshold for p in pspans))
    p = tp_pred / n_pred if n_pred else 0.0
    r = tp_gold / n_gold if n_gold else 0.0
    return {"precision": p, "recall": r, "f1": _f1(p, r)}


def comprehensiveness(p_full: Sequence[float], p_without_rationale: Sequence[float]) -> float:
    """Mean of ``p(ŷ|x) - p(ŷ|x \\ r)``."""
    if len(p_full) != len(p_without_rationale) or not len(p_full):
        raise ValueError("need equally many (and at least one) probabilities")
    return sum(float(a) - float(b) for a, b in zip(p_full, p_without_rationale)) / len(p_full)


def sufficiency(p_full: Sequence[float], p_rationale_only: Sequence[float]) -> float:
    """Mean of ``p(ŷ|x) - p(ŷ|r)``."""
    return comprehensiveness(p_full, p_rationale_only)


def faithfulness(
    predict_proba: Callable[[torch.Tensor], torch.Tensor],
    valid: torch.Tensor,
    rationale: torch.Tensor,
) -> Dict[str, List[float]]:
    """Per-instance ERASER quantities for one batch.

    Args:
        predict_proba: maps a bool keep-mask ``(B, T)`` to class probabilities ``(B, C)``
            (the model sees only the kept tokens).
        valid: ``(B, T)`` bool, real tokens.
        rationale: ``(B, T)`` bool, the selected rationale (subset of ``valid``).

    Returns lists (length ``B``) ``p_full``, ``p_without``, ``p_only`` of the probability of the
    class predicted on the full input, and ``comprehensiveness`` / ``sufficiency`` per instance.
    """
    rationale = rationale & valid
    with torch.no_grad():
        full = predict_proba(valid)
        yhat = full.argmax(-1, keepdim=True)
        p_full = full.gather(-1, yhat).squeeze(-1)
        p_without = predict_proba(valid & ~rationale).gather(-1, yhat).squeeze(-1)
        p_only = predict_proba(rationale).gather(-1, yhat).squeeze(-1)
    return {
        "p_full": p_full.tolist(),
        "p_without": p_without.tolist(),
        "p_only": p_only.tolist(),
        "comprehensiveness": (p_full - p_without).tolist(),
        "sufficiency": (p_full - p_only).tolist(),
    }


def hard_transition_rates(gate_lists: Sequence[Sequence[float]]) -> List[float]:
    """Per text: the number of switches between selected (``g != 0``) and unselected neighbours,
    divided by its length: the core :func:`~hardkuma_attention.functional.expected_transitions`
    of ``P0 = 1[g = 0]`` (in float64, so counts and ratios are exact)."""
    if not gate_lists:
        return []
    width = max(max(len(g) for g in gate_lists), 1)
    closed = torch.zeros(len(gate_lists), width, dtype=torch.float64)
    valid = torch.zeros(len(gate_lists), width, dtype=torch.bool)
    for i, gates in enumerate(gate_lists):
        closed[i, : len(gates)] = torch.tensor([float(g == 0) for g in gates], dtype=torch.float64)
        valid[i, : len(gates)] = True
    switches = expected_transitions(closed, valid, dim=-1, normalize=False).tolist()
    return [s / max(len(g), 1) for s, g in zip(switches, gate_lists)]


def _selection_metrics(records: Sequence[dict]) -> Dict[str, float]:
    n_tok = sum(len(r["gates"]) for r in records)
    return {
        "selected": sum(r["selected"] for r in records) / max(len(records), 1),
        "selected_tokens": sum(sum(1 for g in r["gates"] if g != 0) for r in records) / max(n_tok, 1),
        "transitions": sum(hard_transition_rates([r["gates"] for r in records])) / max(len(records), 1),
        "gates_exact_0_or_1": sum(sum(1 for g in r["gates"] if g in (0.0, 1.0)) for r in records) / max(n_tok, 1),
    }


def _human_rationale_metrics(pairs) -> Dict[str, float]:
    pred_masks = [[g != 0 for g in r["gates"]] for r, _ in pairs]
    gold_masks = [list(ex.rationale[: len(r["gates"])]) for r, ex in pairs]
    metrics = {f"token_{k}": v for k, v in token_prf(pred_masks, gold_masks, "micro").items()}
    metrics["token_f1_macro"] = token_prf(pred_masks, gold_masks, "macro")["f1"]
    metrics["iou_f1"] = iou_f1(pred_masks, gold_masks)["f1"]
    metrics["human_rationale_rate"] = sum(sum(m) for m in gold_masks) / max(sum(len(m) for m in gold_masks), 1)
    return metrics


def prediction_metrics(records: Sequence[dict], examples: Sequence, regression: bool,
                       with_faithfulness: bool = False) -> Dict[str, float]:
    """Metrics of prediction records (:meth:`~.pipeline.Pipeline.predict`) against their examples:
    ``accuracy`` (or ``mse``), ``selected`` (mean per-text rate of non-zero gates),
    ``selected_tokens`` (pooled over tokens), ``transitions`` (:func:`hard_transition_rates`,
    averaged), ``gates_exact_0_or_1``; with human rationales ``token_{precision,recall,f1}``
    (micro), ``token_f1_macro``, ``iou_f1``, ``human_rationale_rate``; with ``with_faithfulness``
    ``comprehensiveness``, ``sufficiency``."""
    golds = [r["label"] for r in records]
    preds = [r["prediction"] for r in records]
    metrics: Dict[str, float] = {"n": len(records)}
    if regression:
        metrics["mse"] = mean_squared_error(preds, golds)
    else:
        metrics["accuracy"] = accuracy(preds, golds)
    metrics.update(_selection_metrics(records))
    with_gold = [(r, ex) for r, ex in zip(records, examples) if ex.rationale is not None]
    if with_gold:
        metrics.update(_human_rationale_metrics(with_gold))
    if with_faithfulness and records and "comprehensiveness" in records[0]:
        metrics["comprehensiveness"] = sum(r["comprehensiveness"] for r in records) / len(records)
        metrics["sufficiency"] = sum(r["sufficiency"] for r in records) / len(records)
    return metrics
