r"""The command line of the package: ``hardkuma-rationale`` (the top layer; nothing imports it).

Layers: core <- :mod:`hardkuma_attention.rationale` <-
:mod:`hardkuma_attention.explain` <- this package.  Every argparse parser, ``cmd_*`` function,
exit code and output-folder check lives here; the libraries below take plain arguments.

Commands::

    hardkuma-rationale train | evaluate | predict | plot | table ...   (:mod:`.rationale`)
    hardkuma-rationale explain decoy-digits | mask | rrr-eval ...      (:mod:`.explain`)

``python -m hardkuma_attention.rationale ...`` and ``python -m hardkuma_attention.explain ...``
are the same commands (the latter with ``explain`` implied).  Errors are one line
``<prog>: error: <message>``, exit code 2, no traceback (``--debug``: the traceback; :mod:`.common`).
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The ``hardkuma-rationale`` parser with every subcommand (each sets ``args.func``)."""
    from .explain import add_explain_commands
    from .rationale import add_rationale_commands

    parser = argparse.ArgumentParser(
        prog="hardkuma-rationale", description="``hardkuma-rationale`` command line (also ``python -m hardkuma_attention.rationale``).",
        epilog="hardkuma-rationale explain {mask,decoy-digits,rrr-eval} ...: post-hoc explanations "
        "(input-mask optimisation, right-for-the-right-reasons); see `hardkuma-rationale explain -h`.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add_rationale_commands(sub)
    add_explain_commands(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``hardkuma-rationale`` with ``argv`` (default ``sys.argv[1:]``); the exit code."""
    from .common import run_command
    from .explain import check_requirements, is_explain_command

    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if is_explain_command(args.func):
        def command(a):
            check_requirements(a)
            return a.func(a)

        return run_command(f"hardkuma-rationale explain {args.command}", command, args)
    return run_command(f"hardkuma-rationale {args.command}", args.func, args)


def explain_main(argv: Optional[Sequence[str]] = None) -> int:
    """``hardkuma-rationale explain`` with ``argv`` (``python -m hardkuma_attention.explain``)."""
    return main(["explain", *(sys.argv[1:] if argv is None else argv)])
