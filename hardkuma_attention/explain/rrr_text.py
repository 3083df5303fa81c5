r"""Right for the right reasons on text: a full-text classifier trained by the rationale trainer with
the RRR input-gradient penalty on the tokens *outside* the human rationales.

For a training batch, the rows of the annotated subset ``S`` (a seeded ``fraction`` of the
training examples that have a human rationale) get the penalty::

    g_it  = Σ_e ∂/∂x_ite Σ_k log p_k(x_i)            x_i = E(tokens_i), (T, E); g_i: (T,)
    A_it  = valid_it ∧ ¬rationale_it                  the tokens that must NOT matter
    term  = λ1 Σ_{i ∈ S ∩ batch} Σ_t (A_it g_it)^2 + λ2 ||θ||^2

(:func:`~hardkuma_attention.explain.rrr.input_gradients` with ``create_graph=True`` and
:func:`~hardkuma_attention.explain.rrr.rrr_penalty`: double backpropagation through the
classifier's bi-LSTM).  The trainer's objective adds the cross-entropy of the whole batch;
:class:`RRRTextPenalty` is the trainer's ``extra_loss`` hook
(:func:`hardkuma_attention.rationale.train.train`), built by ``hardkuma-rationale train --rrr``.

``λ1`` defaults to ``lambda1_scale`` × :func:`~hardkuma_attention.explain.rrr.auto_lambda1`
(cross-entropy / penalty of the initial model on the first ``calibration_examples`` annotated
examples, dropout off).  The input gradient is taken w.r.t. the looked-up embeddings: with
trainable embeddings the penalty trains the classifier only, not the embedding table.

:func:`gradient_mass_report` measures, per text, the fraction of ``Σ_t |g_t|`` that falls inside
the human rationale (:func:`~hardkuma_attention.explain.rrr.gradient_mass_inside`).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from functools import partial
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from ..rationale.data import Example
from ..rationale.models import RationaleModel
from .models import eval_mode, full_text_logits
from .rrr import auto_lambda1, gradient_mass_inside, input_gradients, rrr_penalty

__all__ = ["RRRTextConfig", "RRRTextPenalty", "annotation_rows", "gradient_mass_report"]


@dataclass
class RRRTextConfig:
    """``fraction``: share of the training examples *with* a human rationale that get the penalty
    (the others: cross-entropy only); ``lambda1``: fixed weight (None: ``lambda1_scale`` × auto);
    ``lambda2``: weight of ``||θ||^2`` over the trainable parameters (0: the optimiser's weight decay
    only); ``seed``: which examples are annotated.  ``per_dimension``: penalise every embedding
    coordinate, ``Σ_t Σ_e (A_t ∂/∂x_te Σ_k log p_k)^2`` (Ross et al.'s formula with the features
    ``d = (t, e)``), instead of the per-token sum over ``e`` first (the default, as in the issue):
    the sum only constrains the gradient's component along ``(1, ..., 1)``, which a classifier can
    satisfy while still using the token (see the README's RRR text section)."""

    fraction: float = 0.5
    lambda1: Optional[float] = None
    lambda1_scale: float = 1.0
    lambda2: float = 0.0
    seed: int = 1
    calibration_examples: int = 32
    per_dimension: bool = False

    def __post_init__(self):
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"--rrr-fraction must be in [0, 1], got {self.fraction}")
        if self.lambda1 is not None and self.lambda1 < 0:
            raise ValueError(f"--rrr-lambda1 must be >= 0, got {self.lambda1}")


def annotation_rows(examples: Sequence[Example], indices: Sequence[int], valid: torch.Tensor) -> torch.Tensor:
    """``A`` ``(B, T)`` bool for batch rows ``indices``: valid tokens outside the human rationale."""
    rationale = torch.zeros_like(valid)
    for row, i in enumerate(indices):
        r = examples[i].rationale or []
        n = min(len(r), valid.size(1))
        if n:
            rationale[row, :n] = torch.tensor(r[:n], dtype=torch.bool)
    return valid & ~rationale


