r"""Reusable Lagrangian L0 machinery for fairseq criteria over HardKuma attention.

A criterion that wants "task loss + Lagrangian constraint on the expected L0 of the HardKuma
attention cells" derives from :class:`LagrangianL0Criterion` (or holds a :class:`LagrangianL0`
itself) and does three things::

    net_output, stats = self.forward_collecting_stats(model, sample["net_input"])
    task_loss = ...                                 # summed over the batch, as fairseq expects
    loss = self.add_l0_penalty(task_loss, stats, sample_size, logging_output)

and in ``reduce_metrics`` calls ``LagrangianL0.reduce_metrics(logging_outputs)``.

The statistics come from :func:`hardkuma_attention.collect_attention_stats` (every HardKuma
attention call inside the forward pass reports an :class:`~hardkuma_attention.AttentionStats`);
nothing is cached on the model.  With ``--l0-target t`` the penalty is (see
:class:`hardkuma_attention.LagrangianConstraint`)::

    measured = sum_cells P(z != 0) / #cells         (expected L0 of the constrained keys)
    m       <- alpha m + (1 - alpha) (observed - t)  (observed: measured, or the non-zero rate)
    penalty  = sample_size * stopgrad(lambda + damping m) * (measured - t)

The controller (``alpha``, ``lr``, the multiplier's bounds, ``equality``, ``damping``,
``observe``) is one :class:`hardkuma_attention.config.ControllerConfig`: ``--l0-preset NAME``
(default ``paper``: Bastings et al. 2019, damping 0, observe ``expected``) with each
``--l0-lagrange-lr``, ``--l0-lagrange-alpha``, ``--l0-lambda-init/min/max``, ``--l0-equality``,
``--l0-damping``, ``--l0-observe`` that is given replacing the preset's field
(:func:`controller_from_cfg`).  ``--l0-observe decoded`` tracks ``AttentionStats.nonzero_rate``,
the fraction of exactly non-zero weights of the same forward pass (in training: of the sampled
gates; the core reports no deterministic-gate count during training, that would need a second
pass), a proxy Lagrangian as in the rationale trainer; the gradient stays that of ``measured``.

multiplied by ``sample_size`` because fairseq divides the summed loss by ``sample_size`` before
the backward pass, so the per-unit objective is ``task_loss / sample_size + lambda * c_hat``.
The multiplier is updated only when the criterion is in training mode (fairseq puts it in eval
mode for validation), so validation never moves it.

Logged metrics (train and valid, weighted over the log interval):
    ``l0``       expected fraction of non-zero attention cells, ``mean P(z != 0)``;
    ``nz``       measured fraction of cells whose weight is exactly non-zero (eval: deterministic gates);
    ``lambda``   the Lagrange multiplier (only when a target is set);
    ``l0_<key>``, ``nz_<key>`` the same per ``stats_key`` (e.g. ``cross``) when the attention
    modules label their stats with more than one key.

Checkpointing: fairseq saves a criterion's ``state_dict`` only when it has parameters
(``fairseq.utils.has_parameters``), so the criterion carries one *empty* parameter
(``l0_state_anchor``, shape ``(0,)``; no optimizer can change it).  In one process it is frozen, as
the older 0-d anchor was, so the optimizer's parameter list is unchanged and older checkpoints
(their 0-d anchor is ignored on load) resume with their optimizer state.  Under
``torch.distributed`` with more than one rank it requires a gradient and enters the training loss
as ``anchor.sum()`` (an exact 0): with ``--ddp-backend pytorch_ddp`` fairseq wraps a criterion that
has parameters in ``DistributedDataParallel``, which refuses a module without a trainable
parameter and expects a gradient for each one.  The optimizer then holds one more (empty)
parameter, so a resume that changes between one and several processes needs ``--reset-optimizer``.
The multiplier, its moving average and its update count are float32 buffers of the inner
``LagrangianConstraint``: they are saved in ``checkpoint_*.pt`` under ``criterion``, restored on
resume, and stay float32 under ``--fp16`` (fairseq calls ``criterion.half()``).  ``fairseq-validate``
builds a fresh criterion, so the ``lambda`` it logs is the initial one (the other metrics do not
depend on it).

Data-parallel training (``torchrun ... -m fairseq_plugins.launch``, see :mod:`fairseq_plugins.launch`):
the multiplier update uses the global expected L0: every rank hands its expected L0 and its cell
count to the constraint (``constraint(l0, count=cells)``), which all-reduces ``(l0 * cells, cells)`` (:class:`hardkuma_attention.LagrangianConstraint`), so
``lambda`` is bit-identical on all ranks after every micro-batch (also with ``--update-freq``: one
all-reduce per micro-batch, and fairseq gives every rank the same number).  A rank without
constrained cells joins with zeros.  fairseq sums the logging outputs of all ranks, so the logged
``l0``/``nz`` are global and ``lambda`` is the (common) value.  Rank 0 writes the checkpoints and
fairseq broadcasts the loaded state, so a resume gives every rank the same ``lambda``.  Known
approximation: a dummy batch (fairseq pads a rank that runs out of batches at the end of an epoch
with a copy of a real batch whose loss it multiplies by 0) enters the multiplier update like a real
batch; at most one per rank and epoch.  The criterion refuses to start when ``WORLD_SIZE`` in the
environment (torchrun) differs from the world size fairseq trains with (:func:`check_world_size`).
"""

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from fairseq.criterions import FairseqCriterion
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.logging import metrics
from torch import nn

