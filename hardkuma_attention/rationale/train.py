r"""The one rationale trainer: batching, training loop, evaluation, prediction, checkpoints.

Public pieces (reused by the CLI and by later tools built on these models):

- :class:`LabelMap` — class names <-> ids (``None`` labels for regression);
- :class:`Pipeline` — a model with its objective, vocabulary and labels: :meth:`Pipeline.batches`,
  :meth:`Pipeline.predict` (one record per example: prediction, probabilities, gates, spans),
  :meth:`Pipeline.evaluate` (metrics of :mod:`.metrics`), :meth:`Pipeline.save` /
  :func:`load_pipeline` (checkpoint = plain tensors, lists and dicts; loads with
  ``torch.load(weights_only=True)``);
- :class:`TrainConfig` and :func:`train` — Adam, gradient clipping, periodic dev evaluation with
  best-on-dev checkpointing, a wall-clock budget, tqdm progress bars.

Best-on-dev: when the objective has a selection target ``s`` (``--selection`` or the Bernoulli
``--sparsity-target``), only evaluations whose dev selection rate is within ``tolerance`` of
``s`` are eligible — two-sided for the targets that are driven from both sides (the HardKuma
equality constraint, the Bernoulli cost ``|rate - s|``), at most ``s + tolerance`` for the
HardKuma inequality constraint (``--no-equality``, a budget) — and the best *task score*
(accuracy, or ``-MSE``) among them wins (ties: the rate closest to the target); if none is
eligible the one closest to the target is kept.  Without a target the best task score wins.
"""
from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from .data import Example, mask_to_spans
from .embeddings import Vocab
from .io import atomic_output, write_json, write_jsonl
from .metrics import accuracy, faithfulness, iou_f1, mean_squared_error, token_prf
from .models import ModelConfig, RationaleModel
from .objectives import ObjectiveConfig, RationaleObjective

__all__ = ["LabelMap", "Batch", "Pipeline", "TrainConfig", "train", "load_pipeline", "write_json", "write_jsonl"]

CHECKPOINT_FORMAT = "hardkuma-rationale/1"


class LabelMap:
    """Class labels <-> ids; ``LabelMap(None)`` is the regression case (labels are floats)."""

    def __init__(self, names: Optional[Sequence] = None):
        self.names = list(names) if names is not None else None
        self.index = {n: i for i, n in enumerate(self.names)} if self.names is not None else None

    @classmethod
    def from_examples(cls, examples: Sequence[Example], task: str) -> "LabelMap":
        if task == "regression":
            return cls(None)
        return cls(sorted({ex.label for ex in examples}, key=lambda x: (str(type(x)), x)))

    @property
    def is_regression(self) -> bool:
        return self.names is None

    def __len__(self) -> int:
        return 1 if self.names is None else len(self.names)

    def encode(self, label, where: str = "") -> float:
        if self.names is None:
            return float(label)
        if label not in self.index:
            raise ValueError(f"{where}: label {label!r} not seen in training (known: {self.names})")
        return self.index[label]

    def decode(self, value):
        return float(value) if self.names is None else self.names[int(value)]


