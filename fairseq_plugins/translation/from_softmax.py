r"""Turn a trained softmax fairseq ``transformer`` checkpoint into a ``transformer_hardkuma`` one.

``transformer_hardkuma`` has exactly the parameters of fairseq's transformer (its HardKuma
attention splits each head's query/key dimensions into the a- and b-scores, see
:mod:`fairseq_plugins.translation.hardkuma_multihead_attention`), so the weights are copied as
they are; the saved model config gets ``arch = transformer_hardkuma`` and the ``--hardkuma-*``
options.  The optimizer state, the meters and the data-loader position are dropped and the update
count is 0, so the result is a fresh starting point::

    python -m fairseq_plugins.translation.from_softmax softmax/checkpoint_best.pt hk/init.pt \
        --hardkuma-attention cross --hardkuma-normalize softmax
    fairseq-train data-bin --user-dir fairseq_plugins --arch transformer_hardkuma ... \
        --restore-file hk/init.pt --reset-optimizer --reset-dataloader --reset-meters \
        --reset-lr-scheduler

Like :func:`hardkuma_attention.convert`, the attention pattern of the softmax model is not
preserved by the split parameterisation (half of each head's q.k becomes the "close" score):
fine-tune.  The output is written to a temporary file and renamed; an existing output is refused.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence, Tuple

import torch

from hardkuma_attention.config import DEFAULT_AB_RANGE, NORMALIZE_MODES
from hardkuma_attention.distributions import DEFAULT_SUPPORT

from .model import ATTENTION_CHOICES, HardKumaOptions, gate_from_args

__all__ = ["convert_checkpoint", "softmax_to_hardkuma_state", "main"]

SOFTMAX_ARCH_PREFIX = "transformer"
HARDKUMA_MODEL = "transformer_hardkuma"


def _model_cfg(state):
    cfg = state.get("cfg")
    if cfg is None or cfg.get("model") is None:
        raise ValueError("no model config in the checkpoint (cfg.model); is it a fairseq checkpoint?")
    return cfg["model"]


def _get(obj, name):
    return obj.get(name) if hasattr(obj, "get") and not isinstance(obj, argparse.Namespace) else getattr(obj, name, None)


def _set(obj, name, value):
    if isinstance(obj, argparse.Namespace):
        setattr(obj, name, value)
    else:
        from omegaconf import open_dict

        with open_dict(obj):
            obj[name] = value


def softmax_to_hardkuma_state(state: dict, options: HardKumaOptions) -> dict:
    """A fairseq checkpoint ``state`` (as ``checkpoint_utils.load_checkpoint_to_cpu`` returns it) of
    a softmax transformer -> the state of a ``transformer_hardkuma`` with the same weights.

    The model config's ``_name``/``arch`` become ``transformer_hardkuma`` (a ``transformer_*`` arch
    keeps its sizes, which are stored in the config); ``hardkuma_*`` options are set from
    ``options``.  Raises ``ValueError`` for a model that is not a softmax transformer.
    """
    model_cfg = _model_cfg(state)
    name = _get(model_cfg, "_name") or _get(model_cfg, "arch")
    if not isinstance(name, str) or not name.startswith(SOFTMAX_ARCH_PREFIX):
        raise ValueError(f"model {name!r} is not a fairseq transformer")
    if name.startswith(HARDKUMA_MODEL) or _get(model_cfg, "hardkuma_attention") is not None:
        raise ValueError(f"model {name!r} is already a transformer_hardkuma")
    for field, value in (
        ("_name", HARDKUMA_MODEL),
        ("arch", HARDKUMA_MODEL),
        ("hardkuma_attention", options.attention),
        ("hardkuma_normalize", options.gate.normalize),
        ("hardkuma_support_left", float(options.gate.support[0])),
        ("hardkuma_support_right", float(options.gate.support[1])),
        ("hardkuma_ab_max", float(options.gate.ab_range[1])),
    ):
        _set(model_cfg, field, value)
    out = {k: v for k, v in state.items() if k not in ("last_optimizer_state", "optimizer_history", "extra_state")}
    history = state.get("optimizer_history") or [{}]
    # a fresh start: no optimizer state, update 0, first epoch (fairseq's loader needs the keys)
    out["optimizer_history"] = [{**history[-1], "num_updates": 0}]
    out["extra_state"] = {"train_iterator": {"epoch": 1, "iterations_in_epoch": 0}}
    return out


def convert_checkpoint(src: str, dst: str, options: Optional[HardKumaOptions] = None) -> str:
    """Read the softmax checkpoint ``src``, write the ``transformer_hardkuma`` one to ``dst``
    (temporary file, then rename); returns ``dst``.  Refuses an existing ``dst``."""
    from fairseq import checkpoint_utils

    if not os.path.isfile(src):
        raise FileNotFoundError(f"{src}: no such checkpoint")
    if os.path.exists(dst):
        raise FileExistsError(f"{dst} exists; not overwriting")
    state = checkpoint_utils.load_checkpoint_to_cpu(src)
    new = softmax_to_hardkuma_state(state, options or HardKumaOptions())
    tmp = f"{dst}.tmp{os.getpid()}"
    try:
        torch.save(new, tmp)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dst


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m fairseq_plugins.translation.from_softmax",
        description="softmax fairseq transformer checkpoint -> transformer_hardkuma checkpoint (same weights)",
    )
    p.add_argument("src", help="trained softmax checkpoint (arch transformer*)")
    p.add_argument("dst", help="output checkpoint (must not exist)")
    p.add_argument("--hardkuma-attention", choices=ATTENTION_CHOICES, default="cross")
    p.add_argument("--hardkuma-normalize", choices=NORMALIZE_MODES, default="softmax")
    p.add_argument("--hardkuma-support-left", type=float, default=DEFAULT_SUPPORT[0])
    p.add_argument("--hardkuma-support-right", type=float, default=DEFAULT_SUPPORT[1])
    p.add_argument("--hardkuma-ab-max", type=float, default=DEFAULT_AB_RANGE[1])
    return p


def _options(args) -> Tuple[Optional[HardKumaOptions], Optional[str]]:
    if not args.hardkuma_support_left < 0.0 or not args.hardkuma_support_right > 1.0:
        return None, "--hardkuma-support-left must be < 0 and --hardkuma-support-right > 1"
    if not args.hardkuma_ab_max > DEFAULT_AB_RANGE[0]:
        return None, f"--hardkuma-ab-max must be > {DEFAULT_AB_RANGE[0]}"
    return HardKumaOptions(attention=args.hardkuma_attention, gate=gate_from_args(args)), None


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    options, error = _options(args)
    if error is None:
        if not os.path.isfile(args.src):
            error = f"{args.src}: no such checkpoint"
        elif os.path.exists(args.dst):
            error = f"{args.dst} exists; not overwriting"
    if error is None:
        try:
            convert_checkpoint(args.src, args.dst, options)
        except (ValueError, KeyError) as e:
            error = f"{args.src}: {e}"
    if error is not None:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.dst} (arch {HARDKUMA_MODEL}, --hardkuma-attention {options.attention})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
