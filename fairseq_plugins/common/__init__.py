"""Shared fairseq machinery of the plugin (no task/model of its own).

- :mod:`.lagrangian_l0`: :class:`LagrangianL0Config` (``--l0-target`` and friends),
  :func:`controller_from_cfg` (``--l0-preset`` + overrides -> ``ControllerConfig``),
  :class:`LagrangianL0` (penalty + logging from ``collect_attention_stats()``) and the base class
  :class:`LagrangianL0Criterion` that the NLI and translation criteria derive from.
"""
from .lagrangian_l0 import L0_LOG_KEYS, LagrangianL0, LagrangianL0Config, LagrangianL0Criterion, controller_from_cfg

__all__ = ["L0_LOG_KEYS", "LagrangianL0", "LagrangianL0Config", "LagrangianL0Criterion", "controller_from_cfg"]
