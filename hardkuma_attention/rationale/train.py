r"""The one rationale trainer: batching, training loop, evaluation, prediction, checkpoints.

Public pieces (reused by the CLI and by later tools built on these models):

- :class:`LabelMap` — class names <-> ids (``None`` labels for regression);
- :class:`Pipeline` — a model with its objective, vocabulary and labels: :meth:`Pipeline.batches`,
  :meth:`Pipeline.predict` (one record per example: prediction, probabilities, gates, spans),
  :meth:`Pipeline.evaluate` (metrics of :mod:`.metrics`), :meth:`Pipeline.save` /
  :func:`load_pipeline` (checkpoint = plain tensors, lists and dicts; loads with
  ``torch.load(weights_only=True)``);
- :class:`TrainConfig` and :func:`train` — Adam, gradient clipping, periodic dev evaluation with
  best-on-dev checkpointing, a wall-clock budget, tqdm progress bars (when tqdm is installed).

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
from .distributed import LocalContext
from .embeddings import Vocab
from .extras import progress
from .io import atomic_output, write_json, write_jsonl, write_text
from .metrics import accuracy, faithfulness, iou_f1, mean_squared_error, token_prf
from .models import ModelConfig, RationaleModel
from .objectives import ObjectiveConfig, RationaleObjective

__all__ = ["LabelMap", "Batch", "Pipeline", "TrainConfig", "train", "load_pipeline", "ModelFileError",
           "TrainingInterrupted", "LAST_CHECKPOINT", "write_json", "write_jsonl"]

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


class ModelFileError(ValueError):
    """A file given as a model cannot be used as one; the message starts with the path."""


def _torch_load_reason(err: Exception) -> str:
    """A short reason for a failed ``torch.load`` (never torch's advice to disable safe loading)."""
    import pickle

    if isinstance(err, EOFError):
        return "empty or truncated file"
    if isinstance(err, pickle.UnpicklingError):
        return "it holds objects other than tensors and plain containers (another program's pickle?)"
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    if "zip archive" in text or "central directory" in text:
        return "corrupt or truncated file"
    return f"{type(err).__name__}: {text}"[:200]


def load_pipeline(path) -> Pipeline:
    """Load a checkpoint written by :meth:`Pipeline.save` (``torch.load(weights_only=True)``).
    A missing file raises ``FileNotFoundError``; an empty, corrupt or foreign file raises
    :class:`ModelFileError` with one line naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such model file: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # RuntimeError, EOFError, UnpicklingError, ... depending on the damage
        raise ModelFileError(f"{path}: not a readable {CHECKPOINT_FORMAT} model ({_torch_load_reason(err)})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ModelFileError(f"{path}: not a {CHECKPOINT_FORMAT} model (written by `hardkuma-rationale train`?)")
    try:
        mcfg = ModelConfig(**state["model_config"])
        model = RationaleModel(mcfg)
        model.load_state_dict(state["model_state"])
        # older checkpoints (no lasso_measure): the paper's lasso
        ocfg = ObjectiveConfig(**{"lasso_measure": "rate", **state["objective_config"]})
        objective = RationaleObjective(ocfg, mcfg.gate, mcfg.task)
        objective.load_state_dict(state["objective_state"])
        vocab, labels = Vocab.from_dict(state["vocab"]), LabelMap(state["labels"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelFileError(f"{path}: damaged {CHECKPOINT_FORMAT} model ({type(err).__name__}: {first[:160]})") from None
    model.eval(), objective.eval()
    return Pipeline(model, objective, vocab, labels, state.get("max_length"))


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

LAST_CHECKPOINT = "checkpoint_last.pt"
LAST_FORMAT = "hardkuma-rationale-last/1"


class TrainingInterrupted(RuntimeError):
    """SIGTERM arrived during :func:`train`; the state was saved to ``checkpoint_last.pt``."""


@dataclass
class _Progress:
    """Everything of a training run that :func:`train` needs to continue it bit-identically."""

    step: int = 0
    epoch: int = 1
    batch_in_epoch: int = 0  # batches of ``epoch`` already trained on
    epoch_rng: Optional[tuple] = None  # the batch-order RNG's state at the start of ``epoch``
    best_key: Optional[tuple] = None
    best_metrics: Optional[dict] = None
    best_step: int = 0
    minutes: float = 0.0  # training wall clock before this invocation
    history_lines: int = 0
    running: Optional[dict] = None
    finished: bool = False
    out_of_time: bool = False


def _settings(cfg: "TrainConfig", run: Optional[dict]) -> dict:
    """What must not change between a run and its resumption (progress bars may)."""
    return {**{k: v for k, v in asdict(cfg).items() if k != "progress"}, **(run or {})}


def _save_last(path: Path, progress: _Progress, model, objective, optimizer, settings: dict,
               rng_by_rank: Optional[list] = None) -> None:
    """``checkpoint_last.pt``: model, objective (multipliers), optimiser, RNG states, counters,
    best-so-far and the history length (atomic write; loads with ``weights_only=True``).
    ``rng_by_rank``: every rank's torch RNG state (data-parallel runs, :mod:`.distributed`)."""
    state = {"format": LAST_FORMAT, "progress": asdict(progress), "settings": settings,
             "model_state": model.state_dict(), "objective_state": objective.state_dict(),
             "optimizer_state": optimizer.state_dict(), "torch_rng": torch.get_rng_state()}
    if rng_by_rank is not None:
        state["torch_rng_by_rank"] = rng_by_rank
    with atomic_output(path) as tmp:
        torch.save(state, tmp)


def _load_last(path: Path, model, objective, optimizer, now: dict, rank: int = 0) -> _Progress:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt / truncated file
        raise ModelFileError(f"{path}: not a readable training checkpoint ({_torch_load_reason(err)})") from None
    if not isinstance(state, dict) or state.get("format") != LAST_FORMAT:
        raise ModelFileError(f"{path}: not a {LAST_FORMAT} training checkpoint")
    saved = state["settings"]
    if saved != now:
        diff = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(saved) | set(now))
                         if saved.get(k) != now.get(k))
        raise ModelFileError(f"{path}: written with other settings ({diff[:300]}); resume with the same ones")
    model.load_state_dict(state["model_state"])
    objective.load_state_dict(state["objective_state"])
    optimizer.load_state_dict(state["optimizer_state"])
    torch.set_rng_state(state["torch_rng_by_rank"][rank] if "torch_rng_by_rank" in state else state["torch_rng"])
    progress = _Progress(**state["progress"])
    progress.epoch_rng = _as_tuple(progress.epoch_rng)
    progress.best_key = tuple(progress.best_key) if progress.best_key is not None else None
    return progress


