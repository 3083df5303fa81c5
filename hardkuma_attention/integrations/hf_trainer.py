"""``HardKumaTrainer``: the HF ``Trainer`` with a :class:`LagrangianConstraint` on the expected L0
of the HardKuma attention (import it as
``hardkuma_attention.integrations.transformers.HardKumaTrainer``)."""
from __future__ import annotations

import os
from typing import Dict, Optional

import torch
import transformers

from ..constraints import LagrangianConstraint
from ..stats import collect_attention_stats
from .transformers import constraint_penalty

__all__ = ["HardKumaTrainer", "CONSTRAINT_FILE"]

CONSTRAINT_FILE = "hardkuma_constraint.pt"


class HardKumaTrainer(transformers.Trainer):
    """``transformers.Trainer`` with a :class:`LagrangianConstraint` on the expected L0 of all
    HardKuma attention calls of a training step.

    ``loss = task loss + stopgrad(lambda) * (E[L0] - target)`` (see
    :mod:`hardkuma_attention.constraints`); the multiplier tracks the measured non-zero rate.
    The logs get ``l0``, ``nz`` and ``lambda`` (averaged over the steps since the last log); the
    constraint's state is saved as ``hardkuma_constraint.pt`` in every checkpoint folder and
    restored by ``train(resume_from_checkpoint=...)``.

    Args: ``constraint`` (a :class:`LagrangianConstraint`) or ``l0_target`` (builds one with the
    defaults), then the usual ``Trainer`` arguments.
    """

    def __init__(self, *args, constraint: Optional[LagrangianConstraint] = None,
                 l0_target: Optional[float] = None, **kwargs):
        super().__init__(*args, **kwargs)
        if (constraint is None) == (l0_target is None):
            raise ValueError("HardKumaTrainer needs exactly one of constraint= or l0_target=")
        self.constraint = constraint if constraint is not None else LagrangianConstraint(l0_target)
        self._hk_logs: Dict[str, list] = {}

    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        with collect_attention_stats() as collected:
            loss, outputs = super().compute_loss(model, inputs, return_outputs=True, **kwargs)
        if model.training:
            self.constraint.to(loss.device).train()
            penalty, logs = constraint_penalty(self.constraint, collected.total())
            if penalty is not None:
                loss = loss + penalty.to(loss.dtype)
                for k, v in logs.items():
                    self._hk_logs.setdefault(k, []).append(v)
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: Dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs and self._hk_logs:
            logs.update({k: sum(v) / len(v) for k, v in self._hk_logs.items()})
            self._hk_logs = {}
        super().log(logs, *args, **kwargs)

    def save_model(self, output_dir: Optional[str] = None, _internal_call: bool = False):
        """The model (``Trainer.save_model``) and the constraint state next to it (written to a
        temporary file, then renamed); called for every checkpoint and the final save."""
        super().save_model(output_dir, _internal_call=_internal_call)
        folder = output_dir if output_dir is not None else self.args.output_dir
        if self.args.should_save:
            os.makedirs(folder, exist_ok=True)
            tmp = os.path.join(folder, CONSTRAINT_FILE + ".tmp")
            torch.save(self.constraint.state_dict(), tmp)
            os.replace(tmp, os.path.join(folder, CONSTRAINT_FILE))

    def _load_from_checkpoint(self, resume_from_checkpoint, *args, **kwargs):
        super()._load_from_checkpoint(resume_from_checkpoint, *args, **kwargs)
        path = os.path.join(resume_from_checkpoint, CONSTRAINT_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no HardKuma constraint state in this checkpoint")
        self.constraint.load_state_dict(torch.load(path, map_location="cpu"))
