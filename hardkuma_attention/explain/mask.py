r"""Post-hoc rationales by input-mask optimisation (Brinner & Zarrieß), batched.

For an input ``x`` (embedded: ``E(x)``, ``(B, T, D)``), a frozen classifier ``f(emb, valid) ->
logits (B, C)`` and a target class ``y`` (gold label or the prediction), optimise a soft mask
``m in [0, 1]^T`` per input:

    keep       = m ⊙ E(x) + (1 - m) ⊙ E(baseline)
    complement = (1 - m) ⊙ E(x) + m ⊙ E(baseline)
    loss       = -log p(y | keep) - log(1 - p(y | complement))
                 + λ_w (mean_i m_i)^2 + λ_σ mean_j(-log σ_j)

(means over the valid positions of each input; the batch loss is the *sum* of the per-input losses,
so, Adam being elementwise, every input is optimised exactly as if it were alone).

Mask parameterisations (``MaskConfig.parameterization``):

- ``"kernel"`` (default; favours contiguous spans): per position ``j`` a weight ``w_j`` and a
  width ``σ_j``, ``m_i = sigmoid(Σ_j w_j exp(-|p_i - p_j|^2 / σ_j^2))`` where ``p_i`` are position
  coordinates (1-D token index for text, (row, col) for images).  Init ``w = 1.2``, ``σ = 2``;
  ``σ = σ_max sigmoid(s)`` (``σ_max = 10``): positive and bounded, because ``mean(-log σ)``
  alone is unbounded below and, unbounded, it flattens the kernel of some inputs into a uniform
  mask (seen in the marker test).
- ``"logit"``: ``m_i = sigmoid(θ_i)`` (no σ term).

Gates (``MaskConfig.gate_type``):

- ``"sigmoid"``: ``m`` as above, penalty ``λ_w (mean m)^2``;
- ``"hardkuma"``: ``m_i ~ HardKuma(a_i, b_i)`` with ``a_i = gate.shape(s_i)`` from the
  parameterisation's score ``s_i`` (the argument of the sigmoid) and ``b_i = gate.shape(s^b_i)``
  from a free per-position score (``MaskConfig.gate``, a
  :class:`~hardkuma_attention.config.GateConfig`: a/b map, range and support; preset
  ``"rationale"``: ``a = exp(log 0.1 + log(100) sigmoid(s))``, support ``(-0.1, 1.1)``),
  reparameterised samples while optimising and ``HardKuma.deterministic()`` for the result; the
  ``(mean m)^2`` penalty is replaced by the expected L0 (mean of ``1 - P(m_i = 0)``) under a
  per-input Lagrangian controller (``l0 <= l0_target``; ``MaskConfig.controller``, a
  :class:`~hardkuma_attention.config.ControllerConfig`, preset ``"explain"``: α 0.9, lr 0.05,
  λ_init 1, λ_max 10).

Robustness tricks applied at every step: Gaussian noise (std 0.03) on the embeddings, and random
5 % of the mask entries forced to 0 and 5 % forced to 1.  Adam, lr 3e-2, at most 900 steps; the
optimisation stops once every input's loss changed by less than ``tol`` (relative, exponential
moving average) over ``patience`` steps.

Image / feature inputs: :func:`image_positions` gives 2-D coordinates and ``tv_weight`` adds a
total-variation term ``tv_weight * mean |m_{r,c} - m_{r+1,c}| + |m_{r,c} - m_{r,c+1}|``.

Long inputs: :func:`split_chunks` / :func:`merge_chunks` cut each input into pieces of at most
``chunk_size`` positions that are explained as separate inputs (same target), then put the masks
back together — for classifiers with a maximum length, and to bound the ``O(T^2)`` kernel memory.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ControllerConfig, GateConfig
from ..distributions import HardKumaraswamy
from ..functional import expected_l0, masked_mean, nonzero_rate
from ..rationale.extras import progress as progress_bar

__all__ = [
    "MaskConfig",
    "MaskResult",
    "MaskLossTerms",
    "ClassifierFn",
    "KernelMask",
    "LogitMask",
    "MaskGates",
    "sequence_positions",
    "image_positions",
    "kernel_logits",
    "blend",
    "target_probability",
    "mask_loss_terms",
    "total_variation",
    "optimise_masks",
    "split_chunks",
    "merge_chunks",
]

ClassifierFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``f(emb (B, T, D), valid (B, T) bool) -> logits (B, C)``, the frozen model."""

