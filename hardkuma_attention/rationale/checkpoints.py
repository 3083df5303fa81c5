r"""Checkpoints of the rationale trainer: the best model (``model.pt``, :func:`load_pipeline`) and
the whole training state (``checkpoint_last.pt``, :func:`save_last` / :func:`load_last`).

Both are plain tensors, lists and dicts and load with ``torch.load(weights_only=True)``; an empty,
corrupt or foreign file is a :class:`ModelFileError` with one line naming it.  Configs written
before :class:`~hardkuma_attention.config.ControllerConfig` / :class:`~hardkuma_attention.config.GateConfig`
still load (:meth:`~.objectives.ObjectiveConfig.from_dict`, :meth:`~.models.ModelConfig.from_dict`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch

from .embeddings import Vocab
from .io import atomic_output, write_text
from .labels import LabelMap
from .models import ModelConfig, RationaleModel
from .objectives import ObjectiveConfig, RationaleObjective
from .pipeline import CHECKPOINT_FORMAT, Pipeline

__all__ = ["ModelFileError", "load_pipeline", "TrainingProgress", "save_last", "load_last", "keep_history",
           "LAST_CHECKPOINT", "LAST_FORMAT"]


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
        mcfg = ModelConfig.from_dict(state["model_config"])
        model = RationaleModel(mcfg)
        model.load_state_dict(state["model_state"])
        # older checkpoints (no lasso_measure): the paper's lasso
        ocfg = ObjectiveConfig.from_dict({"lasso_measure": "rate", **state["objective_config"]})
        objective = RationaleObjective(ocfg, mcfg.gate, mcfg.task)
        objective.load_state_dict(state["objective_state"])
        vocab, labels = Vocab.from_dict(state["vocab"]), LabelMap(state["labels"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelFileError(f"{path}: damaged {CHECKPOINT_FORMAT} model ({type(err).__name__}: {first[:160]})") from None
    model.eval(), objective.eval()
    return Pipeline(model, objective, vocab, labels, state.get("max_length"))


LAST_CHECKPOINT = "checkpoint_last.pt"
LAST_FORMAT = "hardkuma-rationale-last/1"


@dataclass
class TrainingProgress:
    """Everything of a training run that :func:`~.train.train` needs to continue it bit-identically."""

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


def save_last(path: Path, progress: TrainingProgress, model, objective, optimizer, settings: dict,
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


def load_last(path: Path, model, objective, optimizer, now: dict, rank: int = 0) -> TrainingProgress:
    """Restore model, objective, optimiser and torch RNG from ``path`` (written by :func:`save_last`
    with the settings ``now``, else :class:`ModelFileError`); the progress to continue from."""
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
    progress = TrainingProgress(**state["progress"])
    progress.epoch_rng = _as_tuple(progress.epoch_rng)
    progress.best_key = tuple(progress.best_key) if progress.best_key is not None else None
    return progress


def _as_tuple(x):
    """``random.Random.getstate()`` back from its saved form (lists where tuples were)."""
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def keep_history(path: Path, lines: int) -> None:
    """Drop history lines written after the checkpoint (an evaluation repeated on resume)."""
    kept = path.read_text(encoding="utf-8").splitlines(keepends=True)[:lines] if path.exists() else []
    write_text(path, "".join(kept))
