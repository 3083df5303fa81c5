r"""A trained rationale model with everything needed to run it on text: :class:`Pipeline`.

- :meth:`Pipeline.batches`: length-bucketed :class:`Batch` es of token ids;
- :meth:`Pipeline.predict`: one record per example (prediction, probabilities, gates, spans);
- :meth:`Pipeline.evaluate`: the metrics of :func:`~.metrics.prediction_metrics`;
- :meth:`Pipeline.save`: the checkpoint (plain tensors, lists and dicts; loads with
  ``torch.load(weights_only=True)``, see :func:`~.checkpoints.load_pipeline`).
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Dict, Iterator, List, Optional, Sequence

import torch

from .data import Example, mask_to_spans
from .embeddings import Vocab
from .io import atomic_output
from .labels import LabelMap
from .metrics import faithfulness, prediction_metrics
from .models import RationaleModel
from .objectives import RationaleObjective

__all__ = ["Batch", "Pipeline", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "hardkuma-rationale/1"


@dataclass
class Batch:
    tokens: torch.Tensor  # (B, T) long
    mask: torch.Tensor  # (B, T) bool
    targets: torch.Tensor  # (B,) long or float
    indices: List[int]  # positions in the example list


def _bucketed(lengths: Sequence[int], batch_size: int, shuffle: bool, rng) -> List[List[int]]:
    """Index batches: pools of ``50 * batch_size`` examples sorted by length, cut into batches
    (with ``shuffle``: the example order and then the batch order shuffled by ``rng``)."""
    order = list(range(len(lengths)))
    if shuffle:
        rng.shuffle(order)
    pool = 50 * batch_size
    batches = []
    for p in range(0, len(order), pool):
        chunk = sorted(order[p : p + pool], key=lambda i: lengths[i])
        batches.extend(chunk[b : b + batch_size] for b in range(0, len(chunk), batch_size))
    if shuffle:
        rng.shuffle(batches)
    return batches


@dataclass
class Pipeline:
    """Everything needed to run a trained rationale model on new text."""

    model: RationaleModel
    objective: RationaleObjective
    vocab: Vocab
    labels: LabelMap
    max_length: Optional[int] = None

    # ------------------------------------------------------------------ batching
    def encode(self, examples: Sequence[Example]) -> List[List[int]]:
        ids = [self.vocab.encode(ex.tokens) for ex in examples]
        if self.max_length:
            ids = [x[: self.max_length] for x in ids]
        return ids

    def batches(self, examples: Sequence[Example], batch_size: int, shuffle: bool = False,
                rng: Optional[random.Random] = None, encoded=None) -> Iterator[Batch]:
        """Length-bucketed batches (pools of ``50 * batch_size`` sorted by length)."""
        encoded = encoded if encoded is not None else self.encode(examples)
        regression = self.labels.is_regression
        for idx in _bucketed([len(x) for x in encoded], batch_size, shuffle, rng or random):
            length = max(max(len(encoded[i]) for i in idx), 1)
            tokens = torch.zeros(len(idx), length, dtype=torch.long)
            for row, i in enumerate(idx):
                tokens[row, : len(encoded[i])] = torch.tensor(encoded[i], dtype=torch.long)
            targets = [self.labels.encode(examples[i].label, examples[i].id) if examples[i].label is not None else 0
                       for i in idx]
            dtype = torch.float32 if regression else torch.long
            yield Batch(tokens, tokens != 0, torch.tensor(targets, dtype=dtype), list(idx))

    # ------------------------------------------------------------------ inference
    def _proba(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits, -1)

    def _record(self, ex: Example, logits: torch.Tensor, z: torch.Tensor, n: int) -> dict:
        """The prediction record of one example (``logits`` and ``z`` of its row, ``n`` valid tokens)."""
        gates = [round(float(g), 4) for g in z[:n]]
        if self.labels.is_regression:
            pred, probs = float(logits), None
        else:
            p = self._proba(logits)
            pred, probs = self.labels.decode(int(p.argmax())), [round(float(x), 5) for x in p]
        rec = {
            "id": ex.id,
            "label": ex.label,
            "prediction": pred,
            "probs": probs,
            "tokens": list(ex.tokens[:n]),
            "gates": gates,
            "selected": sum(1 for g in gates if g != 0) / max(n, 1),
            "rationale_spans": [list(s) for s in mask_to_spans(gates)],
        }
        if ex.rationale is not None:
            rec["gold_rationale_spans"] = [list(s) for s in mask_to_spans(ex.rationale[:n])]
        return rec

    def _faithfulness(self, batch: Batch, z: torch.Tensor) -> Dict[str, list]:
        """ERASER comprehensiveness / sufficiency per row of ``batch`` at the rationale ``z != 0``."""
        def predict_proba(keep):
            return self._proba(self.model.classify(batch.tokens, batch.mask, keep.float()))

        return faithfulness(predict_proba, batch.mask, (z != 0) & batch.mask)

    @torch.no_grad()
    def predict(self, examples: Sequence[Example], batch_size: int = 64, with_faithfulness: bool = False) -> List[dict]:
        """One record per example, in input order: ``id``, ``label``, ``prediction``, ``probs``,
        ``tokens``, ``gates`` (rounded to 4 digits), ``selected`` (fraction), ``rationale_spans``
        (``[start, end)`` of non-zero gates), ``gold_rationale_spans`` when known, and with
        ``with_faithfulness`` the ERASER ``comprehensiveness`` / ``sufficiency``."""
        self.model.eval()
        records: List[Optional[dict]] = [None] * len(examples)
        for batch in self.batches(examples, batch_size):
            out = self.model(batch.tokens, batch.mask)
            extra = None
            if with_faithfulness and not self.labels.is_regression:
                extra = self._faithfulness(batch, out.z)
            for row, i in enumerate(batch.indices):
                rec = self._record(examples[i], out.logits[row], out.z[row], int(batch.mask[row].sum()))
                if extra is not None:
                    rec["comprehensiveness"] = extra["comprehensiveness"][row]
                    rec["sufficiency"] = extra["sufficiency"][row]
                records[i] = rec
        return records  # type: ignore[return-value]

    def evaluate(self, examples: Sequence[Example], batch_size: int = 64, with_faithfulness: bool = False):
        """``(metrics, records)``: :meth:`predict`'s records and their
        :func:`~.metrics.prediction_metrics`."""
        records = self.predict(examples, batch_size, with_faithfulness)
        return prediction_metrics(records, examples, self.labels.is_regression, with_faithfulness), records

    def task_score(self, metrics: Dict[str, float]) -> float:
        return -metrics["mse"] if self.labels.is_regression else metrics["accuracy"]

    # ------------------------------------------------------------------ checkpoints
    def state(self, extra: Optional[dict] = None) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "model_config": asdict(self.model.config),
            "objective_config": asdict(self.objective.config),
            "vocab": self.vocab.to_dict(),
            "labels": self.labels.names,
            "max_length": self.max_length,
            "model_state": self.model.state_dict(),
            "objective_state": self.objective.state_dict(),
            "extra": extra or {},
        }

    def save(self, path, extra: Optional[dict] = None) -> None:
        """Save atomically to ``path`` (temp file, then rename)."""
        with atomic_output(path) as tmp:
            torch.save(self.state(extra), tmp)