PARAMETERIZATIONS = ("kernel", "logit")
GATE_TYPES = ("sigmoid", "hardkuma")


@dataclass
class MaskConfig:
    """Hyper-parameters; defaults are the paper's (λ_w = 1, λ_σ = 1.2, noise 0.03, 5 %/5 % forced
    entries, Adam 3e-2, <= 900 steps).

    ``gate_type``: ``"sigmoid"`` or ``"hardkuma"`` (module docstring).  HardKuma only:
    ``l0_target`` (the expected-L0 level, ``l0 <= target``), ``controller`` (the Lagrangian
    controller of each input's constraint; ``observe="decoded"`` tracks the non-zero rate of the
    deterministic mask, ``warmup`` steps carry no penalty) and ``gate`` (how the scores become
    the shapes ``a``, ``b`` and the support).
    """

    parameterization: str = "kernel"
    gate_type: str = "sigmoid"
    init_weight: Optional[float] = None  # None: 1.2 (sigmoid gate), 0.0 (hardkuma: a = b = 1 at the start)
    init_sigma: float = 2.0
    sigma_max: float = 10.0  # σ = sigma_max * sigmoid(s): bounds the otherwise unbounded -log σ reward
    init_logit: Optional[float] = None  # "logit": None -> 3.0 (m = sigmoid(3) ~ 0.95) / 0.0 (hardkuma)
    lambda_w: float = 1.0
    lambda_sigma: float = 1.2
    tv_weight: float = 0.0
    noise_std: float = 0.03
    force_zero: float = 0.05
    force_one: float = 0.05
    lr: float = 3e-2
    max_steps: int = 900
    min_steps: int = 50
    tol: float = 1e-3
    patience: int = 30
    # hardkuma gate
    l0_target: float = 0.1
    controller: ControllerConfig = ControllerConfig.preset("explain")
    gate: GateConfig = GateConfig.preset("rationale")
    seed: int = 0

    def __post_init__(self):
        if self.parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {self.parameterization!r}")
        if self.gate_type not in GATE_TYPES:
            raise ValueError(f"gate_type must be one of {GATE_TYPES}, got {self.gate_type!r}")
        if not isinstance(self.gate, GateConfig):
            raise TypeError(f"gate must be a GateConfig (e.g. GateConfig.preset('rationale')), got {self.gate!r}; "
                            f"the sigmoid / hardkuma choice is gate_type")
        if not isinstance(self.controller, ControllerConfig):
            raise TypeError(f"controller must be a ControllerConfig (e.g. ControllerConfig.preset('explain')), "
                            f"got {self.controller!r}")
        if not 0.0 <= self.l0_target <= 1.0:
            raise ValueError(f"l0_target must be in [0, 1], got {self.l0_target}")
        for name in ("force_zero", "force_one"):
            v = getattr(self, name)
            if not 0.0 <= v < 0.5:
                raise ValueError(f"{name} must be in [0, 0.5), got {v}")
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if not 0 < self.init_sigma < self.sigma_max:
            raise ValueError(f"need 0 < init_sigma < sigma_max, got {self.init_sigma}, {self.sigma_max}")
        hardkuma = self.gate_type == "hardkuma"
        if self.init_weight is None:
            self.init_weight = 0.0 if hardkuma else 1.2
        if self.init_logit is None:
            self.init_logit = 0.0 if hardkuma else 3.0


