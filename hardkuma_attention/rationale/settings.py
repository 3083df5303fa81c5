r"""Process-wide torch settings that a command changes, restored when it returns.

The command lines set ``torch.set_num_threads(--threads)`` and, for ``train --rrr``, flush
denormal floats to zero; :func:`restored_torch_settings` puts both back as they were, so that a
caller running ``main([...])`` in its own process (tests, notebooks) keeps its settings.

Flush-denormal has no getter in torch; :func:`flush_denormal_enabled` probes it: with
flush-to-zero / denormals-are-zero on, the float32 subnormal ``1e-40`` times 1 gives 0.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

__all__ = ["flush_denormal_enabled", "restored_torch_settings"]


def flush_denormal_enabled() -> bool:
    """Whether denormal float32 values are flushed to zero now (probe; ``False`` where the CPU
    does not support flushing)."""
    return float(torch.tensor([1e-40], dtype=torch.float32).mul(1.0)) == 0.0


@contextmanager
def restored_torch_settings() -> Iterator[None]:
    """Run the ``with`` block, then restore torch's intra-op thread count and the flush-denormal
    state to their values on entry (also when the block raises)."""
    threads, flush = torch.get_num_threads(), flush_denormal_enabled()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.set_flush_denormal(flush)
