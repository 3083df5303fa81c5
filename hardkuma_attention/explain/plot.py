"""PNG figures for image masks (matplotlib, imported when used)."""
from __future__ import annotations

from typing import Sequence

import torch

from ..rationale.io import atomic_output

__all__ = ["save_image_masks"]


def save_image_masks(path, images: torch.Tensor, masks: Sequence[torch.Tensor], titles: Sequence[str],
                     row_labels: Sequence[str], side: int = 8) -> None:
    """One row per image: the image (dark = ink), then each mask in ``masks`` (``(N, side*side)``
    each, [0, 1], bright = kept); written to a temp file then renamed."""
    from matplotlib.figure import Figure  # no pyplot: the process's matplotlib backend stays as it is

    n, cols = images.size(0), 1 + len(masks)
    fig = Figure(figsize=(1.9 * cols, 1.9 * n))
    axes = fig.subplots(n, cols, squeeze=False)
    for r in range(n):
        axes[r, 0].imshow(images[r].view(side, side), cmap="gray_r", vmin=0, vmax=1)
        axes[r, 0].set_ylabel(row_labels[r], fontsize=8)
        for c, m in enumerate(masks, start=1):
            axes[r, c].imshow(m[r].view(side, side), cmap="magma", vmin=0, vmax=1)
        for c in range(cols):
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title("image" if c == 0 else titles[c - 1], fontsize=8)
    fig.tight_layout()
    with atomic_output(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90)
