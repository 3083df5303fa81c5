r"""Training objectives of the rationale models (one per gate type).

HardKuma (Bastings et al. 2019, Sec. 4), with ``m`` the valid tokens of sequence ``i``::

    task      = CE(logits, y)                     (regression: MSE(sigmoid output, y))
    L0        = mean_i  mean_{t in m_i} (1 - P(z_it = 0))         core ``functional.expected_l0``
    trans     = mean_i  sum_t P(z_t=0)(1-P(z_{t+1}=0)) + ... / |m_i|   core ``expected_transitions``
    loss      = task + lambda_sel (L0 - selection) + lambda_lasso (trans - lasso)
                (task only during the first ``constraint_warmup`` updates; with
                ``selection_anneal`` the target falls linearly from 1 to ``selection``)

with both multipliers from the core :class:`~hardkuma_attention.LagrangianConstraint`, only for
the constraints that are set (``selection`` / ``lasso`` None means "off").  The selection
constraint is an equality by default (``equality``); the transition constraint is always the
inequality ``trans <= lasso``.

Bernoulli gates, REINFORCE (Lei et al. 2016), per example ``i``::

    cost_i    = task_i + sparsity_weight * |rate_i - sparsity_target| + coherence_weight * trans_i
    loss      = mean_i task_i + mean_i (cost_i - baseline) * log p(z_i | x_i)   (cost detached)

``rate_i`` = fraction of selected tokens, ``trans_i`` = number of 0/1 switches / length.  With
``sparsity_target = 0`` (default) the sparsity term is Lei et al.'s ``lambda_1 |z|`` (normalised
by length); a positive target penalises the distance to a selection rate instead, which makes
"comparable rates" easy to reach.  ``baseline`` is a moving average of the mean cost (variance
reduction; a buffer, saved in the checkpoint).

Full text (``gate="none"``): the task loss only.

Each objective returns ``(loss, stats)`` where ``stats`` holds floats for logging (task loss,
expected/measured selection rate, multipliers).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..constraints import LagrangianConstraint
from ..functional import expected_l0, expected_transitions, masked_mean
from .models import RationaleOutput

__all__ = ["ObjectiveConfig", "RationaleObjective", "task_loss", "selection_rate", "transition_rate"]


@dataclass
class ObjectiveConfig:
    """Loss settings.  ``selection``/``lasso``: HardKuma targets (None = no constraint).

    Lagrangian defaults (what converged on SST for targets 0.1, 0.3 and 0.5): ``equality=True``
    (the core's additive update, lambda may turn negative) with ``lagrange_lr = 0.002``,
    ``lagrange_alpha = 0.9``, ``lambda_init = 0``, ``lagrange_damping = 1``,
    ``selection_measure = "decoded"`` and ``selection_gradient = "open"``; together with the
    model's ``ab_clamp = (0.1, 10)``.  The paper's controller is ``equality=False,
    lagrange_damping=0, selection_measure="expected", selection_gradient="l0"``.  Faster
    multipliers (0.01-0.05, alpha 0.99) wind lambda up while the gates sit at exactly 1 and then
    switch every gate off at once.  With the paper's inequality form the
    multiplier only ever pushes the selection *down*; on SST a fast multiplier (lr 0.05) drove every
    gate to exactly 0, where the task loss has no gradient, and the run never recovered.  The
    equality form pulls the expected L0 back up when it falls below the target.
    ``lambda_init=None`` means 0 for equality constraints and 1e-3 for inequality ones.

    ``constraint_warmup``: the first N training updates use the task loss only (the multipliers
    do not move), so the classifier learns from the full text before the selection pressure starts.
    Without it the constraint acts while the classifier still predicts the majority class, the
    selector gets no useful task gradient and every gate is switched off uniformly.

    ``selection_anneal``: lower the selection target linearly from 1 to ``selection`` over the
    first N updates (``target_t = s + (1 - s) max(0, 1 - t / N)``), so the multiplier tracks a
    slowly moving equilibrium instead of winding up while the gates sit at 1 and then switching
    every gate off.

    ``lagrange_damping``: the proportional term of the core controller (``damping``), for both
    multipliers (selection and, with ``lasso``, transitions): the selector is pushed by
    ``lambda + d * m`` instead of ``lambda`` alone, so it reacts at once to a rate far from the
    target instead of waiting for ``lambda`` to wind up.

    ``selection_measure``: what the selection multiplier tracks.  ``"expected"`` (the paper) is
    the expected L0 itself; ``"decoded"`` is the fraction of tokens kept by the deterministic
    test-time decision (:meth:`HardKumaraswamy.deterministic`) on the training batch, while the
    gradient comes from ``selection_gradient`` (a proxy Lagrangian).  The two differ where gates
    are uncertain: a gate with ``P(0) = 0.5, P(1) = 0.4`` counts 0.5 towards the expected L0 but
    is decoded as 0, so with ``"expected"`` the test-time selection falls below the target.

    ``selection_gradient``: the differentiable quantity whose gradient the selection multiplier
    pushes.  ``"l0"``: the expected L0 ``1 - P(z=0)``.  ``"open"``: ``(1 - P(z=0) + P(z=1)) / 2``,
    which rises with the gate as well but whose gradient does not vanish when every gate is
    confidently open (there ``P(z=0)`` is ~1e-12 and flat, while ``P(z=1)`` still moves); only
    with ``selection_measure="decoded"``, since the multiplier must track the selection itself.
    """

    selection: Optional[float] = None
    lasso: Optional[float] = None
    lagrange_lr: float = 0.002
    lagrange_alpha: float = 0.9
    lambda_init: Optional[float] = None
    lambda_max: float = 5.0
    equality: bool = True
    sparsity_weight: float = 0.0
    sparsity_target: float = 0.0
    coherence_weight: float = 0.0
    baseline_decay: float = 0.95
    constraint_warmup: int = 0
    selection_anneal: int = 0
    lagrange_damping: float = 1.0
    selection_measure: str = "decoded"
    selection_gradient: str = "open"

    def __post_init__(self):
        if self.selection_measure not in ("expected", "decoded"):
            raise ValueError(
                f"selection_measure (--selection-measure) must be 'expected' or 'decoded', got {self.selection_measure!r}"
            )
        if self.selection_gradient not in ("l0", "open"):
            raise ValueError(
                f"selection_gradient (--selection-gradient) must be 'l0' or 'open', got {self.selection_gradient!r}"
            )
        if self.selection_gradient == "open" and self.selection_measure != "decoded":
            raise ValueError("--selection-gradient open (the default) needs --selection-measure decoded: the "
                             "multiplier must track the selection itself, not the surrogate; with "
                             "--selection-measure expected add --selection-gradient l0")
        if self.lagrange_damping < 0:
            raise ValueError(f"lagrange_damping (--lagrange-damping) must be >= 0, got {self.lagrange_damping}")


def task_loss(logits: torch.Tensor, targets: torch.Tensor, task: str, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy (classification) or squared error (regression)."""
    if task == "regression":
        return F.mse_loss(logits, targets.to(logits.dtype), reduction=reduction)
    return F.cross_entropy(logits, targets, reduction=reduction)


def selection_rate(z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sequence fraction of valid tokens with ``z != 0``: ``(B,)`` (no gradient)."""
    return masked_mean((z.detach() != 0).to(torch.float32), mask, dim=-1)


def transition_rate(z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sequence number of selected/unselected switches divided by length: ``(B,)``."""
    sel = (z.detach() != 0).to(torch.float32)
    pair_valid = (mask[:, 1:] & mask[:, :-1]).to(torch.float32)
    switches = ((sel[:, 1:] - sel[:, :-1]).abs() * pair_valid).sum(-1)
    return switches / mask.sum(-1).clamp_min(1).to(torch.float32)


def pooled_mean(x: torch.Tensor) -> torch.Tensor:
    """``x.mean()``; when ``torch.distributed`` is initialised with several ranks, the mean over
    every rank's ``x``: ``sum_r sum(x_r) / sum_r numel(x_r)`` (one ``all_reduce``; every rank must
    call it, a rank with an empty ``x`` contributes zeros)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x.mean()
    sums = torch.stack([x.detach().float().sum(), torch.tensor(float(x.numel()), device=x.device)])
    dist.all_reduce(sums, op=dist.ReduceOp.SUM)
    return (sums[0] / sums[1].clamp_min(1.0)).to(x.dtype)


class RationaleObjective(nn.Module):
    """Loss for a :class:`~hardkuma_attention.rationale.models.RationaleModel` output.

    Holds the Lagrangian controllers (HardKuma) or the REINFORCE baseline (Bernoulli) as
    sub-modules / buffers so that they are saved and restored with the checkpoint.
    """

    def __init__(self, config: ObjectiveConfig, gate: str, task: str = "classification"):
        super().__init__()
        self.config, self.gate, self.task = config, gate, task
        c = config
        lambda_init = c.lambda_init if c.lambda_init is not None else (0.0 if c.equality else 1e-3)
        kwargs = dict(alpha=c.lagrange_alpha, lr=c.lagrange_lr, lambda_init=lambda_init,
                      lambda_max=c.lambda_max, equality=c.equality, damping=c.lagrange_damping,
                      valid_range=(0.0, 1.0))  # both targets are rates
        self.selection_constraint = (
            LagrangianConstraint(c.selection, **kwargs) if gate == "hardkuma" and c.selection is not None else None
        )
        # The transition rate is an upper bound (contiguity), always an inequality constraint.
        lasso_kwargs = dict(kwargs, equality=False, lambda_init=lambda_init if lambda_init > 0 else 1e-3)
        self.lasso_constraint = (
            LagrangianConstraint(c.lasso, **lasso_kwargs) if gate == "hardkuma" and c.lasso is not None else None
        )
        self.register_buffer("reinforce_baseline", torch.tensor(0.0))
        self.register_buffer("baseline_updates", torch.tensor(0, dtype=torch.long))
        self.register_buffer("updates", torch.tensor(0, dtype=torch.long))

    def forward(self, out: RationaleOutput, targets: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, float]]:
        mask = out.mask
        per_example = task_loss(out.logits, targets, self.task, reduction="none")
        task = per_example.mean()
        rate = selection_rate(out.z, mask)
        stats = {"task_loss": float(task.detach()), "selected": float(rate.mean())}
        loss = task
        if self.training:
            self.updates.add_(1)
        warm = int(self.updates) > self.config.constraint_warmup or not self.training
        if self.gate == "hardkuma" and out.dist is not None:
            l0 = expected_l0(out.dist, mask, dim=-1).mean()
            stats["expected_l0"] = float(l0.detach())
            if self.selection_constraint is not None and warm:
                if c_anneal := self.config.selection_anneal:
                    s = self.config.selection
                    t = max(int(self.updates) - self.config.constraint_warmup, 0)
                    self.selection_constraint.target = s + (1 - s) * max(0.0, 1 - t / c_anneal)
                    stats["selection_target"] = self.selection_constraint.target
                observed = None
                if self.config.selection_measure == "decoded":
                    with torch.no_grad():
                        observed = selection_rate(out.dist.deterministic(), mask).mean()
                    stats["decoded_selected"] = float(observed)
                pushed = l0
                if self.config.selection_gradient == "open":
                    pushed = 0.5 * (l0 + masked_mean(out.dist.prob_one(), mask, dim=-1).mean())
                # count: the rate is a mean over the batch's sequences; under torch.distributed the
                # constraint all-reduces (count * rate, count), i.e. the mean over the global batch.
                loss = loss + self.selection_constraint(pushed, observed, count=float(mask.size(0)))
                stats["lambda_selection"] = self.selection_constraint.multiplier
            if self.lasso_constraint is not None and warm:
                trans = expected_transitions(out.dist, mask, dim=-1, normalize=True)
                loss = loss + self.lasso_constraint(trans, count=float(mask.size(0)))
                stats["expected_transitions"] = float(trans.detach())
                stats["lambda_lasso"] = self.lasso_constraint.multiplier
        elif self.gate == "bernoulli" and out.log_prob_z is not None:
            c = self.config
            cost = (
                per_example.detach()
                + c.sparsity_weight * (rate - c.sparsity_target).abs()
                + c.coherence_weight * transition_rate(out.z, mask)
            )
            if self.training:
                with torch.no_grad():
                    mean_cost = pooled_mean(cost)  # the same on every rank under torch.distributed
                    if int(self.baseline_updates) == 0:
                        self.reinforce_baseline.copy_(mean_cost)
                    else:
                        d = c.baseline_decay
                        self.reinforce_baseline.mul_(d).add_((1 - d) * mean_cost)
                    self.baseline_updates.add_(1)
            advantage = cost - self.reinforce_baseline
            loss = loss + (advantage * out.log_prob_z).mean()
            stats["cost"] = float(cost.mean())
        return loss, stats