def _as_tuple(x):
    """``random.Random.getstate()`` back from its saved form (lists where tuples were)."""
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def _keep_history(path: Path, lines: int) -> None:
    """Drop history lines written after the checkpoint (an evaluation repeated on resume)."""
    kept = path.read_text(encoding="utf-8").splitlines(keepends=True)[:lines] if path.exists() else []
    write_text(path, "".join(kept))


class _SigtermFlag:
    """While active, SIGTERM sets ``requested`` instead of killing the process (the trainer saves
    ``checkpoint_last.pt`` after the current update and stops); the previous handler is restored
    on exit.  Outside the main thread it does nothing."""

    def __init__(self):
        self.requested, self._previous = False, None

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        return False


def _make_optimizer(model, cfg: "TrainConfig"):
    params = [p for p in model.parameters() if p.requires_grad]
    selector_ids = {id(p) for p in model.selector.parameters()} if model.selector is not None else set()
    groups = [{"params": [p for p in params if id(p) not in selector_ids]}]
    if selector_ids:
        groups.append({"params": [p for p in params if id(p) in selector_ids], "lr": cfg.selector_lr or cfg.lr})
    return params, torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def train(pipeline: Pipeline, train_examples: Sequence[Example], dev_examples: Sequence[Example],
          cfg: TrainConfig, out_dir, extra_loss: Optional[ExtraLoss] = None, resume: bool = False,
          run: Optional[dict] = None, ctx=None) -> dict:
    """Train ``pipeline`` in place; best-on-dev checkpoint at ``out_dir/model.pt``, one line per dev
    evaluation in ``out_dir/history.jsonl``.  Returns a summary dict (best dev metrics, timing).

    After every dev evaluation (and on SIGTERM, after the current update) the whole training state
    goes to ``out_dir/checkpoint_last.pt`` (:func:`_save_last`: model, objective, optimiser, torch
    and batch-order RNG states, step, position in the epoch, best-so-far, history length).  With
    ``resume=True`` training continues from it and gives bit-identically the model and history of
    an uninterrupted run (only the wall-clock fields differ); ``run`` (plain values, e.g. the data and
    model arguments) must then equal the saved one, as must ``cfg``.  SIGTERM raises
    :class:`TrainingInterrupted` once the state is saved.

    ``extra_loss(model, batch) -> (term, stats)``: an optional loss term added to the objective's
    loss on every training batch (``batch.indices`` index ``train_examples``), e.g. the
    right-for-the-right-reasons input-gradient penalty of
    :class:`hardkuma_attention.explain.rrr_text.RRRTextPenalty`; its ``stats`` are logged with the
    objective's.

    ``ctx``: a :class:`~.distributed.DistributedContext` trains data-parallel under torchrun (rank 0
    evaluates and writes; see :mod:`.distributed`); None: one process."""
    ctx = ctx or LocalContext()
    out_dir = Path(out_dir)
    if ctx.is_writer:
        out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed + ctx.rank)  # per-rank gate / dropout noise (rank 0: the one-process seed)
    rng = random.Random(cfg.seed)
    model, objective = pipeline.model, pipeline.objective
    params, optimizer = _make_optimizer(model, cfg)
    history_path, last_path = out_dir / "history.jsonl", out_dir / LAST_CHECKPOINT
    if resume:
        prog = _load_last(last_path, model, objective, optimizer, _settings(cfg, run), ctx.rank)
        if ctx.is_writer:
            _keep_history(history_path, prog.history_lines)
    else:
        prog = _Progress()
        if ctx.is_writer:
            history_path.write_text("")
    if not prog.finished:
        with _SigtermFlag() as sigterm:
            _train_loop(pipeline, train_examples, dev_examples, cfg, extra_loss, prog, params, optimizer, rng,
                        history_path, last_path, sigterm, _settings(cfg, run), ctx)
    return {
        "best_dev": prog.best_metrics,
        "best_step": prog.best_step,
        "steps": prog.step,
        "epochs_started": prog.epoch,
        "stopped_by_time_budget": prog.out_of_time,
        "train_minutes": prog.minutes,
    }


