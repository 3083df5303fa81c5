r"""Lagrangian (GECO-style) controller that drives a measured quantity to a target.

Rezende & Viola (2018) "Taming VAEs" / Bastings et al. (2019), Section 4.  For a constraint
``measured <= target`` the per-batch constraint value is ``c = measured - target``; then::

    m      <- alpha * m + (1 - alpha) * c             (moving average, no gradient)
    c_hat   = c + stopgrad(m - c)                      (value of m, gradient of c)
    lambda <- clamp(lambda * exp(eta * m), lambda_min, lambda_max)
    penalty = stopgrad(lambda) * c_hat                 (added to the loss)

``lambda`` grows while the moving average is above the target and shrinks below it, so the
loss pushes the measured value down only as hard as needed.  Defaults are the paper's SST setting:
``alpha = 0.99``, ``eta = 0.01``, ``lambda_init = 1e-4``; ``m`` starts at 0 as in the paper's code.

Two optional extensions (both off by default, so the paper's rule above is unchanged):

* ``damping = d > 0`` adds a proportional term (the damping of Platt & Barr's "modified
  differential method of multipliers"): ``penalty = stopgrad(lambda + d * m) * c_hat``, i.e. the
  loss also carries ``d/2 * c^2`` at the moving-average level.  ``lambda`` alone is an integral
  controller: while the measured value sits far from the target it keeps winding up, and once
  it does move the parameters it overshoots (with Adam, whose steps do not shrink with the size of
  the push, the measured value then swings between its extremes).  The proportional term pushes
  at once and fades as the target is reached.  For an inequality constraint the coefficient is
  clamped at 0, so a satisfied constraint never pushes the measured value up.
* ``forward(measured, observed=...)``: the multiplier tracks ``observed`` (any scalar, no
  gradient needed) while the penalty's gradient still comes from ``measured`` — a proxy
  Lagrangian (Cotter et al. 2019).  Use it when the quantity that has to meet the target is not
  differentiable, e.g. the fraction of gates that are non-zero after the deterministic test-time
  decision, with the expected L0 as its differentiable stand-in.

With ``equality=True`` the same update drives ``measured`` towards the target from both sides:
``lambda`` may turn negative (clamped to ``[-lambda_max, lambda_max]``) and is updated additively
(``lambda <- lambda + eta * m``) since a multiplicative update cannot change sign.

Data-parallel training (``torch.distributed``): when a process group with more than one rank is in
use (the default group once ``torch.distributed`` is initialised, or the ``process_group`` given to
the constructor), the value the controller tracks is the *global* mean over all ranks.  Each rank
contributes a numerator and a denominator, all-reduced (summed) in float32 before the update::

    value = sum_r num_r / sum_r den_r        (num_r = observed_r * count_r, den_r = count_r)

:meth:`update_from_sums` takes the sums directly (exact: e.g. ``sum P(z != 0)`` over the valid
cells and the number of cells); ``forward(..., count=n)`` weights a rank's mean by ``n``
(``count=None``: every rank counts once).  Every rank then runs the same update on the same value,
so ``lambda`` and ``m`` stay bit-identical across ranks.  A rank with no data passes ``count=0``
(or ``den = 0``): it contributes zeros but still joins the collective, so nothing hangs; when the
global denominator is 0 the state is left unchanged.  Without a multi-rank group nothing is
communicated and the update is exactly the single-process rule above.

Guards: a non-finite ``target`` (or one outside ``valid_range`` when given, e.g. ``(0, 1)`` for a
rate) is refused at construction.  A non-finite measured (or observed) value never reaches the
state: in training mode the update is skipped (multiplier, moving average and ``num_updates``
unchanged), counted in ``skipped_updates`` (not saved) and reported once by a ``RuntimeWarning``;
the returned penalty is then non-finite too, so the caller's loss shows it.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["LagrangianConstraint"]


class LagrangianConstraint(nn.Module):
    """Moving-average Lagrange multiplier for one scalar constraint ``measured <= target``.

    State (``lagrange_multiplier``, ``moving_average``, ``num_updates``) lives in float32 buffers
    that stay float32 through ``.half()`` / ``.to(torch.bfloat16)``, are saved in ``state_dict`` and
    change only in training mode (``module.train()``); in eval mode :meth:`forward` returns the
    penalty at the current multiplier and leaves the state untouched.

    Args:
        target: the constraint level, e.g. 0.1 for "at most 10 % of gates non-zero".
        alpha: moving-average decay.
        lr: ``eta``, the step size of the multiplier update.
        lambda_init, lambda_min, lambda_max: initial value and bounds of the multiplier.
        equality: treat the constraint as ``measured == target`` (see the module docstring).
        damping: weight ``d >= 0`` of the proportional term (see the module docstring).
        process_group: the ``torch.distributed`` group whose ranks share the constraint (None:
            the default group when ``torch.distributed`` is initialised); see the module docstring.
            Not saved in ``state_dict``.
        valid_range: optional ``(low, high)`` the target must lie in (e.g. ``(0, 1)`` for a rate).
    """

    def __init__(
        self,
        target: float,
        alpha: float = 0.99,
        lr: float = 0.01,
        lambda_init: float = 1e-4,
        lambda_min: float = 1e-12,
        lambda_max: float = 5.0,
        equality: bool = False,
        damping: float = 0.0,
        process_group: Optional[Any] = None,
        valid_range: Optional[Tuple[float, float]] = None,
    ):
        super().__init__()
        if not math.isfinite(target):
            raise ValueError(f"target must be finite, got target={target}")
        if valid_range is not None and not valid_range[0] <= target <= valid_range[1]:
            raise ValueError(f"target must be in [{valid_range[0]}, {valid_range[1]}], got target={target}")
        if damping < 0:
            raise ValueError(f"damping must be >= 0, got damping={damping}")
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"alpha must be in [0, 1), got alpha={alpha}")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got lr={lr}")
        if not (0 < lambda_min <= lambda_init <= lambda_max) and not equality:
            raise ValueError(
                "need 0 < lambda_min <= lambda_init <= lambda_max, got "
                f"lambda_min={lambda_min}, lambda_init={lambda_init}, lambda_max={lambda_max}"
            )
        self.target = float(target)
        self.alpha = float(alpha)
        self.lr = float(lr)
        self.lambda_min = float(lambda_min)
        self.lambda_max = float(lambda_max)
        self.equality = bool(equality)
        self.damping = float(damping)
        self.process_group = process_group
        self.register_buffer("lagrange_multiplier", torch.tensor(float(lambda_init), dtype=torch.float32))
        self.register_buffer("moving_average", torch.tensor(0.0, dtype=torch.float32))
        self.register_buffer("num_updates", torch.tensor(0, dtype=torch.long))
        self.skipped_updates = 0  # training-mode calls with a non-finite measured / observed value

    def extra_repr(self) -> str:
        return (
            f"target={self.target}, alpha={self.alpha}, lr={self.lr}, "
            f"lambda=[{self.lambda_min}, {self.lambda_max}], equality={self.equality}"
            + (f", damping={self.damping}" if self.damping else "")
        )

    def _apply(self, fn, recurse=True):
        # Keep the controller state in float32 (exactly: no round trip through the new dtype)
        # whatever dtype the model is cast to; device moves still apply.
        kept = {name: self._buffers[name] for name in ("lagrange_multiplier", "moving_average")}
        super()._apply(fn, recurse)
        for name, old in kept.items():
            new = self._buffers[name]
            if new.dtype != torch.float32:
                self._buffers[name] = old.to(device=new.device)
        return self

    def _accept(self, c_obs: torch.Tensor) -> bool:
        """False (counted, warned once) when the tracked constraint value is not finite."""
        if bool(torch.isfinite(c_obs)):
            return True
        self.skipped_updates += 1
        if self.skipped_updates == 1:
            warnings.warn("LagrangianConstraint: non-finite measured value; multiplier update skipped "
                          "(counted in skipped_updates)", RuntimeWarning, stacklevel=3)
        return False

    @property
    def multiplier(self) -> float:
        return float(self.lagrange_multiplier)

    def forward(
        self,
        measured: torch.Tensor,
        observed: torch.Tensor | float | None = None,
        *,
        count: torch.Tensor | float | None = None,
    ) -> torch.Tensor:
        """Return the penalty ``stopgrad(lambda + d * m) * c_hat`` for a scalar ``measured``.

        ``observed`` (default: ``measured``) is the value the moving average and the multiplier
        track; the penalty's gradient is always that of ``measured``.  ``count`` (optional): the
        number of items ``observed`` is the mean of; under ``torch.distributed`` the ranks are
        weighted by it, and ``count = 0`` marks a rank without data (see the module docstring).
        Computed in float32.
        """
        if measured.dim() != 0:
            raise ValueError(f"measured must be a scalar tensor, got shape {tuple(measured.shape)}")
        c = measured.float() - self.target
        if observed is None:
            value = measured.detach().float()
        else:
            value = torch.as_tensor(observed, dtype=torch.float32, device=c.device).detach()
            if value.dim() != 0:
                raise ValueError(f"observed must be a scalar, got shape {tuple(value.shape)}")
        if self.training:
            self._track(value, count)
        c_hat = c + (self.moving_average - c).detach()
        coef = self.lagrange_multiplier
        if self.damping:
            coef = coef + self.damping * self.moving_average
            if not self.equality:
                coef = coef.clamp_min(0.0)
        return coef.detach() * c_hat

    def is_distributed(self) -> bool:
        """True when updates are all-reduced: ``torch.distributed`` is initialised and the group
        (``process_group`` or the default one) has more than one rank."""
        if not (dist.is_available() and dist.is_initialized()):
            return False
        return dist.get_world_size(self.process_group) > 1

    def _track(self, value: torch.Tensor, count: torch.Tensor | float | None) -> None:
        """Update the state from this rank's ``value`` (a mean over ``count`` items)."""
        if not self.is_distributed():
            # One process: the value itself (bit-identical to the rule without ``count``).
            apply = None if count is None else torch.as_tensor(count, device=value.device).detach() > 0
            self._update(value - self.target, apply)
            return
        n = torch.as_tensor(1.0 if count is None else count, dtype=torch.float32, device=value.device).detach()
        has = n > 0
        self.update_from_sums(torch.where(has, value * n, torch.zeros_like(value)), torch.where(has, n, 0.0))

    def update_from_sums(self, num: torch.Tensor | float, den: torch.Tensor | float) -> torch.Tensor:
        r"""Update ``m`` and ``lambda`` from ``value = sum_r num_r / sum_r den_r`` and return ``value``.

        ``num`` and ``den`` (scalars) are this rank's numerator and denominator, e.g. the sum of
        ``P(z != 0)`` over its valid cells and their number; they are summed over the ranks with
        one ``all_reduce`` of a float32 pair (every rank must call this method the same number of
        times; a rank without data passes zeros).  With one process ``value = num / den``.  When
        the global ``den`` is 0 the state is unchanged and 0 is returned.  Updates whatever the
        module's mode (unlike :meth:`forward`, which updates in training mode only).
        """
        device = self.moving_average.device
        sums = torch.stack(
            [torch.as_tensor(x, dtype=torch.float32, device=device).detach().reshape(()) for x in (num, den)]
        )
        if self.is_distributed():
            dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=self.process_group)
        has = sums[1] > 0
        value = torch.where(has, sums[0] / torch.where(has, sums[1], 1.0), 0.0)
        self._update(value - self.target, has)
        return value

    @torch.no_grad()
    def _update(self, c_obs: torch.Tensor, apply: Optional[torch.Tensor] = None) -> None:
        """One step of the moving average and the multiplier; only where ``apply`` (if given).
        A non-finite ``c_obs`` skips the step (:meth:`_accept`); under ``torch.distributed`` it is
        the all-reduced value, so every rank skips alike."""
        if not self._accept(c_obs):
            return
        m = self.alpha * self.moving_average + (1 - self.alpha) * c_obs
        if self.equality:
            lam = (self.lagrange_multiplier + self.lr * m).clamp(-self.lambda_max, self.lambda_max)
        else:
            lam = (self.lagrange_multiplier * torch.exp(self.lr * m)).clamp(self.lambda_min, self.lambda_max)
        if apply is None:
            self.num_updates.add_(1)
        else:
            m = torch.where(apply, m, self.moving_average)
            lam = torch.where(apply, lam, self.lagrange_multiplier)
            self.num_updates.add_(apply.long())
        self.moving_average.copy_(m)
        self.lagrange_multiplier.copy_(lam)
