r"""Training objectives of the rationale models (one per gate type).

HardKuma (Bastings et al. 2019, Sec. 4), with ``m`` the valid tokens of sequence ``i``::

    task      = CE(logits, y)                     (regression: MSE(sigmoid output, y))
    L0        = mean_i  mean_{t in m_i} (1 - P(z_it = 0))         core ``functional.expected_l0``
    T_i       = sum_t P(z_t=0)(1-P(z_{t+1}=0)) + ...                   core ``expected_transitions``
    trans     = sum_i T_i / sum_i sum_{t in m_i} (1 - P(z_it = 0))   (lasso_measure="per_selected")
              = mean_i T_i / |m_i|                                    (lasso_measure="rate", the paper)
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
from typing import Dict, Optional, Tuple, Union

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..constraints import LagrangianConstraint
from ..distributions import HardKumaraswamy
from ..functional import expected_l0, expected_transitions, masked_mean
from .models import RationaleOutput

__all__ = [
    "ObjectiveConfig",
    "RationaleObjective",
    "task_loss",
    "selection_rate",
    "transition_rate",
    "selection_surrogate",
    "lasso_measured",
    "SELECTION_GRADIENTS",
    "LASSO_MEASURES",
]

SELECTION_GRADIENTS = ("l0", "open", "log_open")
LASSO_MEASURES = ("rate", "per_selected")


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
    ``"log_open"``: ``(log(1 - P0) + log P1) / 2``, linear in ``b``, whose gradient survives at the
    closed corner too (see :func:`selection_surrogate`; on the span task it reopens a collapsed
    selector but, with the default damping and Adam, swings between all-open and all-closed).

    ``lasso_measure``: what the transition constraint (``lasso``) bounds, see
    :func:`lasso_measured`.  ``"per_selected"`` (default): expected transitions per expected
    selected token, ``lasso = 2 / L`` asks for runs of ``L`` tokens on average (0.25: runs of 8).
    ``"rate"``: the paper's transitions per token: its gradient pushes every isolated open gate
    shut (closing everything is its easiest optimum), against the selection constraint.  The
    default was chosen on the span task (tests/rationale/synthetic.py ``span_examples``; figures
    from ``benchmarks/coherence_diagnostics.py`` in the README's "Coherent rationales").  With ``"per_selected"`` and ``selection_measure="decoded"``
    the multiplier tracks the decoded switches per decoded selected token.

    ``lasso_priority``: the selection constraint has priority: while the selection's moving
    average is more than ``lasso_priority`` below its target, the lasso penalty is switched off
    (its multiplier still tracks).  None (default): always on.  On the span task with
    ``"per_selected"`` it did not help (0.02: the selection after 6 epochs was no closer to its
    target than without it), hence off by default.
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
    lasso_measure: str = "per_selected"
    lasso_priority: Optional[float] = None

    def __post_init__(self):
        if self.selection_measure not in ("expected", "decoded"):
            raise ValueError(
                f"selection_measure (--selection-measure) must be 'expected' or 'decoded', got {self.selection_measure!r}"
            )
        if self.selection_gradient not in SELECTION_GRADIENTS:
            raise ValueError(f"selection_gradient (--selection-gradient) must be one of {SELECTION_GRADIENTS}, "
                             f"got {self.selection_gradient!r}")
        if self.lasso_measure not in LASSO_MEASURES:
            raise ValueError(f"lasso_measure (--lasso-measure) must be one of {LASSO_MEASURES}, "
                             f"got {self.lasso_measure!r}")
        if self.lasso_priority is not None and self.lasso_priority < 0:
            raise ValueError(f"lasso_priority (--lasso-priority) must be >= 0, got {self.lasso_priority}")
        if self.selection_gradient != "l0" and self.selection_measure != "decoded":
            raise ValueError(f"--selection-gradient {self.selection_gradient} needs --selection-measure decoded: the "
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


def selection_surrogate(dist, mask: torch.Tensor, kind: str) -> torch.Tensor:
    r"""The scalar whose gradient the selection multiplier pushes (``ObjectiveConfig.selection_gradient``).

    With ``P0 = 1 - (1 - k0^a)^b`` and ``P1 = (1 - k1^a)^b`` (``k0 < 0 < 1 < k1`` the stretched support
    mapped to the Kumaraswamy scale), means over the valid tokens and then the batch:

    - ``"l0"``: ``mean (1 - P0)``, the expected L0;
    - ``"open"``: ``mean (1 - P0 + P1) / 2``: its gradient survives at the open corner (``P1`` moves),
      not at the closed one (there ``1 - P0`` and ``P1`` are both ~1e-7 and flat);
    - ``"log_open"``: ``mean (log(1 - P0) + log P1) / 2 = mean b (log(1 - k0^a) + log(1 - k1^a)) / 2``,
      linear in ``b``: its gradient does not vanish at either corner, so a collapsed selector (every
      gate at exactly 0) is pushed open again as soon as the multiplier asks for more selection.
    """
    if kind == "log_open":
        return 0.5 * masked_mean(dist.log_survival_k0() + dist.log_prob_one(), mask, dim=-1).mean()
    l0 = expected_l0(dist, mask, dim=-1).mean()
    if kind == "open":
        return 0.5 * (l0 + masked_mean(dist.prob_one(), mask, dim=-1).mean())
    return l0


def lasso_measured(dist: Union[HardKumaraswamy, torch.Tensor], mask: torch.Tensor, kind: str) -> torch.Tensor:
    r"""The expected transition quantity the lasso constraint bounds (``ObjectiveConfig.lasso_measure``).

    With ``p_t = 1 - P0_t`` and ``E[T_i] = sum_t p_t (1 - p_{t+1}) + (1 - p_t) p_{t+1}`` (pairs of
    valid tokens, core :func:`~hardkuma_attention.functional.expected_transitions`):

    - ``"rate"`` (the paper): ``mean_i E[T_i] / n_i``.  Its gradient with respect to ``p_t`` is
      ``(2 - 2 p_{t-1} - 2 p_{t+1}) / n``: in a mostly closed sequence every open gate is pushed
      shut, and "close everything" is its easiest optimum, against the selection constraint;
    - ``"per_selected"``: ``sum_i E[T_i] / sum_i sum_t p_t`` (batch-pooled), transitions per
      selected token, ``= 2 k / S`` for ``k`` runs covering ``S`` tokens (hard gates).  An isolated
      gate counts 2 whatever its ``p`` (``2p / p`` for closed neighbours), so closing gates does not
      lower it; it falls when runs grow or merge.  A target of ``2 / L`` asks for runs of ``L`` tokens on average.
    """
    if kind == "per_selected":
        trans = expected_transitions(dist, mask, dim=-1, normalize=False).sum()
        p0 = dist.prob_zero() if isinstance(dist, HardKumaraswamy) else dist
        selected = ((1 - p0) * mask.to(trans.dtype)).sum()
        return trans / selected.clamp_min(1e-6)
    return expected_transitions(dist, mask, dim=-1, normalize=True)


def decoded_lasso(z: torch.Tensor, mask: torch.Tensor, kind: str) -> torch.Tensor:
    """The decoded counterpart of :func:`lasso_measured` for hard gates ``z`` (no gradient)."""
    if kind == "per_selected":
        n = mask.sum(-1).to(torch.float32)
        switches = (transition_rate(z, mask) * n).sum()
        return switches / (selection_rate(z, mask) * n).sum().clamp_min(1.0)
    return transition_rate(z, mask).mean()


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

    def _lasso_penalty(self, out: RationaleOutput, stats: Dict[str, float]) -> torch.Tensor:
        """The lasso constraint's penalty; zero (the multiplier still tracks) while ``lasso_priority``
        is set and the selection's moving average is more than ``lasso_priority`` below its target."""
        c = self.config
        trans = lasso_measured(out.dist, out.mask, c.lasso_measure)
        observed = None  # "rate": the expected rate itself, as before
        if c.lasso_measure != "rate" and c.selection_measure == "decoded":
            with torch.no_grad():
                observed = decoded_lasso(out.dist.deterministic(), out.mask, c.lasso_measure)
        penalty = self.lasso_constraint(trans, observed, count=float(out.mask.size(0)))  # see the selection
        stats["expected_transitions"] = float(trans.detach())
        stats["lambda_lasso"] = self.lasso_constraint.multiplier
        if c.lasso_priority is not None and self.selection_constraint is not None:
            below = float(self.selection_constraint.moving_average) < -c.lasso_priority
            stats["lasso_active"] = 0.0 if below else 1.0
            if below:
                penalty = penalty * 0.0
        return penalty

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
                pushed = selection_surrogate(out.dist, mask, self.config.selection_gradient)
                # count: the rate is a mean over the batch's sequences; under torch.distributed the
                # constraint all-reduces (count * rate, count), i.e. the mean over the global batch.
                loss = loss + self.selection_constraint(pushed, observed, count=float(mask.size(0)))
                stats["lambda_selection"] = self.selection_constraint.multiplier
            if self.lasso_constraint is not None and warm:
                loss = loss + self._lasso_penalty(out, stats)
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
