r"""Optional dependencies of the command lines: check them before any work, or do without them.

The core install (``pip install hardkuma-attention``) brings torch only.  ``tqdm`` (progress bars)
is optional everywhere: :func:`progress` falls back to a silent bar.  Commands that cannot run
without an extra call :func:`require` first, which raises :class:`MissingExtra` with one line::

    plot needs matplotlib: pip install "hardkuma-attention[rationale]"

(the command lines print it as their usual ``error:`` line, exit code 2).
"""
from __future__ import annotations

import importlib
import sys
from typing import Iterable, Optional, Sequence

__all__ = ["MissingExtra", "missing_modules", "require", "progress"]


class MissingExtra(RuntimeError):
    """A command needs a module that only an extra of the package installs."""


def missing_modules(modules: Sequence[str]) -> list:
    """The names in ``modules`` that cannot be imported (in the order given)."""
    out = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            out.append(name)
    return out


def require(modules: Sequence[str], extra: str, what: str) -> None:
    """Raise :class:`MissingExtra` naming ``what`` and the pip command of ``extra`` when one of
    ``modules`` cannot be imported."""
    missing = missing_modules(modules)
    if missing:
        raise MissingExtra(f"{what} needs {', '.join(missing)}: pip install \"hardkuma-attention[{extra}]\"")


class _SilentBar:
    """The part of tqdm's interface the trainers use, doing nothing but ``write``."""

    def __init__(self, iterable: Iterable):
        self._iterable = iterable

    def __iter__(self):
        return iter(self._iterable)

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass

    @staticmethod
    def write(text: str, file=None) -> None:
        print(text, file=file or sys.stdout)


def progress(iterable: Iterable, enabled: bool = True, total: Optional[int] = None, desc: str = "",
             leave: bool = False):
    """``tqdm(iterable, ...)`` when ``enabled`` and tqdm is installed, else a silent bar with the
    same ``set_postfix`` / ``write`` / ``close`` methods (progress bars are never required)."""
    if enabled:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            pass
        else:
            return tqdm(iterable, total=total, desc=desc, leave=leave)
    return _SilentBar(iterable)