@dataclass
class Batch:
    tokens: torch.Tensor  # (B, T) long
    mask: torch.Tensor  # (B, T) bool
    targets: torch.Tensor  # (B,) long or float
    indices: List[int]  # positions in the example list


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
        order = list(range(len(examples)))
        if shuffle:
            (rng or random).shuffle(order)
        pool = 50 * batch_size
        batches = []
        for p in range(0, len(order), pool):
            chunk = sorted(order[p : p + pool], key=lambda i: len(encoded[i]))
            batches.extend(chunk[b : b + batch_size] for b in range(0, len(chunk), batch_size))
        if shuffle:
            (rng or random).shuffle(batches)
        regression = self.labels.is_regression
        for idx in batches:
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
            z = out.z
            extra = None
            if with_faithfulness and not self.labels.is_regression:
                def predict_proba(keep):
                    return self._proba(self.model.classify(batch.tokens, batch.mask, keep.float()))
                extra = faithfulness(predict_proba, batch.mask, (z != 0) & batch.mask)
            for row, i in enumerate(batch.indices):
                ex = examples[i]
                n = int(batch.mask[row].sum())
                gates = [round(float(g), 4) for g in z[row, :n]]
                if self.labels.is_regression:
                    pred, probs = float(out.logits[row]), None
                else:
                    p = self._proba(out.logits[row])
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
                if extra is not None:
                    rec["comprehensiveness"] = extra["comprehensiveness"][row]
                    rec["sufficiency"] = extra["sufficiency"][row]
                records[i] = rec
        return records  # type: ignore[return-value]

    def evaluate(self, examples: Sequence[Example], batch_size: int = 64, with_faithfulness: bool = False):
        """``(metrics, records)``.  Metrics: ``accuracy`` (or ``mse``), ``selected`` (mean per-text
        rate of non-zero gates), ``selected_tokens`` (pooled over tokens), ``transitions``; with
        human rationales ``token_{precision,recall,f1}`` (micro), ``token_f1_macro``,
        ``iou_f1``; with ``with_faithfulness`` ``comprehensiveness``, ``sufficiency``."""
        records = self.predict(examples, batch_size, with_faithfulness)
        golds = [r["label"] for r in records]
        preds = [r["prediction"] for r in records]
        metrics: Dict[str, float] = {"n": len(records)}
        if self.labels.is_regression:
            metrics["mse"] = mean_squared_error(preds, golds)
        else:
            metrics["accuracy"] = accuracy(preds, golds)
        metrics["selected"] = sum(r["selected"] for r in records) / max(len(records), 1)
        n_tok = sum(len(r["gates"]) for r in records)
        metrics["selected_tokens"] = sum(sum(1 for g in r["gates"] if g != 0) for r in records) / max(n_tok, 1)
        metrics["transitions"] = sum(
            sum(1 for a, b in zip(r["gates"], r["gates"][1:]) if (a != 0) != (b != 0)) / max(len(r["gates"]), 1)
            for r in records) / max(len(records), 1)
        metrics["gates_exact_0_or_1"] = sum(sum(1 for g in r["gates"] if g in (0.0, 1.0)) for r in records) / max(n_tok, 1)
        with_gold = [(r, ex) for r, ex in zip(records, examples) if ex.rationale is not None]
        if with_gold:
            pred_masks = [[g != 0 for g in r["gates"]] for r, _ in with_gold]
            gold_masks = [list(ex.rationale[: len(r["gates"])]) for r, ex in with_gold]
            micro = token_prf(pred_masks, gold_masks, "micro")
            metrics.update({f"token_{k}": v for k, v in micro.items()})
            metrics["token_f1_macro"] = token_prf(pred_masks, gold_masks, "macro")["f1"]
            metrics["iou_f1"] = iou_f1(pred_masks, gold_masks)["f1"]
            metrics["human_rationale_rate"] = sum(sum(m) for m in gold_masks) / max(sum(len(m) for m in gold_masks), 1)
        if with_faithfulness and records and "comprehensiveness" in records[0]:
            metrics["comprehensiveness"] = sum(r["comprehensiveness"] for r in records) / len(records)
            metrics["sufficiency"] = sum(r["sufficiency"] for r in records) / len(records)
        return metrics, records

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


