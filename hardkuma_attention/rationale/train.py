r"""The one rationale trainer: :func:`train` (Adam, gradient clipping, periodic dev evaluation with
best-on-dev checkpointing, a wall-clock budget, resumable, tqdm progress bars when installed).

The pieces it uses live in modules with one job each (and are re-exported here):
:class:`~.labels.LabelMap` (class names <-> ids), :class:`~.pipeline.Pipeline` (batching,
prediction, evaluation, saving), :mod:`.checkpoints` (``model.pt`` / :func:`~.checkpoints.load_pipeline`,
``checkpoint_last.pt``), :mod:`.metrics`.

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
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch

from .checkpoints import (LAST_CHECKPOINT, ModelFileError, TrainingProgress, keep_history, load_last, load_pipeline,
                          save_last)
from .data import Example
from .distributed import LocalContext
from .extras import progress
from .io import write_json, write_jsonl
from .labels import LabelMap
from .models import RationaleModel
from .objectives import RationaleObjective
from .pipeline import Batch, Pipeline

__all__ = ["LabelMap", "Batch", "Pipeline", "TrainConfig", "train", "load_pipeline", "ModelFileError",
           "TrainingInterrupted", "LAST_CHECKPOINT", "write_json", "write_jsonl", "MAX_GRAD_NORM"]

# Gradient clipping (global L2 norm) of every update; dev evaluations use batches of EVAL_BATCH_SIZE.
MAX_GRAD_NORM = 5.0
EVAL_BATCH_SIZE = 64


@dataclass
class TrainConfig:
    """Optimisation settings.  ``eval_every`` in updates (0: once per epoch); ``max_minutes``: stop
    (and evaluate) once this wall-clock budget is spent; ``selection_tolerance``: see the module
    docstring (no command-line flag; the tests' span task uses 0.03).  Gradients are clipped to a
    global norm of :data:`MAX_GRAD_NORM`.

    ``selector_lr``: Adam step size of the selector (default: ``lr``).  Adam normalises gradient
    scale, so even a tiny multiplier moves every gate at full speed once the task gradient reaching
    the selector is weak; a smaller selector step lets the multiplier settle instead of overshooting
    (README "ERASER Movies", CNN pilot: ``--selector-lr 1e-4`` kept the gates open, but the decoded
    selection then never left 1.0).
    """

    epochs: int = 20
    batch_size: int = 25
    lr: float = 1e-3
    selector_lr: Optional[float] = None
    weight_decay: float = 1e-5
    eval_every: int = 0
    max_minutes: float = 0.0
    selection_tolerance: float = 0.02
    seed: int = 1
    progress: bool = True


def _selection_target(objective: RationaleObjective) -> Tuple[Optional[float], bool]:
    """``(target, two_sided)`` of the dev selection rate for checkpoint selection."""
    c = objective.config
    if objective.gate == "hardkuma":
        return c.selection, c.controller.equality
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


ExtraLoss = Callable[[RationaleModel, Batch], Tuple[torch.Tensor, Dict[str, float]]]


class TrainingInterrupted(RuntimeError):
    """SIGTERM arrived during :func:`train`; the state was saved to ``checkpoint_last.pt``."""


def _settings(cfg: TrainConfig, run: Optional[dict]) -> dict:
    """What must not change between a run and its resumption (progress bars may)."""
    return {**{k: v for k, v in asdict(cfg).items() if k != "progress"}, **(run or {})}


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


def _make_optimizer(model, cfg: TrainConfig):
    """Adam over the trainable parameters; the selector's in their own group (``selector_lr``)."""
    params = [p for p in model.parameters() if p.requires_grad]
    selector_ids = {id(p) for p in model.selector.parameters()} if model.selector is not None else set()
    groups = [{"params": [p for p in params if id(p) not in selector_ids]}]
    if selector_ids:
        groups.append({"params": [p for p in params if id(p) in selector_ids], "lr": cfg.selector_lr or cfg.lr})
    return params, torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


class _BestCheckpoint:
    """Best-on-dev selection (see the module docstring): :meth:`consider` ranks a dev evaluation
    and, when it is the best so far, saves ``model.pt``; the best so far lives in ``prog``."""

    def __init__(self, pipeline: Pipeline, cfg: TrainConfig, path: Path):
        self.pipeline, self.cfg, self.path = pipeline, cfg, path
        self.target, self.two_sided = _selection_target(pipeline.objective)

    def consider(self, metrics: dict, prog: TrainingProgress) -> None:
        """Set ``metrics["is_best"]``; when true, record the evaluation in ``prog`` and save the model."""
        key = _checkpoint_key(metrics, self.pipeline.task_score(metrics), self.target, self.cfg.selection_tolerance,
                              self.two_sided)
        metrics["is_best"] = prog.best_key is None or key > prog.best_key
        if metrics["is_best"]:
            prog.best_key, prog.best_metrics, prog.best_step = key, dict(metrics), prog.step
            self.pipeline.save(self.path, extra={"dev_metrics": metrics, "train_config": asdict(self.cfg)})


class _TrainingRun:
    """The state of one :func:`train` call (explicit, instead of closures): the progress ``prog``
    (saved in ``checkpoint_last.pt``), the running means of the step statistics, the clock, the
    best-checkpoint rule and the output paths."""

    def __init__(self, pipeline: Pipeline, cfg: TrainConfig, prog: TrainingProgress, optimizer, params, out_dir: Path,
                 settings: dict, ctx, extra_loss: Optional[ExtraLoss]):
        self.pipeline, self.cfg, self.prog, self.ctx = pipeline, cfg, prog, ctx
        self.optimizer, self.params, self.settings, self.extra_loss = optimizer, params, settings, extra_loss
        self.history_path, self.last_path = out_dir / "history.jsonl", out_dir / LAST_CHECKPOINT
        self.best = _BestCheckpoint(pipeline, cfg, out_dir / "model.pt")
        self.start = time.time() - 60 * prog.minutes
        self.running: Dict[str, float] = dict(prog.running or {})

    def minutes(self) -> float:
        return (time.time() - self.start) / 60

    def save_last(self) -> None:
        """``checkpoint_last.pt`` (every rank takes part: the RNG states are gathered)."""
        self.prog.minutes, self.prog.running = self.minutes(), dict(self.running)
        rng_by_rank = self.ctx.rng_states()  # a collective under torchrun: every rank calls it
        if self.ctx.is_writer:
            save_last(self.last_path, self.prog, self.pipeline.model, self.pipeline.objective, self.optimizer,
                      self.settings, rng_by_rank)

    def _evaluate_and_record(self) -> dict:
        """Dev metrics (with the running training statistics), best-checkpoint rule, history line."""
        prog = self.prog
        metrics, _ = self.pipeline.evaluate(self.dev_examples, EVAL_BATCH_SIZE)
        metrics.update({"step": prog.step, "epoch": prog.epoch, "minutes": self.minutes()})
        n = max(self.running.get("_n", 1), 1)
        metrics.update({f"train_{k}": v / n for k, v in self.running.items() if k != "_n"})
        self.best.consider(metrics, prog)
        with open(self.history_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(metrics) + "\n")
        return metrics

    def run_eval(self) -> Optional[dict]:
        """A dev evaluation on the writer (its best-so-far shared with every rank), then the checkpoint."""
        prog = self.prog
        metrics = self._evaluate_and_record() if self.ctx.is_writer else None
        metrics, prog.best_key, prog.best_metrics, prog.best_step = self.ctx.from_writer(
            (metrics, prog.best_key, prog.best_metrics, prog.best_step))
        prog.history_lines += 1
        self.running.clear()
        self.pipeline.model.train(), self.pipeline.objective.train()
        self.save_last()
        return metrics

    def _count(self, stats: Dict[str, float]) -> None:
        self.prog.step += 1
        self.prog.batch_in_epoch += 1
        for k, v in stats.items():
            self.running[k] = self.running.get(k, 0.0) + v
        self.running["_n"] = self.running.get("_n", 0) + 1

    def _epoch_batches(self, rng: random.Random, encoded, num_batches: int):
        """This rank's batches of the current epoch, from where ``prog`` stopped."""
        prog = self.prog
        if prog.batch_in_epoch == 0:
            prog.epoch_rng = rng.getstate()
        rng.setstate(prog.epoch_rng)
        batches = self.pipeline.batches(self.train_examples, self.cfg.batch_size, shuffle=True, rng=rng,
                                        encoded=encoded)
        batches = self.ctx.shard(batches, num_batches)  # this rank's batches (all of them in one process)
        for _ in range(prog.batch_in_epoch):  # resumed mid-epoch: the batches already trained on
            next(batches)
        return batches

    def _log_eval(self, bar, m: dict) -> None:
        if self.ctx.is_writer:  # one log line per evaluation, not one per rank
            score = ("mse %.4f" % m["mse"]) if "mse" in m else ("acc %.4f" % m["accuracy"])
            bar.write(f"step {self.prog.step} dev {score} selected {m['selected']:.3f}{' *' if m['is_best'] else ''}")

    def epoch(self, trained, bar, eval_every: int, sigterm) -> None:
        """Train on the batches of ``bar``; evaluates every ``eval_every`` updates; stops early on
        the time budget (``prog.out_of_time``) and on SIGTERM (:class:`TrainingInterrupted`)."""
        cfg, prog, ctx = self.cfg, self.prog, self.ctx
        for batch in bar:
            stats = _update(trained, self.pipeline.objective, self.optimizer, self.params, batch, self.extra_loss)
            self._count(stats)
            bar.set_postfix(loss=f"{stats['task_loss']:.3f}", sel=f"{stats['selected']:.2f}")
            if cfg.max_minutes and ctx.any_rank(self.minutes() > cfg.max_minutes):
                prog.out_of_time = True
                break
            if prog.step % eval_every == 0:
                self._log_eval(bar, self.run_eval())
            if ctx.any_rank(sigterm.requested):
                bar.close()
                self.save_last()
                raise TrainingInterrupted(f"SIGTERM: stopped after update {prog.step}; the state is in {self.last_path}")
        bar.close()

    def run(self, train_examples, dev_examples, rng: random.Random, sigterm) -> None:
        """The epochs of :func:`train` from ``prog`` on; updates ``prog`` in place."""
        cfg, prog, ctx = self.cfg, self.prog, self.ctx
        self.train_examples, self.dev_examples = train_examples, dev_examples
        model, objective = self.pipeline.model, self.pipeline.objective
        trained = ctx.wrap(model)  # DistributedDataParallel under torchrun, else ``model`` itself
        encoded = self.pipeline.encode(train_examples)
        num_batches = math.ceil(len(train_examples) / cfg.batch_size)
        steps_per_epoch = ctx.steps_per_epoch(num_batches)
        while prog.epoch <= cfg.epochs:
            model.train(), objective.train()
            batches = self._epoch_batches(rng, encoded, num_batches)
            bar = progress(batches, cfg.progress and ctx.is_writer, total=steps_per_epoch - prog.batch_in_epoch,
                           desc=f"epoch {prog.epoch}")
            self.epoch(trained, bar, cfg.eval_every or steps_per_epoch, sigterm)
            if prog.out_of_time:
                if self.running:
                    self.run_eval()
                break
            prog.epoch += 1
            prog.batch_in_epoch = 0
        prog.epoch = min(prog.epoch, cfg.epochs)
        prog.finished = True
        self.save_last()


def train(pipeline: Pipeline, train_examples: Sequence[Example], dev_examples: Sequence[Example],
          cfg: TrainConfig, out_dir, extra_loss: Optional[ExtraLoss] = None, resume: bool = False,
          run: Optional[dict] = None, ctx=None) -> dict:
    """Train ``pipeline`` in place; best-on-dev checkpoint at ``out_dir/model.pt``, one line per dev
    evaluation in ``out_dir/history.jsonl``.  Returns a summary dict (best dev metrics, timing).

    After every dev evaluation (and on SIGTERM, after the current update) the whole training state
    goes to ``out_dir/checkpoint_last.pt`` (:func:`~.checkpoints.save_last`: model, objective,
    optimiser, torch and batch-order RNG states, step, position in the epoch, best-so-far, history
    length).  With ``resume=True`` training continues from it and gives bit-identically the model
    and history of an uninterrupted run (only the wall-clock fields differ); ``run`` (plain values,
    e.g. the data and model arguments) must then equal the saved one, as must ``cfg``.  SIGTERM
    raises :class:`TrainingInterrupted` once the state is saved.

    ``extra_loss(model, batch) -> (term, stats)``: an optional loss term added to the objective's
    loss on every training batch (``batch.indices`` index ``train_examples``), e.g. the
    right-for-the-right-reasons input-gradient penalty
    (:class:`hardkuma_attention.explain.rrr_text.RRRTextPenalty`, built by the command line:
    this module does not import it); its ``stats`` are logged with the objective's.

    ``ctx``: a :class:`~.distributed.DistributedContext` trains data-parallel under torchrun (rank 0
    evaluates and writes; see :mod:`.distributed`); None: one process."""
    ctx = ctx or LocalContext()
    out_dir = Path(out_dir)
    if ctx.is_writer:
        out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed + ctx.rank)  # per-rank gate / dropout noise (rank 0: the one-process seed)
    rng = random.Random(cfg.seed)
    params, optimizer = _make_optimizer(pipeline.model, cfg)
    settings = _settings(cfg, run)
    prog = _start(pipeline, optimizer, out_dir, settings, ctx, resume)
    if not prog.finished:
        state = _TrainingRun(pipeline, cfg, prog, optimizer, params, out_dir, settings, ctx, extra_loss)
        with _SigtermFlag() as sigterm:
            state.run(train_examples, dev_examples, rng, sigterm)
    return {
        "best_dev": prog.best_metrics,
        "best_step": prog.best_step,
        "steps": prog.step,
        "epochs_started": prog.epoch,
        "stopped_by_time_budget": prog.out_of_time,
        "train_minutes": prog.minutes,
    }


def _start(pipeline: Pipeline, optimizer, out_dir: Path, settings: dict, ctx, resume: bool) -> TrainingProgress:
    """The progress to start from: ``checkpoint_last.pt`` (``resume``; the history cut to it) or
    a fresh one (the history emptied)."""
    history_path = out_dir / "history.jsonl"
    if resume:
        prog = load_last(out_dir / LAST_CHECKPOINT, pipeline.model, pipeline.objective, optimizer, settings, ctx.rank)
        if ctx.is_writer:
            keep_history(history_path, prog.history_lines)
        return prog
    if ctx.is_writer:
        history_path.write_text("")
    return TrainingProgress()


def _update(model, objective, optimizer, params, batch, extra_loss) -> Dict[str, float]:
    """One optimiser step on ``batch``; the objective's (and ``extra_loss``'s) statistics."""
    out = model(batch.tokens, batch.mask, open_gates=objective.gates_held_open())
    loss, stats = objective(out, batch.targets)
    if extra_loss is not None:
        term, extra_stats = extra_loss(model, batch)
        loss = loss + term
        stats = {**stats, **extra_stats}
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
    optimizer.step()
    return stats