from hardkuma_attention import AttentionStats, collect_attention_stats
from hardkuma_attention.config import CONTROLLER_PRESETS, OBSERVE_MODES, ControllerConfig

__all__ = [
    "LagrangianL0Config", "LagrangianL0", "LagrangianL0Criterion", "L0_LOG_KEYS", "check_world_size", "controller_from_cfg",
]

# Keys of the logging_output dict written by LagrangianL0 (summable across batches and workers).
L0_LOG_KEYS = ("l0_sum", "l0_cells", "l0_nonzero", "l0_lambda", "l0_lambda_n", "l0_penalty")


PRESET_CHOICES = ChoiceEnum(sorted(CONTROLLER_PRESETS))
OBSERVE_CHOICES = ChoiceEnum(list(OBSERVE_MODES))


@dataclass
class LagrangianL0Config(FairseqDataclass):
    """Command-line options of the L0 constraint; inherit from it in a criterion's config.

    The controller is ``ControllerConfig.preset(--l0-preset)`` with every controller flag that is
    given replacing its field (:func:`controller_from_cfg`); an unset flag (None) keeps the preset's
    value, so the defaults are the paper's (``--l0-preset paper``).
    """

    l0_target: Optional[float] = field(
        default=None,
        metadata={
            "help": "target expected fraction of non-zero HardKuma attention cells (e.g. 0.1); "
            "unset: no constraint (L0 metrics are still logged)"
        },
    )
    l0_keys: str = field(
        default="",
        metadata={
            "help": "comma-separated stats keys of the attentions to constrain (e.g. 'cross'); "
            "empty: all HardKuma attentions"
        },
    )
    l0_preset: PRESET_CHOICES = field(
        default="paper",
        metadata={"help": "controller preset (hardkuma_attention.config.CONTROLLER_PRESETS); the "
                  "--l0-* controller flags below override its fields"},
    )
    l0_lagrange_lr: Optional[float] = field(
        default=None, metadata={"help": "step size eta of the multiplier update (default: the preset's; paper 0.01)"}
    )
    l0_lagrange_alpha: Optional[float] = field(
        default=None, metadata={"help": "moving-average decay of the constraint (default: the preset's; paper 0.99)"}
    )
    l0_lambda_init: Optional[float] = field(
        default=None, metadata={"help": "initial multiplier (default: the preset's; paper 1e-4)"}
    )
    l0_lambda_min: Optional[float] = field(
        default=None, metadata={"help": "lower bound of the multiplier (default: the preset's; paper 1e-12)"}
    )
    l0_lambda_max: Optional[float] = field(
        default=None, metadata={"help": "upper bound of the multiplier (default: the preset's; paper 5)"}
    )
    l0_equality: Optional[bool] = field(
        default=None,
        metadata={
            "help": "drive the expected L0 to --l0-target from both sides (lambda may turn negative) "
            "instead of only keeping it below (default: the preset's; paper: off)"
        },
    )
    l0_damping: Optional[float] = field(
        default=None,
        metadata={"help": "proportional term d >= 0 of the penalty stopgrad(lambda + d m) (default: the "
                  "preset's; paper 0)"},
    )
    l0_observe: Optional[OBSERVE_CHOICES] = field(
        default=None,
        metadata={"help": "what the multiplier tracks: expected (the expected L0, the paper) or decoded "
                  "(the measured fraction of exactly non-zero gates of the same forward pass; the "
                  "gradient still comes from the expected L0) (default: the preset's)"},
    )


# LagrangianL0Config field -> ControllerConfig field
_CONTROLLER_FLAGS = {
    "l0_lagrange_lr": "lr",
    "l0_lagrange_alpha": "alpha",
    "l0_lambda_init": "lambda_init",
    "l0_lambda_min": "lambda_min",
    "l0_lambda_max": "lambda_max",
    "l0_equality": "equality",
    "l0_damping": "damping",
    "l0_observe": "observe",
}