def load_pipeline(path) -> Pipeline:
    """Load a checkpoint written by :meth:`Pipeline.save`."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint")
    mcfg = ModelConfig(**state["model_config"])
    model = RationaleModel(mcfg)
    model.load_state_dict(state["model_state"])
    objective = RationaleObjective(ObjectiveConfig(**{"lasso_measure": "rate", **state["objective_config"]}), mcfg.gate, mcfg.task)  # older checkpoints: the paper's lasso
    objective.load_state_dict(state["objective_state"])
    model.eval(), objective.eval()
    return Pipeline(model, objective, Vocab.from_dict(state["vocab"]), LabelMap(state["labels"]), state["max_length"])


@dataclass
class TrainConfig:
    """Optimisation settings.  ``eval_every`` in updates (0: once per epoch); ``max_minutes``: stop
    (and evaluate) once this wall-clock budget is spent; ``selection_tolerance``: see module doc.

    ``selector_lr``: Adam step size of the selector (default: ``lr``).  Adam normalises gradient
    scale, so even a tiny multiplier moves every gate at full speed once the task gradient reaching
    the selector is weak; a smaller selector step lets the multiplier settle instead of overshooting.
    """

    epochs: int = 20
    batch_size: int = 25
    lr: float = 1e-3
    selector_lr: Optional[float] = None
    weight_decay: float = 1e-5
    max_grad_norm: float = 5.0
    eval_every: int = 0
    max_minutes: float = 0.0
    selection_tolerance: float = 0.02
    seed: int = 1
    eval_batch_size: int = 64
    progress: bool = True


def _selection_target(objective: RationaleObjective) -> Tuple[Optional[float], bool]:
    """``(target, two_sided)`` of the dev selection rate for checkpoint selection."""
    c = objective.config
    if objective.gate == "hardkuma":
        return c.selection, c.equality
    if objective.gate == "bernoulli" and c.sparsity_target > 0:
        return c.sparsity_target, True
    return None, False


def _checkpoint_key(metrics, score, target, tol, two_sided=False):
    """Eligible (selection within tol of the target; one-sided: at most target + tol) first, then
    task score, then closeness to the target."""
    if target is None:
        return (1, score, 0.0)
    gap = metrics["selected"] - target
    if gap <= tol and (not two_sided or gap >= -tol):
        return (1, score, -abs(gap))
    return (0, -abs(gap), 0.0)


ExtraLoss = Callable[[RationaleModel, "Batch"], Tuple[torch.Tensor, Dict[str, float]]]


def train(pipeline: Pipeline, train_examples: Sequence[Example], dev_examples: Sequence[Example],
          cfg: TrainConfig, out_dir, extra_loss: Optional[ExtraLoss] = None) -> dict:
    """Train ``pipeline`` in place; best-on-dev checkpoint at ``out_dir/model.pt``, one line per dev
    evaluation in ``out_dir/history.jsonl``.  Returns a summary dict (best dev metrics, timing).

    ``extra_loss(model, batch) -> (term, stats)``: an optional loss term added to the objective's
    loss on every training batch (``batch.indices`` index ``train_examples``), e.g. the
    right-for-the-right-reasons input-gradient penalty of
    :class:`hardkuma_attention.explain.rrr_text.RRRTextPenalty`; its ``stats`` are logged with the
    objective's."""
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    model, objective = pipeline.model, pipeline.objective
    params = [p for p in model.parameters() if p.requires_grad]
    selector_ids = {id(p) for p in model.selector.parameters()} if model.selector is not None else set()
    groups = [{"params": [p for p in params if id(p) not in selector_ids]}]
    if selector_ids:
        groups.append({"params": [p for p in params if id(p) in selector_ids], "lr": cfg.selector_lr or cfg.lr})
    optimizer = torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    encoded = pipeline.encode(train_examples)
    steps_per_epoch = math.ceil(len(train_examples) / cfg.batch_size)
    eval_every = cfg.eval_every or steps_per_epoch
    target, two_sided = _selection_target(objective)
    history_path = out_dir / "history.jsonl"
    history_path.write_text("")
    best_key, best_metrics, best_step = None, None, 0
    start = time.time()
    step = 0
    running: Dict[str, float] = {}
    out_of_time = False

    def run_eval(epoch: int):
        nonlocal best_key, best_metrics, best_step
        metrics, _ = pipeline.evaluate(dev_examples, cfg.eval_batch_size)
        metrics.update({"step": step, "epoch": epoch, "minutes": (time.time() - start) / 60})
        metrics.update({f"train_{k}": v / max(running.get("_n", 1), 1) for k, v in running.items() if k != "_n"})
        key = _checkpoint_key(metrics, pipeline.task_score(metrics), target, cfg.selection_tolerance, two_sided)
        metrics["is_best"] = best_key is None or key > best_key
        if metrics["is_best"]:
            best_key, best_metrics, best_step = key, dict(metrics), step
            pipeline.save(out_dir / "model.pt", extra={"dev_metrics": metrics, "train_config": asdict(cfg)})
        with open(history_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(metrics) + "\n")
        running.clear()
        model.train(), objective.train()
        return metrics

    for epoch in range(1, cfg.epochs + 1):
        model.train(), objective.train()
        bar = tqdm(pipeline.batches(train_examples, cfg.batch_size, shuffle=True, rng=rng, encoded=encoded),
                   total=steps_per_epoch, desc=f"epoch {epoch}", disable=not cfg.progress, leave=False)
        for batch in bar:
            out = model(batch.tokens, batch.mask)
            loss, stats = objective(out, batch.targets)
            if extra_loss is not None:
                term, extra_stats = extra_loss(model, batch)
                loss = loss + term
                stats = {**stats, **extra_stats}
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            step += 1
            for k, v in stats.items():
                running[k] = running.get(k, 0.0) + v
            running["_n"] = running.get("_n", 0) + 1
            bar.set_postfix(loss=f"{stats['task_loss']:.3f}", sel=f"{stats['selected']:.2f}")
            if cfg.max_minutes and (time.time() - start) / 60 > cfg.max_minutes:
                out_of_time = True
                break
            if step % eval_every == 0:
                m = run_eval(epoch)
                bar.write(
                    f"step {step} dev {('mse %.4f' % m['mse']) if 'mse' in m else ('acc %.4f' % m['accuracy'])} "
                    f"selected {m['selected']:.3f}{' *' if m['is_best'] else ''}"
                )
        bar.close()
        if out_of_time:
            if running:
                run_eval(epoch)
            break
    return {
        "best_dev": best_metrics,
        "best_step": best_step,
        "steps": step,
        "epochs_started": epoch,
        "stopped_by_time_budget": out_of_time,
        "train_minutes": (time.time() - start) / 60,
    }