@dataclass
class MaskLossTerms:
    """Per-input loss terms ``(B,)``; ``total`` is their weighted sum."""

    keep_nll: torch.Tensor  # -log p(y | keep)
    complement_nll: torch.Tensor  # -log(1 - p(y | complement))
    size: torch.Tensor  # (mean m)^2, or the Lagrangian L0 penalty for hardkuma
    sigma: torch.Tensor  # mean(-log σ) (0 for "logit")
    tv: torch.Tensor  # total variation (0 unless positions are a grid and tv_weight > 0)
    total: torch.Tensor


@dataclass
class MaskResult:
    """``mask`` ``(B, T)`` in [0, 1] (0 on padding), the final parameters' mask without noise or
    forced entries; ``target`` ``(B,)``; ``p_keep`` / ``p_complement`` ``(B,)`` the target's
    probability with the final mask; ``steps`` taken; ``history`` of the mean loss per step."""

    mask: torch.Tensor
    target: torch.Tensor
    p_keep: torch.Tensor
    p_complement: torch.Tensor
    steps: int
    history: List[float]


# ---------------------------------------------------------------------------------------- positions
def sequence_positions(length: int, device=None) -> torch.Tensor:
    """Token coordinates ``(T, 1)``: ``0, 1, ..., T-1``."""
    return torch.arange(length, dtype=torch.float32, device=device).unsqueeze(-1)


def image_positions(height: int, width: int, device=None) -> torch.Tensor:
    """Pixel coordinates ``(H*W, 2)`` in row-major order: ``(row, col)``."""
    r = torch.arange(height, dtype=torch.float32, device=device)
    c = torch.arange(width, dtype=torch.float32, device=device)
    return torch.cartesian_prod(r, c)


# ---------------------------------------------------------------------------------------- masks
def kernel_logits(weight: torch.Tensor, log_sigma: torch.Tensor, positions: torch.Tensor,
                  valid: torch.Tensor) -> torch.Tensor:
    r"""``s_i = Σ_{j valid} w_j exp(-|p_i - p_j|^2 / σ_j^2)``.

    ``weight``, ``log_sigma``: ``(B, T)``; ``positions``: ``(T, P)``; ``valid``: ``(B, T)`` bool.
    Returns ``(B, T)``.  Memory ``O(B T^2)``.
    """
    d2 = torch.cdist(positions, positions).pow(2)  # (T_i, T_j)
    inv_s2 = torch.exp(-2.0 * log_sigma).unsqueeze(1)  # (B, 1, T_j)
    kernel = torch.exp(-d2.unsqueeze(0) * inv_s2)  # (B, T_i, T_j)
    w = (weight * valid.to(weight.dtype)).unsqueeze(-1)  # (B, T_j, 1)
    return torch.bmm(kernel, w).squeeze(-1)


class KernelMask(nn.Module):
    """Gaussian-kernel span parameterisation (see module docstring); ``forward() -> scores (B, T)``."""

    def __init__(self, batch: int, length: int, positions: torch.Tensor, valid: torch.Tensor,
                 init_weight: float, init_sigma: float, sigma_max: float):
        super().__init__()
        self.sigma_max = float(sigma_max)
        frac = init_sigma / sigma_max
        self.weight = nn.Parameter(torch.full((batch, length), float(init_weight), device=valid.device))
        self.sigma_score = nn.Parameter(torch.full((batch, length), math.log(frac / (1 - frac)), device=valid.device))
        self.register_buffer("positions", positions.to(valid.device))
        self.register_buffer("valid", valid)

    def log_sigma(self) -> torch.Tensor:
        """``log σ = log σ_max + log sigmoid(s)``, ``(B, T)``."""
        return math.log(self.sigma_max) + F.logsigmoid(self.sigma_score)

    def forward(self) -> torch.Tensor:
        return kernel_logits(self.weight, self.log_sigma(), self.positions, self.valid)

    def sigma_penalty(self) -> torch.Tensor:
        """``mean_j(-log σ_j)`` over valid positions, ``(B,)``."""
        return masked_mean(-self.log_sigma(), self.valid, -1)