def controller_from_cfg(cfg: Any) -> ControllerConfig:
    """The controller of any object with :class:`LagrangianL0Config` fields (missing ones count
    as unset): ``ControllerConfig.preset(cfg.l0_preset).replace(<the flags that are set>)``."""
    preset = getattr(cfg, "l0_preset", None)
    overrides = {}
    for flag, name in _CONTROLLER_FLAGS.items():
        value = getattr(cfg, flag, None)
        if value is not None:
            overrides[name] = str(value) if name == "observe" else value
    return ControllerConfig.preset(str(preset) if preset is not None else "paper").replace(**overrides)


def _parse_keys(keys: str | Sequence[str] | None) -> Tuple[str, ...]:
    if keys is None:
        return ()
    if isinstance(keys, str):
        keys = keys.split(",")
    return tuple(k.strip() for k in keys if k.strip())


class LagrangianL0(nn.Module):
    """Penalty and logging for the expected L0 of HardKuma attention cells.

    Args:
        target: constraint level (fraction of cells); None: log only, no penalty.
        keys: stats keys whose cells are constrained (empty: all collected stats).
        controller: the :class:`~hardkuma_attention.config.ControllerConfig` (default: the
            paper's, ``ControllerConfig.preset("paper")``).  ``observe="decoded"``: the multiplier
            tracks the measured fraction of exactly non-zero weights of the same forward pass
            (``AttentionStats.nonzero_rate``: the sampled gates in training, the only non-zero count
            the core reports without a second, deterministic pass); the penalty's gradient is that
            of the expected L0.  ``warmup`` must be 0 (the criteria do not count updates).
    """

    def __init__(
        self,
        target: Optional[float] = None,
        keys: str | Sequence[str] | None = (),
        controller: Optional[ControllerConfig] = None,
    ):
        super().__init__()
        if target is not None and not 0.0 <= target <= 1.0:
            raise ValueError(f"--l0-target must be in [0, 1], got {target}")
        self.controller = ControllerConfig.preset("paper") if controller is None else controller
        if self.controller.warmup:
            raise ValueError(f"the fairseq L0 criteria have no constraint warmup, got warmup={self.controller.warmup}")
        self.target = target
        self.keys = _parse_keys(keys)
        self.constraint = self.controller.build(target) if target is not None else None

    @classmethod
    def from_cfg(cls, cfg: Any) -> "LagrangianL0":
        """Build from any config object with the :class:`LagrangianL0Config` fields."""
        return cls(target=cfg.l0_target, keys=cfg.l0_keys, controller=controller_from_cfg(cfg))

    @property
    def multiplier(self) -> Optional[float]:
        return None if self.constraint is None else self.constraint.multiplier

    def forward(
        self, stats: collect_attention_stats, sample_size: float
    ) -> Tuple[Optional[torch.Tensor], Dict[str, Any]]:
        """Return ``(penalty or None, logging entries)`` for the stats of one forward pass.

        The penalty (already multiplied by ``sample_size``) is returned only in training mode
        with a target set and HardKuma stats present; evaluation only logs.
        """
        log: Dict[str, Any] = {}
        everything = stats.total()
        if everything is not None:
            log.update(self._stat_entries(everything, ""))
            for key in stats.keys():
                log.update(self._stat_entries(stats.total(key), ":" + key))
        penalty = None
        if self.constraint is not None:
            constrained = stats.total(self.keys or None)
            if self.training:
                penalty = self._constraint_penalty(constrained, sample_size)
            if penalty is not None:
                log["l0_penalty"] = penalty.detach().float()
            if everything is not None:
                log["l0_lambda"] = self.constraint.lagrange_multiplier.detach().clone()
                log["l0_lambda_n"] = 1
        return penalty, log

    def _constraint_penalty(self, constrained: Optional[AttentionStats], sample_size: float):
        """Training step of the constraint: penalty (None without constrained cells).  Under
        ``torch.distributed`` the update all-reduces ``(l0_sum, cells)``; a rank without
        constrained stats still joins the collective with zeros."""
        if constrained is None:
            self.constraint.update_from_sums(0.0, 0.0)
            return None
        observed = constrained.nonzero_rate if self.controller.observe == "decoded" else None
        penalty = self.constraint(constrained.expected_l0, observed=observed, count=constrained.cells)
        return penalty * float(sample_size)

    @staticmethod
    def _stat_entries(total: AttentionStats, suffix: str) -> Dict[str, torch.Tensor]:
        return {
            "l0_sum" + suffix: total.l0_sum.detach().float(),
            "l0_cells" + suffix: total.cells.detach().float(),
            "l0_nonzero" + suffix: total.nonzero.detach().float(),
        }

    @staticmethod
    def reduce_metrics(logging_outputs: List[Dict[str, Any]]) -> None:
        """Log ``l0``, ``nz``, ``lambda`` (and per-key ``l0_<key>``, ``nz_<key>``) to fairseq metrics."""

        def total(key):
            return float(sum(_item(log.get(key, 0)) for log in logging_outputs))

        keyed = set()
        for log in logging_outputs:
            keyed.update(k[len("l0_cells"):] for k in log if k.startswith("l0_cells:"))
        # Per-key metrics only when they add information (more than one key).
        suffixes = [""] + (sorted(keyed) if len(keyed) > 1 else [])
        for suffix in suffixes:
            cells = total("l0_cells" + suffix)
            if cells <= 0:
                continue
            name = suffix[1:] if suffix else ""
            l0_name = f"l0_{name}" if name else "l0"
            nz_name = f"nz_{name}" if name else "nz"
            metrics.log_scalar(l0_name, total("l0_sum" + suffix) / cells, cells, round=4)
            metrics.log_scalar(nz_name, total("l0_nonzero" + suffix) / cells, cells, round=4)
        n_lambda = total("l0_lambda_n")
        if n_lambda > 0:
            metrics.log_scalar("lambda", total("l0_lambda") / n_lambda, n_lambda, round=6)
        if any("l0_penalty" in log for log in logging_outputs):
            metrics.log_scalar("l0_penalty", total("l0_penalty") / max(total("sample_size"), 1.0), round=4)


