r"""Training objectives of the rationale models (one per gate type).

HardKuma (Bastings et al. 2019, Sec. 4), with ``m`` the valid tokens of sequence ``i``::

    task      = CE(logits, y)                     (regression: MSE(sigmoid output, y))
    L0        = mean_i  mean_{t in m_i} (1 - P(z_it = 0))         core ``functional.expected_l0``
    T_i       = sum_t P(z_t=0)(1-P(z_{t+1}=0)) + ...                   core ``expected_transitions``
    trans     = sum_i T_i / sum_i sum_{t in m_i} (1 - P(z_it = 0))   (lasso_measure="per_selected")
              = mean_i T_i / |m_i|                                    (lasso_measure="rate", the paper)
    loss      = task + lambda_sel (L0 - s_t) + lambda_lasso (trans - lasso)
                (task only during the first ``controller.warmup`` updates; ``s_t = selection``,
                or with ``selection_anneal = N`` the target falling linearly from 1:
                ``s_t = s + (1 - s) max(0, 1 - t / N)``, ``t`` the updates after the warm-up)

with both multipliers from the core :class:`~hardkuma_attention.LagrangianConstraint`, built from
one :class:`~hardkuma_attention.config.ControllerConfig` (``controller``, default its
``"rationale"`` preset), only for the constraints that are set (``selection`` / ``lasso`` None
means "off").  The selection constraint is an equality with that preset (``controller.equality``);
the transition constraint is always the inequality ``trans <= lasso``.

Bernoulli gates, REINFORCE (Lei et al. 2016), per example ``i``::

    cost_i    = task_i + sparsity_weight * |rate_i - sparsity_target| + coherence_weight * trans_i
    loss      = mean_i task_i + mean_i (cost_i - baseline) * log p(z_i | x_i)   (cost detached)

``rate_i`` = fraction of selected tokens, ``trans_i`` = number of 0/1 switches / length.  With
``sparsity_target = 0`` (default) the sparsity term is Lei et al.'s ``lambda_1 |z|`` (normalised
by length); a positive target penalises the distance to a selection rate instead, which makes
"comparable rates" easy to reach.  ``baseline`` is a moving average of the mean cost (variance
reduction, decay ``BASELINE_DECAY`` = 0.95; a buffer, saved in the checkpoint).

Full text (``gate="none"``): the task loss only.

Each objective returns ``(loss, stats)`` where ``stats`` holds floats for logging (task loss,
expected/measured selection rate, multipliers).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple, Union

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..config import ControllerConfig
from ..distributions import HardKumaraswamy
from ..functional import expected_l0, expected_transitions, masked_mean, nonzero_rate
from .models import RationaleOutput, nest_old_fields

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
    "WARMUP_GATES",
]

SELECTION_GRADIENTS = ("l0", "open", "log_open")
# Decay of the REINFORCE baseline's moving average (a former ObjectiveConfig field no run changed).
BASELINE_DECAY = 0.95
LASSO_MEASURES = ("rate", "per_selected")
WARMUP_GATES = ("task", "open")


@dataclass
class ObjectiveConfig:
    """Loss settings.  ``selection``/``lasso``: HardKuma targets (None = no constraint).

    ``controller``: the Lagrangian controller of both constraints
    (:class:`~hardkuma_attention.config.ControllerConfig`; CLI ``--controller PRESET`` plus
    ``--lagrange-lr`` (``lr``), ``--lagrange-alpha`` (``alpha``), ``--lambda-init``,
    ``--lambda-max``, ``--equality``, ``--lagrange-damping`` (``damping``),
    ``--selection-measure`` (``observe``)).  Its default, the ``"rationale"`` preset, is what
    converged on SST for targets 0.1, 0.3 and 0.5: an equality constraint (the core's additive
    update, lambda may turn negative) with ``lr = 0.002``, ``alpha = 0.9``, ``lambda_init = 0``,
    ``damping = 1``, ``observe = "decoded"``, used with ``selection_gradient = "open"`` and the
    model's gate preset ``"rationale"`` (a, b in [0.1, 10]).  The paper's controller is
    ``ControllerConfig.preset("paper")`` (inequality, no damping, ``observe="expected"``) with
    ``selection_gradient="l0"``.  Faster multipliers (0.01-0.05, alpha 0.99) wind lambda up while
    the gates sit at exactly 1 and then switch every gate off at once.  With the paper's
    inequality form the multiplier only ever pushes the selection *down*; on SST a fast
    multiplier (lr 0.05) drove every gate to exactly 0, where the task loss has no gradient, and
    the run never recovered.  The equality form pulls the expected L0 back up when it falls below
    the target.

    ``controller.warmup``: the first N training updates use the task loss only (the multipliers
    do not move), so the classifier learns from the full text before the selection pressure starts.
    Without it the constraint acts while the classifier still predicts the majority class, the
    selector gets no useful task gradient and every gate is switched off uniformly.

    ``selection_anneal``: lower the selection target linearly from 1 to ``selection`` over the
    first N updates (``target_t = s + (1 - s) max(0, 1 - t / N)``), so the multiplier tracks a
    slowly moving equilibrium instead of winding up while the gates sit at 1 and then switching
    every gate off.

    ``controller.damping``: the proportional term of the core controller, for both multipliers
    (selection and, with ``lasso``, transitions): the selector is pushed by ``lambda + d * m``
    instead of ``lambda`` alone, so it reacts at once to a rate far from the target instead of
    waiting for ``lambda`` to wind up.

    ``controller.observe``: what the selection multiplier tracks.  ``"expected"`` (the paper) is
    the expected L0 itself; ``"decoded"`` is the fraction of tokens kept by the deterministic
    test-time decision (:meth:`HardKumaraswamy.deterministic`) on the training batch, while the
    gradient comes from ``selection_gradient`` (a proxy Lagrangian).  The two differ where gates
    are uncertain: a gate with ``P(0) = 0.5, P(1) = 0.4`` counts 0.5 towards the expected L0 but
    is decoded as 0, so with ``"expected"`` the test-time selection falls below the target.

    ``selection_gradient``: the differentiable quantity whose gradient the selection multiplier
    pushes.  ``"l0"``: the expected L0 ``1 - P(z=0)``.  ``"open"``: ``(1 - P(z=0) + P(z=1)) / 2``,
    which rises with the gate as well but whose gradient does not vanish when every gate is
    confidently open (there ``P(z=0)`` is ~1e-12 and flat, while ``P(z=1)`` still moves); only
    with ``observe="decoded"``, since the multiplier must track the selection itself.
    ``"log_open"``: ``(log(1 - P0) + log P1) / 2``, linear in ``b``, whose gradient survives at the
    closed corner too (see :func:`selection_surrogate`; on the span task it reopens a collapsed
    selector but, with the default damping and Adam, swings between all-open and all-closed).

    ``lasso_measure``: what the transition constraint (``lasso``) bounds, see
    :func:`lasso_measured`.  ``"per_selected"`` (default): expected transitions per expected
    selected token, ``lasso = 2 / L`` asks for runs of ``L`` tokens on average (0.25: runs of 8).
    ``"rate"``: the paper's transitions per token: its gradient pushes every isolated open gate
    shut (closing everything is its easiest optimum), against the selection constraint.  The
    default was chosen on the span task (tests/rationale/synthetic.py ``span_examples``; figures
    from ``benchmarks/coherence_diagnostics.py`` in the README's "Coherent rationales").  With
    ``"per_selected"`` and ``observe="decoded"`` the multiplier tracks the decoded switches per
    decoded selected token.

    ``lasso_priority``: the selection constraint has priority: while the selection's moving
    average is more than ``lasso_priority`` below its target, the lasso penalty is switched off
    (its multiplier still tracks).  None (default): always on.  On the span task with
    ``"per_selected"`` it did not help (0.02: the selection after 6 epochs was no closer to its
    target than without it), hence off by default.

    ``warmup_gates``: what the classifier sees during the ``controller.warmup`` updates.
    ``"task"`` (default, the old behaviour): the sampled gates, with the task loss alone training
    both networks and no constraint acting.  ``"open"``: ``z = 1`` on every valid token, so the
    classifier learns from the whole text and the task loss sends no gradient to the selector; the
    selector is trained by the selection constraint alone, towards ``s_t`` (1 during the warm-up
    when ``selection_anneal`` is set, so the gates are held open), and the lasso waits::

        t <= warmup:  loss = task(f(x)) + lambda_sel (L0 - s_t)            (f sees x * 1)
        t >  warmup:  loss = task(f(x * z)) + lambda_sel (L0 - s_t) + lambda_lasso (trans - lasso)

    Meant for a classifier that learns slowly (the CNN on whole Movies reviews needs ~350 updates
    to beat the majority class): with ``"task"`` the task loss of a classifier that still predicts
    the majority class shut every gate before it learned anything, and the selection then
    collapsed (README "Whole documents"; ``tests/rationale/test_open_warmup.py``).

    ``score_penalty``: adds ``w * mean_{i, t in m_i} (s^a_it^2 + s^b_it^2) / 2`` over the independent
    selector's raw scores (before the sigmoid a/b map).  On whole Movies reviews the task gradient
    after the warm-up drove the CNN selector's scores to |s| = 20-300, where the map's sigmoid has
    derivative exactly 0 in float32: no gradient, from the task or from the constraint, reached the
    selector again (README "Whole documents").  0 (default): off.
    """

    selection: Optional[float] = None
    lasso: Optional[float] = None
    controller: ControllerConfig = field(default_factory=lambda: ControllerConfig.preset("rationale"))
    sparsity_weight: float = 0.0
    sparsity_target: float = 0.0
    coherence_weight: float = 0.0
    selection_anneal: int = 0
    selection_gradient: str = "open"
    lasso_measure: str = "per_selected"
    lasso_priority: Optional[float] = None
    warmup_gates: str = "task"
    score_penalty: float = 0.0

    def __post_init__(self):
        if isinstance(self.controller, dict):
            self.controller = ControllerConfig(**self.controller)
        if self.selection is not None and not 0.0 <= self.selection <= 1.0:
            raise ValueError(f"selection (--selection) must be in [0, 1], got {self.selection}")
        if self.selection_gradient not in SELECTION_GRADIENTS:
            raise ValueError(f"selection_gradient (--selection-gradient) must be one of {SELECTION_GRADIENTS}, "
                             f"got {self.selection_gradient!r}")
        if self.lasso_measure not in LASSO_MEASURES:
            raise ValueError(f"lasso_measure (--lasso-measure) must be one of {LASSO_MEASURES}, "
                             f"got {self.lasso_measure!r}")
        if self.score_penalty < 0:
            raise ValueError(f"score_penalty (--score-penalty) must be >= 0, got {self.score_penalty}")
        if self.warmup_gates not in WARMUP_GATES:
            raise ValueError(f"warmup_gates (--warmup-gates) must be one of {WARMUP_GATES}, got {self.warmup_gates!r}")
        if self.lasso_priority is not None and self.lasso_priority < 0:
            raise ValueError(f"lasso_priority (--lasso-priority) must be >= 0, got {self.lasso_priority}")
        if self.selection_gradient != "l0" and self.controller.observe != "decoded":
            raise ValueError(f"--selection-gradient {self.selection_gradient} needs --selection-measure decoded: the "
                             "multiplier must track the selection itself, not the surrogate; with "
                             "--selection-measure expected add --selection-gradient l0")

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "ObjectiveConfig":
        """The config saved as ``dataclasses.asdict`` (``model.pt``, ``results.json``), also in
        the flat shape written before :class:`~hardkuma_attention.config.ControllerConfig`
        (``lagrange_lr``, ``lagrange_alpha``, ``lambda_init``, ``lambda_max``, ``equality``,
        ``lagrange_damping``, ``selection_measure``, ``constraint_warmup``; the defaults they had
        are the "rationale" preset's)."""
        return cls(**nest_old_fields(values, "controller", ControllerConfig.preset("rationale"),
                                     _OLD_CONTROLLER_FIELDS, {"baseline_decay": BASELINE_DECAY}))


# ObjectiveConfig fields before ControllerConfig -> ControllerConfig fields.
_OLD_CONTROLLER_FIELDS = {"lagrange_lr": "lr", "lagrange_alpha": "alpha", "lambda_init": "lambda_init",
                          "lambda_max": "lambda_max", "equality": "equality", "lagrange_damping": "damping",
                          "selection_measure": "observe", "constraint_warmup": "warmup"}


def task_loss(logits: torch.Tensor, targets: torch.Tensor, task: str, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy (classification) or squared error (regression)."""
    if task == "regression":
        return F.mse_loss(logits, targets.to(logits.dtype), reduction=reduction)
    return F.cross_entropy(logits, targets, reduction=reduction)


def selection_rate(z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sequence fraction of valid tokens with ``z != 0``: ``(B,)`` (no gradient; core
    :func:`~hardkuma_attention.functional.nonzero_rate` over the last dim)."""
    return nonzero_rate(z, mask, dim=-1)


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
    """Per-sequence number of selected/unselected switches divided by length: ``(B,)`` (no
    gradient): the core :func:`~hardkuma_attention.functional.expected_transitions` of the hard
    gates (``P0 = 1[z = 0]``, so each pair counts ``|1[z_t = 0] - 1[z_{t+1} = 0]|``)."""
    closed = (z.detach() == 0).to(torch.float32)
    switches = expected_transitions(closed, mask, dim=-1, normalize=False)
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
    sub-modules / buffers so that they are saved and restored with the checkpoint; the update
    count ``updates`` (a buffer) fixes the warm-up and the annealed target of every call.

    With ``selection_anneal`` the selection constraint acts on the gap ``measured - s_t`` with
    target 0 (:meth:`selection_target` gives ``s_t``, passed explicitly each update), so no
    attribute changes behind the state dict; without it its target is ``selection``.
    """

    def __init__(self, config: ObjectiveConfig, gate: str, task: str = "classification"):
        super().__init__()
        self.config, self.gate, self.task = config, gate, task
        c, ctrl = config, config.controller
        hardkuma = gate == "hardkuma"
        self.selection_constraint = (
            ctrl.build(0.0 if c.selection_anneal else c.selection, valid_range=(0.0, 1.0))  # both targets are rates
            if hardkuma and c.selection is not None else None
        )
        # The transition rate is an upper bound (contiguity), always an inequality constraint.
        lasso_init = ctrl.initial_multiplier if ctrl.initial_multiplier > 0 else 1e-3
        self.lasso_constraint = (
            ctrl.build(c.lasso, valid_range=(0.0, 1.0), equality=False, lambda_init=lasso_init)
            if hardkuma and c.lasso is not None else None
        )
        self.register_buffer("reinforce_baseline", torch.tensor(0.0))
        self.register_buffer("baseline_updates", torch.tensor(0, dtype=torch.long))
        self.register_buffer("updates", torch.tensor(0, dtype=torch.long))

    def selection_target(self) -> Optional[float]:
        """The selection target of the current update: ``selection``, or with ``selection_anneal
        = N`` ``s + (1 - s) max(0, 1 - t / N)`` with ``t`` the updates after the warm-up."""
        c = self.config
        if c.selection is None or not c.selection_anneal:
            return c.selection
        t = max(int(self.updates) - c.controller.warmup, 0)
        return c.selection + (1 - c.selection) * max(0.0, 1 - t / c.selection_anneal)

    def gates_held_open(self) -> bool:
        """Whether the next training update's classifier sees ``z = 1`` on every valid token
        (``warmup_gates="open"`` during the first ``controller.warmup`` updates)."""
        c = self.config
        return (self.training and self.gate == "hardkuma" and c.warmup_gates == "open"
                and int(self.updates) < c.controller.warmup)

    def _selection_penalty(self, out: RationaleOutput, stats: Dict[str, float]) -> torch.Tensor:
        """The selection constraint's penalty (``controller.observe``: what its multiplier tracks)."""
        c, mask = self.config, out.mask
        if c.selection_anneal:
            stats["selection_target"] = self.selection_target()
        observed = None
        if c.controller.observe == "decoded":
            with torch.no_grad():
                observed = selection_rate(out.dist.deterministic(), mask).mean()
            stats["decoded_selected"] = float(observed)
        pushed = selection_surrogate(out.dist, mask, c.selection_gradient)
        if c.selection_anneal:  # the gap to this update's target, against the constraint's target 0
            target = stats["selection_target"]
            pushed = pushed - target
            observed = None if observed is None else observed - target
        # count: the rate is a mean over the batch's sequences; under torch.distributed the
        # constraint all-reduces (count * rate, count), i.e. the mean over the global batch.
        penalty = self.selection_constraint(pushed, observed, count=float(mask.size(0)))
        stats["lambda_selection"] = self.selection_constraint.multiplier
        return penalty

    def _lasso_penalty(self, out: RationaleOutput, stats: Dict[str, float]) -> torch.Tensor:
        """The lasso constraint's penalty; zero (the multiplier still tracks) while ``lasso_priority``
        is set and the selection's moving average is more than ``lasso_priority`` below its target."""
        c = self.config
        trans = lasso_measured(out.dist, out.mask, c.lasso_measure)
        observed = None  # "rate": the expected rate itself, as before
        if c.lasso_measure != "rate" and c.controller.observe == "decoded":
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

    def _add_hardkuma_terms(self, loss: torch.Tensor, out: RationaleOutput, stats: Dict[str, float]) -> torch.Tensor:
        """``loss`` plus the Lagrangian penalties (none during the warm-up, which only counts updates;
        with ``warmup_gates="open"`` the selection penalty acts during the warm-up as well)."""
        stats["expected_l0"] = float(expected_l0(out.dist, out.mask, dim=-1).mean().detach())
        warm = int(self.updates) > self.config.controller.warmup or not self.training
        select = warm or self.config.warmup_gates == "open"  # "open": the constraint alone trains the selector
        if self.selection_constraint is not None and select:
            loss = loss + self._selection_penalty(out, stats)
        if self.lasso_constraint is not None and warm:
            loss = loss + self._lasso_penalty(out, stats)
        if out.scores is not None and self.config.score_penalty > 0:
            square = masked_mean(out.scores.pow(2).mean(-1), out.mask, dim=-1).mean()
            stats["score_rms"] = float(square.detach().sqrt())
            loss = loss + self.config.score_penalty * square
        return loss

    def _reinforce_terms(self, out: RationaleOutput, per_example: torch.Tensor, rate: torch.Tensor,
                         stats: Dict[str, float]) -> torch.Tensor:
        """REINFORCE: ``mean_i (cost_i - baseline) log p(z_i | x_i)``; updates the baseline in training."""
        c = self.config
        cost = (per_example.detach() + c.sparsity_weight * (rate - c.sparsity_target).abs()
                + c.coherence_weight * transition_rate(out.z, out.mask))
        if self.training:
            with torch.no_grad():
                mean_cost = pooled_mean(cost)  # the same on every rank under torch.distributed
                if int(self.baseline_updates) == 0:
                    self.reinforce_baseline.copy_(mean_cost)
                else:
                    d = BASELINE_DECAY
                    self.reinforce_baseline.mul_(d).add_((1 - d) * mean_cost)
                self.baseline_updates.add_(1)
        stats["cost"] = float(cost.mean())
        return ((cost - self.reinforce_baseline) * out.log_prob_z).mean()

    def forward(self, out: RationaleOutput, targets: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, float]]:
        per_example = task_loss(out.logits, targets, self.task, reduction="none")
        task = per_example.mean()
        rate = selection_rate(out.z, out.mask)
        stats = {"task_loss": float(task.detach()), "selected": float(rate.mean())}
        loss = task
        if self.training:
            self.updates.add_(1)
        if self.gate == "hardkuma" and out.dist is not None:
            loss = self._add_hardkuma_terms(loss, out, stats)
        elif self.gate == "bernoulli" and out.log_prob_z is not None:
            loss = loss + self._reinforce_terms(out, per_example, rate, stats)
        return loss, stats
