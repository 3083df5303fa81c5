"""PNG figures for image masks (matplotlib, imported when used)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence

import torch

__all__ = ["save_image_masks"]


def save_image_masks(path, images: torch.Tensor, masks: Sequence[torch.Tensor], titles: Sequence[str],
                     row_labels: Sequence[str], side: int = 8) -> None:
    """One row per image: the image (dark = ink), then each mask in ``masks`` (``(N, side*side)``
    each, [0, 1], bright = kept); written to a temp file then renamed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, cols = images.size(0), 1 + len(masks)
    fig, axes = plt.subplots(n, cols, figsize=(1.9 * cols, 1.9 * n), squeeze=False)
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=path.parent)
    os.close(fd)
    fig.savefig(tmp, dpi=90)
    os.chmod(tmp, 0o644)
    plt.close(fig)
    os.replace(tmp, path)