def check_world_size(environ=None) -> None:
    """Refuse a launch that would train ``WORLD_SIZE`` independent models.

    Under torchrun (``WORLD_SIZE`` set) fairseq-train without the right ``--distributed-*`` flags
    initialises no process group (or a smaller one) and each process trains alone, silently.
    Raises RuntimeError when ``WORLD_SIZE`` differs from the ``torch.distributed`` world size."""
    env = os.environ if environ is None else environ
    wanted = env.get("WORLD_SIZE")
    if wanted is None or not wanted.isdigit():
        return
    have = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    if int(wanted) != have:
        raise RuntimeError(
            f"WORLD_SIZE={wanted} in the environment (torchrun?) but fairseq trains with world size {have}: "
            f"that would be {wanted} independent trainings. Launch with "
            "`torchrun --nproc_per_node N -m fairseq_plugins.launch <fairseq-train args>`."
        )


def _item(x) -> float:
    return float(x.item()) if torch.is_tensor(x) else float(x)


class LagrangianL0Criterion(FairseqCriterion):
    """Base class of criteria that add the Lagrangian L0 penalty of HardKuma attention.

    Subclasses call :meth:`forward_collecting_stats` and :meth:`add_l0_penalty` in their
    ``forward`` and ``super().reduce_metrics`` (or ``LagrangianL0.reduce_metrics``) in theirs.
    ``l0_cfg`` is any object with the :class:`LagrangianL0Config` fields (the criterion's cfg).
    """

    def __init__(self, task, l0_cfg: Any):
        super().__init__(task)
        check_world_size()
        self.l0 = LagrangianL0.from_cfg(l0_cfg)
        # fairseq checkpoints a criterion's state only if it has a parameter, and pytorch_ddp
        # wraps it only if one requires a gradient: an empty one (see the module doc).
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        self.l0_state_anchor = nn.Parameter(torch.zeros(0), requires_grad=distributed)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "l0_state_anchor"
        if key in state_dict and state_dict[key].numel() != 0:  # 0-d anchor of older checkpoints
            state_dict[key] = self.l0_state_anchor.detach().clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @staticmethod
    def forward_collecting_stats(model, net_input: Dict[str, Any]):
        """Run ``model(**net_input)`` and return ``(net_output, collector)``."""
        with collect_attention_stats() as stats:
            net_output = model(**net_input)
        return net_output, stats

    def add_l0_penalty(
        self,
        loss: torch.Tensor,
        stats: collect_attention_stats,
        sample_size: float,
        logging_output: Dict[str, Any],
    ) -> torch.Tensor:
        """Return ``loss + penalty`` (penalty only in training) and add the L0 entries to
        ``logging_output``.  Keep ``logging_output["loss"]`` the task loss if you want train and
        valid losses comparable (the penalty is logged as ``l0_penalty``)."""
        penalty, log = self.l0(stats, sample_size)
        logging_output.update(log)
        if self.training and self.l0_state_anchor.requires_grad:  # exact 0, for DDP (module doc)
            loss = loss + self.l0_state_anchor.sum().to(loss.dtype)
        if penalty is None:
            return loss
        return loss + penalty.to(loss.dtype)

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        LagrangianL0.reduce_metrics(logging_outputs)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
