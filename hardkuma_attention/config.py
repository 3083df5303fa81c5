r"""One configuration per concept: the Lagrangian controller and the HardKuma gate.

Every consumer builds its controller and its gates from these two dataclasses: the core
attention module, the fairseq criteria and attention modules, the rationale objective and
selector, and the explain mask.  Each has named presets (the settings a recipe settled on, with
the measurement that chose them in the preset's note); a consumer takes a preset by name and
overrides only what differs::

    ctrl = ControllerConfig.preset("multi30k")              # the Multi30k translation controller
    ctrl = ControllerConfig.preset("paper", lr=0.05)        # the paper's, with a faster multiplier
    constraint = ctrl.build(target=0.2, valid_range=(0, 1)) # a LagrangianConstraint

    gate = GateConfig.preset("rationale")                   # sigmoid a/b map on [0.1, 10]
    a = gate.shape(score_a)                                 # a HardKuma shape parameter

Controller (see :mod:`hardkuma_attention.constraints` for the update rule)::

    m      <- alpha m + (1 - alpha) (observed - target)
    lambda <- clamp(lambda exp(lr m), lambda_min, lambda_max)     (inequality)
    lambda <- clamp(lambda + lr m, -lambda_max, lambda_max)       (equality=True)
    penalty = stopgrad(lambda + damping m) (measured - target)    (value of m, gradient of measured)

``observe``: what ``m`` tracks.  ``"expected"`` (the paper): the differentiable measured value
itself (the expected L0).  ``"decoded"``: the rate of the deterministic test-time decision, a
proxy Lagrangian (Cotter et al. 2019); the gradient still comes from the expected quantity.
``warmup``: the first ``warmup`` training updates carry no penalty and do not move the
multiplier (the consumer counts them).

Gate: a HardKuma gate per cell with shapes ``a = map(score_a)``, ``b = map(score_b)``::

    "clamp"   : a = clamp(softplus(s), lo, hi)                      (the attention layers)
    "sigmoid" : a = exp(log lo + (log hi - log lo) sigmoid(s))      (1 at s = 0 when lo hi = 1)

stretched to ``support`` and rectified into ``[0, 1]``; ``normalize`` (attention only) is
``"none"`` (raw gates), ``"sum"`` (gates over their row sum) or ``"softmax"`` (gate times the
softmax of ``score_a``, renormalised over the open cells).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple, Union

import torch

from .constraints import LagrangianConstraint
from .distributions import DEFAULT_SUPPORT
from .fused import DEFAULT_AB_RANGE, ab_from_scores

__all__ = [
    "ControllerConfig",
    "GateConfig",
    "CONTROLLER_PRESETS",
    "GATE_PRESETS",
    "DEFAULT_AB_RANGE",
    "NORMALIZE_MODES",
    "AB_MAPS",
    "OBSERVE_MODES",
    "check_normalize",
]

# DEFAULT_AB_RANGE = (1e-3, 100.0) is defined beside the clamp map in :mod:`.fused` (which this
# module imports) and re-exported here: the name every consumer uses.
NORMALIZE_MODES = ("none", "sum", "softmax")
AB_MAPS = ("clamp", "sigmoid")
OBSERVE_MODES = ("expected", "decoded")


def check_normalize(normalize: str) -> str:
    """``normalize`` if it is one of :data:`NORMALIZE_MODES`, else a ``ValueError`` naming them."""
    if normalize not in NORMALIZE_MODES:
        raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got {normalize!r}")
    return normalize


class _Presets:
    """``preset`` / ``replace`` / ``to_dict`` of a frozen configuration dataclass whose named
    presets are the table :meth:`_table` returns (``_KIND`` names it in errors)."""

    _KIND = ""

    @classmethod
    def _table(cls) -> Dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def preset(cls, name: str, **overrides: Any):
        """The named preset with ``overrides`` replaced (unknown names: ``ValueError`` listing them)."""
        table = cls._table()
        if name not in table:
            raise ValueError(f"unknown {cls._KIND} preset {name!r}; choose one of {sorted(table)}")
        return dataclasses.replace(table[name], **overrides)

    def replace(self, **overrides: Any):
        """A copy with ``overrides`` (None values are ignored, so unset CLI flags keep the preset)."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ControllerConfig(_Presets):
    """The Lagrangian controller of one constraint (the target is the consumer's: it is a
    property of the constraint, not of the controller).

    Args:
        alpha: moving-average decay, in ``[0, 1)``.
        lr: the multiplier's step size ``eta > 0``.
        lambda_init: initial multiplier; None: 0 for ``equality`` and 1e-3 otherwise.
        lambda_min, lambda_max: bounds of the multiplier (inequality: ``[min, max]``;
            equality: ``[-max, max]``).
        equality: drive the measured value to the target from both sides.
        damping: the proportional term ``d >= 0`` (0: the paper's pure multiplier).
        observe: ``"expected"`` or ``"decoded"`` (see the module docstring).
        warmup: training updates before the constraint acts (>= 0).
    """

    alpha: float = 0.99
    lr: float = 0.01
    lambda_init: Optional[float] = 1e-4
    lambda_min: float = 1e-12
    lambda_max: float = 5.0
    equality: bool = False
    damping: float = 0.0
    observe: str = "expected"
    warmup: int = 0

    def __post_init__(self):
        if not 0.0 <= self.alpha < 1.0:
            raise ValueError(f"alpha must be in [0, 1), got {self.alpha}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.damping < 0:
            raise ValueError(f"damping must be >= 0, got {self.damping}")
        if self.observe not in OBSERVE_MODES:
            raise ValueError(f"observe must be one of {OBSERVE_MODES}, got {self.observe!r}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if not (0 < self.lambda_min <= self.lambda_max):
            raise ValueError(f"need 0 < lambda_min <= lambda_max, got {self.lambda_min}, {self.lambda_max}")

    @property
    def initial_multiplier(self) -> float:
        """``lambda_init``, or its default (0 for equality, 1e-3 otherwise) when None."""
        if self.lambda_init is not None:
            return float(self.lambda_init)
        return 0.0 if self.equality else 1e-3

    _KIND = "controller"

    @classmethod
    def _table(cls) -> Dict[str, "ControllerConfig"]:
        return CONTROLLER_PRESETS

    def build(
        self, target: float, *, valid_range: Optional[Tuple[float, float]] = None, process_group: Any = None,
        **overrides: Any,
    ) -> LagrangianConstraint:
        """A :class:`~hardkuma_attention.constraints.LagrangianConstraint` for ``target`` with
        these settings (``overrides`` replace fields first, e.g. ``equality=False``).
        ``observe`` and ``warmup`` are the consumer's to apply."""
        cfg = self.replace(**overrides) if overrides else self
        return LagrangianConstraint(
            target, alpha=cfg.alpha, lr=cfg.lr, lambda_init=cfg.initial_multiplier, lambda_min=cfg.lambda_min,
            lambda_max=cfg.lambda_max, equality=cfg.equality, damping=cfg.damping,
            process_group=process_group, valid_range=valid_range,
        )


CONTROLLER_PRESETS: Dict[str, ControllerConfig] = {
    # Bastings et al. (2019), SST: GECO-style multiplicative update, slow and smooth.
    "paper": ControllerConfig(),
    # The rationale controller SST settled on (targets 0.1/0.3/0.5; README "SST"): equality
    # constraint on the decoded selection with a proportional term.  Faster multipliers wound
    # lambda up while every gate sat at 1 and then switched every gate off at once.
    "rationale": ControllerConfig(alpha=0.9, lr=0.002, lambda_init=None, equality=True, damping=1.0,
                                  observe="decoded"),
    # Multi30k translation (recipes/multi30k/train.sh, README "Multi30k"): the paper's rule is too
    # slow for a one-hour run, an uncapped fast one overshot to ~0.6 % open cross-attention cells.
    "multi30k": ControllerConfig(alpha=0.9, lr=0.05, lambda_init=5e-3, lambda_max=0.1),
    # Input-mask optimisation (explain mask): one controller per input over a few hundred steps.
    "explain": ControllerConfig(alpha=0.9, lr=0.05, lambda_init=1.0, lambda_max=10.0),
}


@dataclass(frozen=True)
class GateConfig(_Presets):
    """How scores become HardKuma gates (see the module docstring).

    Args:
        normalize: ``"none"``, ``"sum"`` or ``"softmax"`` (attention layers; ignored elsewhere).
        support: the stretch interval ``(l, r)`` with ``l < 0`` and ``r > 1``.
        ab_map: ``"clamp"`` or ``"sigmoid"``.
        ab_range: ``(lo, hi)``, ``0 < lo < hi``: the range of ``a`` and ``b``.
    """

    normalize: str = "none"
    support: Tuple[float, float] = DEFAULT_SUPPORT
    ab_map: str = "clamp"
    ab_range: Tuple[float, float] = DEFAULT_AB_RANGE

    def __post_init__(self):
        object.__setattr__(self, "support", (float(self.support[0]), float(self.support[1])))
        object.__setattr__(self, "ab_range", (float(self.ab_range[0]), float(self.ab_range[1])))
        check_normalize(self.normalize)
        if self.ab_map not in AB_MAPS:
            raise ValueError(f"ab_map must be one of {AB_MAPS}, got {self.ab_map!r}")
        lo, hi = self.support
        if not (lo < 0.0 and hi > 1.0):
            raise ValueError(f"support must satisfy l < 0 < 1 < r, got {self.support}")
        if not (0.0 < self.ab_range[0] < self.ab_range[1]):
            raise ValueError(f"ab_range must satisfy 0 < lo < hi, got {self.ab_range}")

    _KIND = "gate"

    @classmethod
    def _table(cls) -> Dict[str, "GateConfig"]:
        return GATE_PRESETS

    @classmethod
    def resolve(cls, gate: Union[None, str, "GateConfig"] = None, *, default: str = "attention",
                owner: str = "gate", **keywords: Any) -> "GateConfig":
        """The gate of a consumer that takes ``gate=`` beside its older per-field keywords.

        ``gate``: a :class:`GateConfig`, a preset name, or None for the preset ``default``.
        ``keywords``: fields (``normalize=``, ``support=``, ``ab_range=``, ...); None = not given.
        Without ``gate`` the keywords override the default preset; with one, a keyword whose
        value differs from the gate's is a ``ValueError`` naming it (``owner`` names the
        consumer in the message), since the call would give two values for one setting.
        """
        if gate is None:
            return cls.preset(default).replace(**keywords)
        if isinstance(gate, str):
            gate = cls.preset(gate)
        elif not isinstance(gate, GateConfig):
            raise TypeError(f"{owner}: gate must be a GateConfig or a preset name, got {type(gate).__name__}")
        merged = gate.replace(**keywords)
        clash = [k for k in keywords if keywords[k] is not None and getattr(merged, k) != getattr(gate, k)]
        if clash:
            said = ", ".join(f"{k}={keywords[k]!r} (gate: {getattr(gate, k)!r})" for k in clash)
            raise ValueError(f"{owner}: gate= and {said} disagree; pass the setting once")
        return gate

    def shape(self, score: torch.Tensor) -> torch.Tensor:
        """A shape parameter (``a`` or ``b``) in ``ab_range`` from an unconstrained score."""
        lo, hi = self.ab_range
        if self.ab_map == "clamp":
            return ab_from_scores(score, (lo, hi))
        log_lo, log_hi = math.log(lo), math.log(hi)
        return torch.exp(log_lo + (log_hi - log_lo) * torch.sigmoid(score))


GATE_PRESETS: Dict[str, GateConfig] = {
    # The attention layers (core module, fairseq, Hugging Face): the clamp map on a wide range.
    "attention": GateConfig(),
    # Rationale selector and explain mask: the sigmoid map on [0.1, 10] (1 at s = 0), whose
    # gradient never vanishes exactly; with "clamp" a gate pushed out of range is stuck.
    "rationale": GateConfig(ab_map="sigmoid", ab_range=(0.1, 10.0)),
}
