r"""Explaining a text classifier trained by ``hardkuma-rationale train`` (ERASER-style evaluation).

Token scores ``s`` ``(B, T)`` per method, all for the class ``ŷ`` the model predicts on the full
text, all in the same embedding space (the classifier is run on ``E(x)`` directly):

- ``mask``: input-mask optimisation (:func:`~hardkuma_attention.explain.mask.optimise_masks`,
  Gaussian-kernel mask, sigmoid gate), ``s = m``;
- ``mask-hardkuma``: the same with HardKuma gates and the expected-L0 Lagrangian constraint;
- ``input-x-gradient``: ``s_t = Σ_e x_te ∂ log p(ŷ)/∂x_te``;
- ``integrated-gradients``: ``s_t = Σ_e (x_te - x'_te) · mean_{k=1..K} ∂ log p(ŷ)/∂x_te at
  x' + (k - 1/2)/K (x - x')`` (midpoint Riemann sum, ``K = 20``), baseline ``x'`` = padding
  embedding;
- ``occlusion``: ``s_t = mean over the windows W ∋ t of [p(ŷ | x) - p(ŷ | x with W occluded)]``,
  windows of ``w`` consecutive valid tokens (``occlusion_window``, default 1; stride 1),
  occluded = *removed* (the classifier skips them: the faithfulness convention below; default) or
  replaced by the baseline embedding (``occlusion_mode="baseline"``: captum's ``Occlusion``).

Scores are turned into hard rationales by keeping the top ``fraction`` of each text's tokens
(:func:`~hardkuma_attention.rationale.models.top_fraction`; default fraction = the human rationale
rate of the evaluated set, as ERASER does for soft scores), then compared with the human spans:
token P/R/F1 and IOU-F1 (:mod:`hardkuma_attention.rationale.metrics`), and AUPRC of the soft scores
(per text, averaged).  Faithfulness uses the rationale package's convention (removed tokens are
skipped by the classifier): comprehensiveness / sufficiency at the hard rationale, and AOPC: the
mean of both over keep/remove fractions 5 %, 15 %, ..., 95 %.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from functools import partial
from typing import Callable, Dict, List, Optional, Sequence

import torch

from ..rationale.data import mask_to_spans
from ..rationale.extras import progress as progress_bar
from ..rationale.metrics import faithfulness, iou_f1, token_prf
from ..rationale.models import top_fraction
from ..rationale.pipeline import Pipeline
from .mask import MaskConfig, optimise_masks, target_probability
from .models import eval_mode, full_text_logits

__all__ = ["METHODS", "occlusion_scores", "token_scores", "average_precision", "auprc", "aopc", "evaluate_methods"]

METHODS = ("mask", "mask-hardkuma", "input-x-gradient", "integrated-gradients", "occlusion")
OCCLUSION_MODES = ("remove", "baseline")
AOPC_FRACTIONS = tuple(round(0.05 + 0.1 * i, 2) for i in range(10))


def _log_p_target_grad(f, emb, valid, target) -> torch.Tensor:
    x = emb.detach().requires_grad_(True)
    log_p = torch.log_softmax(f(x, valid), -1).gather(-1, target.unsqueeze(-1)).sum()
    (g,) = torch.autograd.grad(log_p, x)
    return g


@torch.no_grad()
def occlusion_scores(f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], emb: torch.Tensor, valid: torch.Tensor,
                     target: torch.Tensor, window: int = 1, mode: str = "remove",
                     baseline: Optional[torch.Tensor] = None, max_rows: int = 256) -> torch.Tensor:
    r"""Occlusion scores ``(B, T)`` for a classifier ``f(emb (B, T, E), valid (B, T)) -> logits``.

    For text ``b`` with ``n_b`` valid tokens (a left-aligned prefix) the windows are
    ``W_s = [s, s + w_b)``, ``s = 0 .. n_b - w_b``, ``w_b = min(window, n_b)``; each costs one
    forward pass with ``W_s`` removed from ``valid`` (``mode="remove"``) or its embeddings
    replaced by ``baseline`` ``(E,)`` (``mode="baseline"``), and
    ``s_bt = mean_{s: t ∈ W_s} [p(y_b | x_b) - p(y_b | x_b \ W_s)]`` (0 on padding).  Windows are
    evaluated ``max(1, max_rows // B)`` starts at a time (one forward of up to ``max_rows`` rows).
    """
    if window < 1:
        raise ValueError(f"occlusion window must be >= 1, got {window}")
    if mode not in OCCLUSION_MODES:
        raise ValueError(f"occlusion mode must be one of {OCCLUSION_MODES}, got {mode!r}")
    if mode == "baseline" and baseline is None:
        raise ValueError("occlusion mode 'baseline' needs a baseline embedding")
    bsz, length, dim = emb.shape
    n = valid.sum(1)
    width = n.clamp(max=window)
    num_starts = n - width + 1  # >= 1 when n >= 1
    pos = torch.arange(length)

    def p_target(e, v):
        return target_probability(f(e, v), target.repeat(e.size(0) // bsz))

    p_full = p_target(emb, valid)
    total = torch.zeros(bsz, length, dtype=emb.dtype)
    count = torch.zeros(bsz, length, dtype=emb.dtype)
    per_eval = max(1, max_rows // bsz)
    for first in range(0, int(num_starts.max()), per_eval):
        s = torch.arange(first, min(first + per_eval, int(num_starts.max())))  # (K,)
        k = s.numel()
        active = s[:, None] < num_starts[None, :]  # (K, B)
        win = (pos >= s[:, None, None]) & (pos < (s[:, None] + width[None, :])[..., None])  # (K, B, T)
        win &= active[..., None] & valid[None]
        if mode == "remove":
            e = emb.expand(k, -1, -1, -1).reshape(k * bsz, length, dim)
            v = (valid[None] & ~win).reshape(k * bsz, length)
        else:
            e = torch.where(win[..., None], baseline.to(emb.dtype), emb[None]).reshape(k * bsz, length, dim)
            v = valid.repeat(k, 1)
        drop = (p_full[None] - p_target(e, v).view(k, bsz)) * active
        total += (drop[..., None] * win).sum(0)
        count += win.sum(0)
    return total / count.clamp_min(1)


def token_scores(method: str, pipeline: Pipeline, tokens: torch.Tensor, valid: torch.Tensor,
                 target: torch.Tensor, mask_config: Optional[MaskConfig] = None, ig_steps: int = 20,
                 occlusion_window: int = 1, occlusion_mode: str = "remove") -> torch.Tensor:
    """Scores ``(B, T)`` (0 on padding) for one batch; see the module docstring.  The model runs in
    eval mode (its mode is restored on return)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    model = pipeline.model
    with eval_mode(model):
        with torch.no_grad():
            emb = model.embed(tokens)
            baseline = model.embed.weight[0]
        scores = _method_scores(method, partial(full_text_logits, model), emb, baseline, valid, target,
                                mask_config, ig_steps, occlusion_window, occlusion_mode)
    return scores.detach() * valid.to(scores.dtype)


def _method_scores(method, f, emb, baseline, valid, target, mask_config, ig_steps, occlusion_window,
                   occlusion_mode) -> torch.Tensor:
    """:func:`token_scores` of ``method`` for the classifier ``f(emb, valid) -> logits``."""
    if method in ("mask", "mask-hardkuma"):
        cfg = mask_config or MaskConfig()
        cfg = replace(cfg, gate_type="hardkuma" if method == "mask-hardkuma" else "sigmoid",
                      init_weight=None, init_logit=None)
        return optimise_masks(f, emb, valid, target=target, baseline=baseline, config=cfg).mask
    if method == "input-x-gradient":
        return (emb * _log_p_target_grad(f, emb, valid, target)).sum(-1)
    if method == "integrated-gradients":
        total = torch.zeros_like(emb)
        for k in range(ig_steps):
            alpha = (k + 0.5) / ig_steps
            total += _log_p_target_grad(f, baseline + alpha * (emb - baseline), valid, target)
        return ((emb - baseline) * total / ig_steps).sum(-1)
    return occlusion_scores(f, emb, valid, target, occlusion_window, occlusion_mode, baseline)


def average_precision(scores: Sequence[float], gold: Sequence[bool]) -> float:
    r"""Average precision of the ranking ``scores`` against the binary ``gold`` (scikit-learn's
    ``average_precision_score``, without the dependency):

        AP = Σ_k (R_k - R_{k-1}) P_k

    over the distinct score thresholds ``t_1 > t_2 > ...``; ``P_k`` / ``R_k`` are the precision /
    recall of the tokens scoring ``>= t_k`` (tied tokens enter together).  ``gold`` needs a
    positive."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    positives = sum(1 for g in gold if g)
    if positives == 0:
        raise ValueError("average precision needs at least one gold token")
    ap, tp, seen, prev_recall = 0.0, 0, 0, 0.0
    for rank, i in enumerate(order):
        tp += bool(gold[i])
        seen += 1
        if rank + 1 < len(order) and scores[order[rank + 1]] == scores[i]:
            continue  # a tie: the threshold takes every tied token at once
        recall = tp / positives
        ap += (recall - prev_recall) * tp / seen
        prev_recall = recall
    return ap


def auprc(scores: Sequence[Sequence[float]], golds: Sequence[Sequence[bool]]) -> float:
    """Mean per-text :func:`average_precision` of ``scores`` against the human mask (texts with a
    human rationale that is neither empty nor the whole text only)."""
    vals = [average_precision(list(s), list(g)) for s, g in zip(scores, golds) if any(g) and not all(g)]
    return sum(vals) / max(len(vals), 1)


def aopc(predict_proba, valid: torch.Tensor, scores: torch.Tensor,
         fractions: Sequence[float] = AOPC_FRACTIONS) -> Dict[str, List[float]]:
    """Per-text AOPC comprehensiveness / sufficiency: means over ``fractions`` of the ERASER
    quantities at the top-``fraction`` tokens."""
    comp = torch.zeros(valid.size(0))
    suff = torch.zeros(valid.size(0))
    for frac in fractions:
        r = faithfulness(predict_proba, valid, top_fraction(scores, valid, frac))
        comp += torch.tensor(r["comprehensiveness"])
        suff += torch.tensor(r["sufficiency"])
    return {"aopc_comprehensiveness": (comp / len(fractions)).tolist(),
            "aopc_sufficiency": (suff / len(fractions)).tolist()}


def method_label(method: str, occlusion_window: int = 1, occlusion_mode: str = "remove") -> str:
    """Row name of a method (occlusion names its window and mode, e.g. ``occlusion-w3-remove``)."""
    return f"occlusion-w{occlusion_window}-{occlusion_mode}" if method == "occlusion" else method


def human_rate(examples, batches) -> float:
    """Pooled fraction of the (kept) tokens inside the human rationales of ``batches``."""
    gold_tok = sum(sum(examples[i].rationale[: int(b.mask[r].sum())]) for b in batches for r, i in enumerate(b.indices))
    return gold_tok / sum(int(b.mask.sum()) for b in batches)


def evaluate_methods(pipeline: Pipeline, examples, methods: Sequence[str], fraction: Optional[float] = None,
                     batch_size: int = 50, mask_config: Optional[MaskConfig] = None, progress: bool = True,
                     occlusion_window: int = 1, occlusion_mode: str = "remove"):
    """``(rows, records)``: one metrics row per method and per-text records (scores, spans);
    rows are named by :func:`method_label`, records keyed by method.  The model runs in eval mode
    (its mode is restored on return); ``fraction`` None: the human rate of ``examples``."""
    examples = [ex for ex in examples if ex.rationale is not None]
    if not examples:
        raise ValueError("no example has a human rationale")
    batches = list(pipeline.batches(examples, batch_size))
    if fraction is None:
        fraction = human_rate(examples, batches)
    rows, records = [], {}
    with eval_mode(pipeline.model):
        for method in methods:
            start = time.time()
            tally = _MethodTally()
            records[method] = [None] * len(examples)
            for b in progress_bar(batches, progress, desc=method):
                _score_batch(pipeline, examples, b, method, fraction, mask_config, occlusion_window, occlusion_mode,
                             tally, records[method])
            rows.append(tally.row(method_label(method, occlusion_window, occlusion_mode), len(examples), fraction,
                                  start))
            print(json.dumps(rows[-1]), flush=True)
    return rows, records


class _MethodTally:
    """What one method's row is computed from: hard / gold / soft rationales per text, faithfulness
    values per text, correct predictions."""

    def __init__(self):
        self.preds: List[List[float]] = []
        self.golds: List[List[bool]] = []
        self.soft: List[List[float]] = []
        self.faith: Dict[str, List[float]] = {k: [] for k in ("comprehensiveness", "sufficiency",
                                                               "aopc_comprehensiveness", "aopc_sufficiency")}
        self.correct = 0

    def row(self, label: str, n: int, fraction: float, start: float) -> dict:
        prf = token_prf(self.preds, self.golds)
        return {"method": label, "n": n, "fraction": fraction, "accuracy": self.correct / n,
                "token_precision": prf["precision"], "token_recall": prf["recall"], "token_f1": prf["f1"],
                "iou_f1": iou_f1(self.preds, self.golds)["f1"], "auprc": auprc(self.soft, self.golds),
                **{k: sum(v) / len(v) for k, v in self.faith.items()}, "seconds": time.time() - start}


def _score_batch(pipeline: Pipeline, examples, b, method: str, fraction: float, mask_config, occlusion_window: int,
                 occlusion_mode: str, tally: _MethodTally, records: list) -> None:
    """Scores, hard rationales and faithfulness of one batch for ``method``, into ``tally`` and
    ``records`` (indexed like ``examples``)."""
    model = pipeline.model
    with torch.no_grad():
        target = full_text_logits(model, model.embed(b.tokens), b.mask).argmax(-1)
    tally.correct += int((target == b.targets).sum())
    scores = token_scores(method, pipeline, b.tokens, b.mask, target, mask_config,
                          occlusion_window=occlusion_window, occlusion_mode=occlusion_mode)
    hard = top_fraction(scores, b.mask, fraction)

    def predict_proba(keep):
        return torch.softmax(model.classify(b.tokens, b.mask, keep.float()), -1)
    fa = faithfulness(predict_proba, b.mask, hard)
    for k, v in {**{k: fa[k] for k in ("comprehensiveness", "sufficiency")}, **aopc(predict_proba, b.mask, scores)}.items():
        tally.faith[k] += v
    for row, i in enumerate(b.indices):
        n = int(b.mask[row].sum())
        gold = list(examples[i].rationale[:n])
        tally.preds.append(hard[row, :n].tolist())
        tally.golds.append(gold)
        tally.soft.append(scores[row, :n].tolist())
        records[i] = {"id": examples[i].id, "label": examples[i].label,
                      "prediction": pipeline.labels.decode(int(target[row])),
                      "tokens": examples[i].tokens[:n], "gold_rationale": gold,
                      "scores": [round(s, 4) for s in scores[row, :n].tolist()],
                      "rationale_spans": [list(s) for s in mask_to_spans(hard[row, :n].tolist())]}


def rationale_model_row(pipeline: Pipeline, examples, batch_size: int = 50) -> dict:
    """The same metrics for a select-then-predict rationale model (its own gates ``z != 0`` as the
    rationale, its own classifier), via :meth:`Pipeline.evaluate`; AUPRC from the gate values;
    no AOPC (a rationale model gives one rationale, not a ranking)."""
    start = time.time()
    examples = [ex for ex in examples if ex.rationale is not None]
    metrics, records = pipeline.evaluate(examples, batch_size, with_faithfulness=True)
    golds = [list(ex.rationale[: len(r["gates"])]) for r, ex in zip(records, examples)]
    nan = float("nan")
    return {"method": "rationale model (own classifier)", "n": len(examples), "fraction": metrics["selected_tokens"],
            "accuracy": metrics["accuracy"], "token_precision": metrics["token_precision"],
            "token_recall": metrics["token_recall"], "token_f1": metrics["token_f1"], "iou_f1": metrics["iou_f1"],
            "auprc": auprc([r["gates"] for r in records], golds),
            "comprehensiveness": metrics["comprehensiveness"], "sufficiency": metrics["sufficiency"],
            "aopc_comprehensiveness": nan, "aopc_sufficiency": nan, "seconds": time.time() - start}


def markdown_table(rows: Sequence[dict]) -> str:
    cols = ["accuracy", "fraction", "token_f1", "iou_f1", "auprc", "comprehensiveness", "sufficiency", "aopc_comprehensiveness",
            "aopc_sufficiency", "seconds"]
    head = "| method | " + " | ".join(c.replace("_", " ") for c in cols) + " |"
    lines = [head, "|" + "---|" * (len(cols) + 1)]
    for r in rows:
        cells = ["–" if math.isnan(r[c]) else f"{r[c]:.0f}" if c == "seconds" else f"{r[c]:.3f}" for c in cols]
        lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