def _train_loop(pipeline, train_examples, dev_examples, cfg, extra_loss, prog: _Progress, params, optimizer, rng,
                history_path: Path, last_path: Path, sigterm: _SigtermFlag, settings: dict, ctx) -> None:
    """The epochs of :func:`train` from ``prog`` on; updates ``prog`` in place."""
    model, objective = pipeline.model, pipeline.objective
    trained = ctx.wrap(model)  # DistributedDataParallel under torchrun, else ``model`` itself
    encoded = pipeline.encode(train_examples)
    num_batches = math.ceil(len(train_examples) / cfg.batch_size)
    steps_per_epoch = ctx.steps_per_epoch(num_batches)
    eval_every = cfg.eval_every or steps_per_epoch
    target, two_sided = _selection_target(objective)
    start = time.time() - 60 * prog.minutes
    running: Dict[str, float] = dict(prog.running or {})

    def save_last():
        prog.minutes, prog.running = (time.time() - start) / 60, dict(running)
        rng_by_rank = ctx.rng_states()  # a collective under torchrun: every rank calls it
        if ctx.is_writer:
            _save_last(last_path, prog, model, objective, optimizer, settings, rng_by_rank)

    def run_eval():
        metrics = evaluate_and_record() if ctx.is_writer else None
        metrics, prog.best_key, prog.best_metrics, prog.best_step = ctx.from_writer(
            (metrics, prog.best_key, prog.best_metrics, prog.best_step))
        prog.history_lines += 1
        running.clear()
        model.train(), objective.train()
        save_last()
        return metrics

    def evaluate_and_record():
        metrics, _ = pipeline.evaluate(dev_examples, cfg.eval_batch_size)
        metrics.update({"step": prog.step, "epoch": prog.epoch, "minutes": (time.time() - start) / 60})
        metrics.update({f"train_{k}": v / max(running.get("_n", 1), 1) for k, v in running.items() if k != "_n"})
        key = _checkpoint_key(metrics, pipeline.task_score(metrics), target, cfg.selection_tolerance, two_sided)
        metrics["is_best"] = prog.best_key is None or key > prog.best_key
        if metrics["is_best"]:
            prog.best_key, prog.best_metrics, prog.best_step = key, dict(metrics), prog.step
            pipeline.save(history_path.parent / "model.pt", extra={"dev_metrics": metrics, "train_config": asdict(cfg)})
        with open(history_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(metrics) + "\n")
        return metrics

    while prog.epoch <= cfg.epochs:
        model.train(), objective.train()
        if prog.batch_in_epoch == 0:
            prog.epoch_rng = rng.getstate()
        rng.setstate(prog.epoch_rng)
        batches = pipeline.batches(train_examples, cfg.batch_size, shuffle=True, rng=rng, encoded=encoded)
        batches = ctx.shard(batches, num_batches)  # this rank's batches (all of them in one process)
        for _ in range(prog.batch_in_epoch):  # resumed mid-epoch: the batches already trained on
            next(batches)
        bar = progress(batches, cfg.progress and ctx.is_writer, total=steps_per_epoch - prog.batch_in_epoch, desc=f"epoch {prog.epoch}")
        for batch in bar:
            stats = _update(trained, objective, optimizer, params, batch, cfg, extra_loss)
            prog.step += 1
            prog.batch_in_epoch += 1
            for k, v in stats.items():
                running[k] = running.get(k, 0.0) + v
            running["_n"] = running.get("_n", 0) + 1
            bar.set_postfix(loss=f"{stats['task_loss']:.3f}", sel=f"{stats['selected']:.2f}")
            if cfg.max_minutes and ctx.any_rank((time.time() - start) / 60 > cfg.max_minutes):
                prog.out_of_time = True
                break
            if prog.step % eval_every == 0:
                m = run_eval()
                if ctx.is_writer:  # one log line per evaluation, not one per rank
                    bar.write(
                        f"step {prog.step} dev {('mse %.4f' % m['mse']) if 'mse' in m else ('acc %.4f' % m['accuracy'])} "
                        f"selected {m['selected']:.3f}{' *' if m['is_best'] else ''}"
                    )
            if ctx.any_rank(sigterm.requested):
                bar.close()
                save_last()
                raise TrainingInterrupted(f"SIGTERM: stopped after update {prog.step}; the state is in {last_path}")
        bar.close()
        if prog.out_of_time:
            if running:
                run_eval()
            break
        prog.epoch += 1
        prog.batch_in_epoch = 0
    prog.epoch = min(prog.epoch, cfg.epochs)
    prog.finished = True
    save_last()


def _update(model, objective, optimizer, params, batch, cfg, extra_loss) -> Dict[str, float]:
    """One optimiser step on ``batch``; the objective's (and ``extra_loss``'s) statistics."""
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
    return stats