class LogitMask(nn.Module):
    """``forward() -> θ (B, T)``, one free logit per position."""

    def __init__(self, batch: int, length: int, valid: torch.Tensor, init_logit: float):
        super().__init__()
        self.logit = nn.Parameter(torch.full((batch, length), float(init_logit), device=valid.device))
        self.register_buffer("valid", valid)

    def forward(self) -> torch.Tensor:
        return self.logit

    def sigma_penalty(self) -> torch.Tensor:
        return torch.zeros(self.logit.size(0), device=self.logit.device)


class MaskGates(nn.Module):
    r"""The masks of a batch as a function of their free parameters, and (HardKuma) the
    per-input constraints.

    - ``gate_type="sigmoid"``: ``m = sigmoid(s)``, size penalty ``λ_w (mean_valid m)^2``;
    - ``gate_type="hardkuma"``: ``m ~ HardKuma(gate.shape(s), gate.shape(s^b), gate.support)``,
      size penalty ``stopgrad(λ_i) (L0_i - target)`` from one controller per input (a shared
      multiplier would couple the inputs of a batch), with ``L0_i = mean_valid (1 - P(m = 0))``.

    ``s`` ``(B, T)`` is the parameterisation's score (:class:`KernelMask` or :class:`LogitMask`),
    ``s^b`` ``(B, T)`` a free score (init 0).
    """

    def __init__(self, config: MaskConfig, positions: torch.Tensor, valid: torch.Tensor):
        super().__init__()
        bsz, length = valid.shape
        if config.parameterization == "kernel":
            self.scores = KernelMask(bsz, length, positions, valid, config.init_weight, config.init_sigma,
                                     config.sigma_max)
        else:
            self.scores = LogitMask(bsz, length, valid, config.init_logit)
        self.config = config
        self.hardkuma = config.gate_type == "hardkuma"
        self.register_buffer("valid", valid)
        self.score_b: Optional[nn.Parameter] = None
        self.constraints: Optional[nn.ModuleList] = None
        if self.hardkuma:
            self.score_b = nn.Parameter(torch.zeros(bsz, length, device=valid.device))
            self.constraints = nn.ModuleList(
                config.controller.build(config.l0_target, valid_range=(0.0, 1.0)) for _ in range(bsz)
            ).to(valid.device)

    def trainable(self) -> List[nn.Parameter]:
        """The parameters Adam updates (the scores', then ``s^b``)."""
        return list(self.scores.parameters()) + ([self.score_b] if self.hardkuma else [])

    def distribution(self, score: torch.Tensor) -> HardKumaraswamy:
        gate = self.config.gate
        return HardKumaraswamy(gate.shape(score), gate.shape(self.score_b), support=gate.support)

    def sample(self, generator: torch.Generator, step: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(m (B, T), size penalty (B,))`` for training step ``step`` (0-based): a
        reparameterised sample for HardKuma gates (which also updates the controllers)."""
        score = self.scores()
        if not self.hardkuma:
            m = torch.sigmoid(score)
            return m, self.config.lambda_w * masked_mean(m, self.valid, -1).pow(2)
        dist = self.distribution(score)
        m = dist.rsample(generator=generator)
        return m, self.l0_penalty(dist, step)

    def l0_penalty(self, dist: HardKumaraswamy, step: int) -> torch.Tensor:
        """``(B,)``: each input's constraint on its expected L0 (0 during ``controller.warmup``);
        the controller tracks the expected L0 or (``observe="decoded"``) the deterministic mask's
        non-zero rate."""
        l0 = expected_l0(dist, self.valid, -1)
        if step < self.config.controller.warmup:
            return torch.zeros_like(l0)
        observed = [None] * len(l0)
        if self.config.controller.observe == "decoded":
            observed = nonzero_rate(dist.deterministic(), self.valid, -1).unbind()
        return torch.stack([c(l0[i], observed[i]) for i, c in enumerate(self.constraints)])

    @torch.no_grad()
    def final(self) -> torch.Tensor:
        """The result's mask ``(B, T)`` (0 on padding): ``sigmoid(s)`` or ``deterministic()``."""
        score = self.scores()
        m = torch.sigmoid(score) if not self.hardkuma else self.distribution(score).deterministic()
        return m * self.valid.to(m.dtype)

    def sigma_penalty(self) -> torch.Tensor:
        return self.scores.sigma_penalty()


def blend(emb: torch.Tensor, baseline: torch.Tensor, mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(keep, complement)``: ``m ⊙ emb + (1 - m) ⊙ baseline`` and ``(1 - m) ⊙ emb + m ⊙ baseline``
    for ``mask`` ``(B, T)`` (0 on padding), ``emb`` ``(B, T, D)``."""
    m = mask.unsqueeze(-1)
    return m * emb + (1 - m) * baseline, (1 - m) * emb + m * baseline


def target_probability(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``softmax(logits)[b, target_b]``, ``(B,)``."""
    return torch.softmax(logits, -1).gather(-1, target.unsqueeze(-1)).squeeze(-1)


def total_variation(mask: torch.Tensor, shape: Tuple[int, int]) -> torch.Tensor:
    """Anisotropic total variation of ``mask`` ``(B, H*W)`` seen as ``(B, H, W)``: mean over
    neighbour pairs of ``|m_a - m_b|`` (vertical and horizontal), ``(B,)``."""
    h, w = shape
    m = mask.view(mask.size(0), h, w)
    dv = (m[:, 1:, :] - m[:, :-1, :]).abs().flatten(1)
    dh = (m[:, :, 1:] - m[:, :, :-1]).abs().flatten(1)
    return torch.cat([dv, dh], dim=1).mean(1)


# ---------------------------------------------------------------------------------------- loss
def mask_loss_terms(model: ClassifierFn, emb: torch.Tensor, baseline: torch.Tensor, valid: torch.Tensor,
                    mask: torch.Tensor, target: torch.Tensor, size_penalty: torch.Tensor,
                    sigma_penalty: torch.Tensor, config: MaskConfig,
                    grid: Optional[Tuple[int, int]] = None) -> MaskLossTerms:
    r"""The per-input loss for a given mask (no noise / forcing here: the caller applies them).

    ``emb``: ``(B, T, D)``; ``baseline``: broadcastable to it; ``valid``/``mask``: ``(B, T)``;
    ``target``: ``(B,)`` long; ``size_penalty``: ``(B,)`` (already ``(mean m)^2`` or the L0
    penalty); ``sigma_penalty``: ``(B,)`` ``mean(-log σ)``.  ``-log(1 - p)`` is computed as
    ``-log(Σ_{c != y} p_c)`` via logsumexp, so it is finite even when ``p(y) -> 1``.
    """
    keep, comp = blend(emb, baseline, mask * valid.to(mask.dtype))
    logp_keep = F.log_softmax(model(keep, valid), dim=-1)
    logp_comp = F.log_softmax(model(comp, valid), dim=-1)
    keep_nll = -logp_keep.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    others = torch.ones_like(logp_comp, dtype=torch.bool).scatter(-1, target.unsqueeze(-1), False)
    comp_nll = -torch.logsumexp(logp_comp.masked_fill(~others, float("-inf")), dim=-1)
    tv = total_variation(mask, grid) if (grid is not None and config.tv_weight > 0) else torch.zeros_like(keep_nll)
    total = (keep_nll + comp_nll + size_penalty + config.lambda_sigma * sigma_penalty
             + config.tv_weight * tv)
    return MaskLossTerms(keep_nll, comp_nll, size_penalty, sigma_penalty, tv, total)


# ---------------------------------------------------------------------------------------- optimiser
@torch.no_grad()
def _predict(model: ClassifierFn, emb: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    return model(emb, valid).argmax(-1)


def _force(mask: torch.Tensor, config: MaskConfig, generator: torch.Generator) -> torch.Tensor:
    """Random ``force_zero`` of the entries set to 0, ``force_one`` set to 1 (straight replacement:
    no gradient through forced entries)."""
    if config.force_zero <= 0 and config.force_one <= 0:
        return mask
    u = torch.rand(mask.shape, generator=generator, device="cpu").to(mask.device)
    out = torch.where(u < config.force_zero, torch.zeros_like(mask), mask)
    return torch.where(u >= 1.0 - config.force_one, torch.ones_like(mask), out)


def _check_inputs(emb: torch.Tensor, valid: torch.Tensor, positions: Optional[torch.Tensor],
                  grid: Optional[Tuple[int, int]]) -> None:
    if emb.dim() != 3:
        raise ValueError(f"emb must be (B, T, D), got shape {tuple(emb.shape)}")
    if valid.shape != emb.shape[:2] or valid.dtype != torch.bool:
        raise ValueError(f"valid must be a bool (B, T) = {tuple(emb.shape[:2])} tensor, got "
                         f"{valid.dtype} {tuple(valid.shape)}")
    if grid is not None and grid[0] * grid[1] != emb.size(1):
        raise ValueError(f"grid {grid} does not match T = {emb.size(1)}")
    if positions is not None and positions.shape[0] != emb.size(1):
        raise ValueError(f"positions has {positions.shape[0]} rows, expected T = {emb.size(1)}")


@dataclass
class _Problem:
    """The frozen inputs of one optimisation (see :func:`optimise_masks`)."""

    model: ClassifierFn
    emb: torch.Tensor  # (B, T, D), detached
    baseline: torch.Tensor  # broadcastable to emb
    valid: torch.Tensor  # (B, T) bool
    target: torch.Tensor  # (B,) long
    grid: Optional[Tuple[int, int]]


class _Convergence:
    """Stop rule: every input's loss moving average ``e <- 0.9 e + 0.1 loss`` changed by less than
    ``tol`` (relative) on ``patience`` consecutive steps, and at least ``min_steps`` steps."""

    def __init__(self, config: MaskConfig, bsz: int, device):
        self.config = config
        self.ema: Optional[torch.Tensor] = None
        self.calm_steps = torch.zeros(bsz, dtype=torch.long, device=device)

    def update(self, loss: torch.Tensor, steps: int) -> bool:
        """Record the per-input ``loss`` ``(B,)`` of step ``steps`` (1-based); True: stop."""
        if self.ema is None:
            self.ema = loss.clone()
            return False
        new = 0.9 * self.ema + 0.1 * loss
        rel = (new - self.ema).abs() / self.ema.abs().clamp_min(1e-6)
        self.ema = new
        self.calm_steps = torch.where(rel < self.config.tol, self.calm_steps + 1, torch.zeros_like(self.calm_steps))
        return steps >= self.config.min_steps and bool((self.calm_steps >= self.config.patience).all())


def _optimisation_step(problem: _Problem, gates: MaskGates, optim: torch.optim.Optimizer, config: MaskConfig,
                       gen: torch.Generator, noise_gen: torch.Generator, step: int) -> torch.Tensor:
    """One Adam step on the summed per-input losses with a sampled, forced mask and noisy
    embeddings; returns the per-input losses ``(B,)`` (detached)."""
    m, size_pen = gates.sample(gen, step)
    m = _force(m, config, gen)
    emb = problem.emb
    if config.noise_std > 0:
        emb = emb + config.noise_std * torch.randn(emb.shape, generator=noise_gen, device=emb.device)
    terms = mask_loss_terms(problem.model, emb, problem.baseline, problem.valid, m, problem.target, size_pen,
                            gates.sigma_penalty(), config, problem.grid)
    optim.zero_grad(set_to_none=True)
    terms.total.sum().backward()
    optim.step()
    return terms.total.detach()


@torch.no_grad()
def _result(problem: _Problem, gates: MaskGates, steps: int, history: List[float]) -> MaskResult:
    """The final mask (no noise, no forcing) and the target's probability with it."""
    m = gates.final()
    keep, comp = blend(problem.emb, problem.baseline, m)
    p_keep = target_probability(problem.model(keep, problem.valid), problem.target)
    p_comp = target_probability(problem.model(comp, problem.valid), problem.target)
    return MaskResult(m.detach(), problem.target, p_keep, p_comp, steps, history)


def optimise_masks(model: ClassifierFn, emb: torch.Tensor, valid: torch.Tensor,
                   target: Optional[torch.Tensor] = None, baseline: Optional[torch.Tensor] = None,
                   config: Optional[MaskConfig] = None, positions: Optional[torch.Tensor] = None,
                   grid: Optional[Tuple[int, int]] = None, progress: bool = False) -> MaskResult:
    r"""Optimise one mask per input, all inputs at once.

    Args:
        model: frozen classifier ``f(emb, valid) -> logits`` (put it in eval mode; its parameters
            are not updated, but gradients are not switched off on them either: the caller's model
            keeps its ``requires_grad`` flags and only ``.grad`` of the mask parameters is used).
        emb: ``(B, T, D)`` input embeddings / features (detached inside).
        valid: ``(B, T)`` bool, True = real position.
        target: ``(B,)`` long class to explain; default the model's prediction on ``emb``.
        baseline: what a masked-out position becomes, broadcastable to ``emb`` (default zeros;
            for text pass the padding token's embedding).
        positions: ``(T, P)`` coordinates for the kernel (default :func:`sequence_positions`).
        grid: ``(H, W)`` with ``H * W == T`` to enable the total-variation term.
    """
    config = config or MaskConfig()
    _check_inputs(emb, valid, positions, grid)
    emb = emb.detach()
    device = emb.device
    baseline = torch.zeros((), device=device) if baseline is None else baseline.detach().to(device)
    target = (_predict(model, emb, valid) if target is None else target).to(device).long()
    problem = _Problem(model, emb, baseline, valid, target, grid)
    positions = sequence_positions(emb.size(1), device) if positions is None else positions
    gates = MaskGates(config, positions, valid)
    optim = torch.optim.Adam(gates.trainable(), lr=config.lr)
    gen = torch.Generator().manual_seed(config.seed)
    noise_gen = torch.Generator(device=device).manual_seed(config.seed + 1)
    convergence = _Convergence(config, emb.size(0), device)
    history: List[float] = []
    steps = 0
    for step in progress_bar(range(config.max_steps), progress, desc="mask"):
        steps = step + 1
        loss = _optimisation_step(problem, gates, optim, config, gen, noise_gen, step)
        history.append(float(loss.mean()))
        if convergence.update(loss, steps):
            break
    return _result(problem, gates, steps, history)


# ---------------------------------------------------------------------------------------- chunks
def split_chunks(emb: torch.Tensor, valid: torch.Tensor, chunk_size: int
                 ) -> Tuple[torch.Tensor, torch.Tensor, List[Tuple[int, int, int]]]:
    """Cut each input into consecutive pieces of at most ``chunk_size`` valid positions.

    Returns ``(chunk_emb (N, chunk_size, D), chunk_valid (N, chunk_size), index)`` where
    ``index[n] = (row, start, end)`` says which input and positions piece ``n`` came from.
    Inputs must be left-aligned (valid positions first), as the readers produce them.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    lengths = valid.sum(1).tolist()
    index = [(row, s, min(s + chunk_size, n)) for row, n in enumerate(lengths) for s in range(0, max(n, 1), chunk_size)]
    out = emb.new_zeros(len(index), chunk_size, emb.size(-1))
    out_valid = torch.zeros(len(index), chunk_size, dtype=torch.bool, device=valid.device)
    for k, (row, s, e) in enumerate(index):
        out[k, : e - s] = emb[row, s:e]
        out_valid[k, : e - s] = valid[row, s:e]
    return out, out_valid, index


def merge_chunks(chunk_values: torch.Tensor, index: Sequence[Tuple[int, int, int]], shape: Tuple[int, int]
                 ) -> torch.Tensor:
    """Inverse of :func:`split_chunks` for per-position values ``(N, chunk_size)`` -> ``shape``."""
    out = chunk_values.new_zeros(shape)
    for k, (row, s, e) in enumerate(index):
        out[row, s:e] = chunk_values[k, : e - s]
    return out