class RRRTextPenalty:
    """The trainer hook ``(model, batch) -> (λ1 · penalty + λ2 · ||θ||^2, stats)`` (module docstring)
    for a :class:`~hardkuma_attention.rationale.train.Pipeline` with a full-text classifier.

    ``train_examples`` must be the list the trainer batches (``batch.indices`` index it).
    ``self.lambda1`` holds the weight in use; ``self.info`` a summary for ``results.json``.
    """

    def __init__(self, pipeline, train_examples: Sequence[Example], config: RRRTextConfig):
        model = pipeline.model
        if model.config.gate != "none" or model.config.task != "classification":
            raise ValueError("--rrr trains a full-text classifier: use --gate none and a classification task "
                             f"(got gate={model.config.gate!r}, task={model.config.task!r})")
        self.examples, self.config = train_examples, config
        candidates = [i for i, ex in enumerate(train_examples) if ex.rationale is not None and any(ex.rationale)]
        if not candidates:
            raise ValueError("--rrr: no training example has a human rationale (e.g. use --format eraser)")
        random.Random(config.seed).shuffle(candidates)
        chosen = sorted(candidates[: round(config.fraction * len(candidates))])
        self.annotated = set(chosen)
        self.lambda1 = config.lambda1
        auto = None
        if self.lambda1 is None and chosen:
            auto = self._auto_lambda1(pipeline, chosen[: config.calibration_examples])
            self.lambda1 = config.lambda1_scale * auto
        self.info = {"annotated_examples": len(chosen), "examples_with_rationale": len(candidates),
                     "fraction": config.fraction, "lambda1": self.lambda1 or 0.0, "auto_lambda1": auto,
                     "lambda1_scale": config.lambda1_scale, "lambda2": config.lambda2}

    def _auto_lambda1(self, pipeline, indices: List[int]) -> float:
        """:func:`auto_lambda1` of the initial model (eval mode) on the examples ``indices``."""
        model = pipeline.model
        batch = next(iter(pipeline.batches([self.examples[i] for i in indices], len(indices))))
        order = [indices[j] for j in batch.indices]
        with eval_mode(model):
            emb = model.embed(batch.tokens).detach()
            ann = self._annotation(annotation_rows(self.examples, order, batch.mask), emb)
            return auto_lambda1(partial(full_text_logits, model, valid=batch.mask), emb, batch.targets, ann,
                                reduce_dims=self._reduce_dims)

    @property
    def _reduce_dims(self) -> Tuple[int, ...]:
        return () if self.config.per_dimension else (-1,)

    def _annotation(self, ann: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """``A`` ``(B, T)``, or broadcast to ``emb``'s ``(B, T, E)`` with ``per_dimension``."""
        return ann.unsqueeze(-1).expand_as(emb) if self.config.per_dimension else ann

    def __call__(self, model: RationaleModel, batch) -> Tuple[torch.Tensor, Dict[str, float]]:
        rows = [r for r, i in enumerate(batch.indices) if i in self.annotated]
        term = torch.zeros((), dtype=torch.get_default_dtype())
        stats = {"rrr_penalty": 0.0, "rrr_rows": float(len(rows))}
        if rows and self.lambda1:
            valid = batch.mask[rows]
            width = max(int(valid.sum(1).max()), 1)
            valid = valid[:, :width]
            tokens = batch.tokens[rows, :width]
            emb = model.embed(tokens)
            outside = annotation_rows(self.examples, [batch.indices[r] for r in rows], valid)
            grads, _ = input_gradients(partial(full_text_logits, model, valid=valid), emb, reduce_dims=self._reduce_dims)
            penalty = rrr_penalty(grads, self._annotation(outside, emb))
            term = self.lambda1 * penalty
            stats["rrr_penalty"] = float(penalty.detach())
            per_token = grads.detach().abs().sum(-1) if self.config.per_dimension else grads.detach()
            stats["rrr_mass_inside"] = float(gradient_mass_inside(per_token, valid & ~outside, valid).mean())
        if self.config.lambda2 > 0:
            l2 = sum(p.pow(2).sum() for p in model.parameters() if p.requires_grad)
            term = term + self.config.lambda2 * l2
            stats["rrr_l2"] = float(l2.detach())
        return term, stats


def gradient_mass_report(pipeline, examples: Sequence[Example], batch_size: int = 50) -> Dict[str, object]:
    """Per text with a human rationale: the fraction of the input-gradient mass inside the human
    rationale, and whether the prediction is right.  Two masses: ``grad_mass_inside`` of
    ``Σ_t |g_t|`` with ``g_t = Σ_e G_te`` (the module docstring's per-token sum), and
    ``abs_grad_mass_inside`` of ``Σ_t Σ_e |G_te|``, where ``G = ∂/∂x Σ_k log p_k``, and the size
    ``abs_grad_total = Σ_t Σ_e |G_te|`` (a penalty on squared gradients can be met by shrinking all
    of them, which leaves the shares unchanged).  Returns ``{"n", "accuracy", "grad_mass_inside",
    "abs_grad_mass_inside", "abs_grad_total" (means over texts),
    "human_rate" (pooled fraction of rationale tokens: what uniform gradients would give on
    average), "per_text": [...]}``.  The model runs in eval mode (its mode is restored on return)."""
    model = pipeline.model
    examples = [ex for ex in examples if ex.rationale is not None]
    per_text: List[Optional[dict]] = [None] * len(examples)
    gold_tokens = total_tokens = 0
    with eval_mode(model):
        for b in pipeline.batches(examples, batch_size):
            with torch.enable_grad():
                grads, logits = input_gradients(partial(full_text_logits, model, valid=b.mask), model.embed(b.tokens),
                                                create_graph=False)
            inside = b.mask & ~annotation_rows(examples, b.indices, b.mask)
            mass = gradient_mass_inside(grads.sum(-1), inside, b.mask)
            abs_mass = gradient_mass_inside(grads.abs().sum(-1), inside, b.mask)
            abs_total = (grads.abs().sum(-1) * b.mask).sum(-1)
            pred = logits.detach().argmax(-1)
            gold_tokens += int(inside.sum())
            total_tokens += int(b.mask.sum())
            for row, i in enumerate(b.indices):
                per_text[i] = {"id": examples[i].id, "grad_mass_inside": float(mass[row]),
                               "abs_grad_mass_inside": float(abs_mass[row]), "abs_grad_total": float(abs_total[row]),
                               "correct": bool(pred[row] == b.targets[row])}
    recs = [r for r in per_text if r is not None]
    return {"n": len(recs), "accuracy": sum(r["correct"] for r in recs) / max(len(recs), 1),
            "grad_mass_inside": sum(r["grad_mass_inside"] for r in recs) / max(len(recs), 1),
            "abs_grad_mass_inside": sum(r["abs_grad_mass_inside"] for r in recs) / max(len(recs), 1),
            "abs_grad_total": sum(r["abs_grad_total"] for r in recs) / max(len(recs), 1),
            "human_rate": gold_tokens / max(total_tokens, 1), "per_text": recs}


# ---------------------------------------------------------------------------------------- CLI
_COLUMNS = (("accuracy", "accuracy"), ("grad_mass_inside", "grad mass in human rationale (Σ_e g)"),
            ("abs_grad_mass_inside", "grad mass in human rationale (Σ_e abs g)"),
            ("abs_grad_total", "Σ_t Σ_e abs g"),
            ("token_f1", "I×G token F1"), ("iou_f1", "I×G IOU-F1"), ("auprc", "I×G AUPRC"),
            ("comprehensiveness", "I×G compr."))


def _group(name: str) -> str:
    """``plain_s1`` -> ``plain`` (runs of one setting over seeds are averaged)."""
    head, sep, tail = name.rpartition("_s")
    return head if sep and tail.isdigit() else name


def rrr_table(rows: Sequence[dict]) -> str:
    """Markdown table, one line per setting (mean ± std over its seeds)."""
    import statistics

    groups: Dict[str, List[dict]] = {}
    for r in rows:
        groups.setdefault(_group(r["name"]), []).append(r)
    head = "| model | seeds | λ1 | updates | " + " | ".join(label for _, label in _COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(_COLUMNS) + 4)]
    for name, rs in groups.items():
        def cell(key):
            vals = [r[key] for r in rs]
            fmt = "{:.3g}" if key == "abs_grad_total" else "{:.3f}"
            if len(vals) == 1:
                return fmt.format(vals[0])
            return fmt.format(statistics.mean(vals)) + " ± " + fmt.format(statistics.stdev(vals))
        lam = sorted({f"{r['lambda1']:.3g}" for r in rs})
        steps = "/".join(str(r["steps"]) for r in rs)
        lines.append(f"| {name} | {','.join(str(r['seed']) for r in rs)} | {', '.join(lam)} | {steps} | "
                     + " | ".join(cell(k) for k, _ in _COLUMNS) + " |")
    return "\n".join(lines)
