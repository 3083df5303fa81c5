r"""Decoy digits: scikit-learn's 8×8 digits with a confounding corner patch (after Decoy-MNIST,
Ross et al. 2017).

Each image (values 0..16, ``(8, 8)``) gets a ``patch × patch`` square in a randomly chosen corner.
Its intensity is ``16 - 1.6 y`` for class ``y`` in the *training* set (a perfect shortcut) and
``16 - 1.6 u`` with a random ``u`` in 0..9 in the *test* set (the shortcut lies).  The annotation
``A`` marks the patch pixels (what must not matter) for the RRR penalty; the digits' own corners
are almost always background, so the patch is the only thing there.

A small MLP (64 -> 50 -> 50 -> 10, ReLU, as in the paper) is trained with plain cross-entropy or
with the RRR penalty (:class:`~hardkuma_attention.explain.rrr.RRRLoss`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from .rrr import RRRLoss, auto_lambda1, gradient_mass_inside, input_gradients

__all__ = ["DecoyData", "add_decoy", "load_decoy_digits", "DigitMLP", "TrainDecoyConfig", "train_mlp", "accuracy",
           "decoy_gradient_mass"]

SIDE = 8
MAX_VALUE = 16.0


@dataclass
class DecoyData:
    """``x`` ``(N, 64)`` scaled to [0, 1], ``y`` ``(N,)``, ``annotation`` ``(N, 64)`` bool (patch
    pixels), ``corner`` ``(N,)`` in 0..3, ``clean`` ``(N, 64)`` the image without the patch."""

    x: torch.Tensor
    y: torch.Tensor
    annotation: torch.Tensor
    corner: torch.Tensor
    clean: torch.Tensor


def add_decoy(images: torch.Tensor, labels: torch.Tensor, train: bool, patch: int = 2,
              generator: Optional[torch.Generator] = None) -> DecoyData:
    r"""Add the corner patch to ``images`` ``(N, 8, 8)`` (values 0..16).

    Corner ``c`` in 0..3 (top-left, top-right, bottom-left, bottom-right) uniformly at random;
    intensity ``16 - 1.6 v`` with ``v = y`` (``train``) or ``v`` uniform in 0..9 (test).
    """
    if images.dim() != 3 or images.shape[1:] != (SIDE, SIDE):
        raise ValueError(f"images must be (N, {SIDE}, {SIDE}), got {tuple(images.shape)}")
    if not 1 <= patch <= SIDE // 2:
        raise ValueError(f"patch must be in 1..{SIDE // 2}, got {patch}")
    n = images.size(0)
    corner = torch.randint(0, 4, (n,), generator=generator)
    value = labels.clone() if train else torch.randint(0, 10, (n,), generator=generator)
    shade = MAX_VALUE - 1.6 * value.to(images.dtype)
    out = images.clone()
    ann = torch.zeros(n, SIDE, SIDE, dtype=torch.bool)
    for c in range(4):
        rows = slice(0, patch) if c < 2 else slice(SIDE - patch, SIDE)
        cols = slice(0, patch) if c % 2 == 0 else slice(SIDE - patch, SIDE)
        sel = corner == c
        out[sel, rows, cols] = shade[sel].view(-1, 1, 1)
        ann[sel, rows, cols] = True
    scale = 1.0 / MAX_VALUE
    return DecoyData((out * scale).flatten(1), labels.clone(), ann.flatten(1), corner, (images * scale).flatten(1))


def load_decoy_digits(test_fraction: float = 0.3, seed: int = 0, patch: int = 2
                      ) -> Tuple[DecoyData, DecoyData]:
    """scikit-learn's digits (1,797 images), split train/test (stratified), decoys added."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)
    labels = torch.tensor(digits.target, dtype=torch.long)
    idx_train, idx_test = train_test_split(range(len(labels)), test_size=test_fraction, random_state=seed,
                                           stratify=digits.target)
    g = torch.Generator().manual_seed(seed)
    train = add_decoy(images[idx_train], labels[idx_train], True, patch, g)
    test = add_decoy(images[idx_test], labels[idx_test], False, patch, g)
    return train, test


class DigitMLP(nn.Sequential):
    """64 -> hidden -> hidden -> 10 with ReLU."""

    def __init__(self, hidden: int = 50, inputs: int = SIDE * SIDE, classes: int = 10):
        super().__init__(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, classes))


@dataclass
class TrainDecoyConfig:
    rrr: bool = False
    lambda1: Optional[float] = None  # None: auto_lambda1 on the first batch at initialisation, times lambda1_scale
    lambda1_scale: float = 10.0
    lambda2: float = 1e-4
    epochs: int = 60
    batch_size: int = 64
    lr: float = 1e-3
    hidden: int = 50
    seed: int = 0


def accuracy(model: nn.Module, data: DecoyData) -> float:
    with torch.no_grad():
        return float((model(data.x).argmax(-1) == data.y).float().mean())


def train_mlp(train: DecoyData, config: TrainDecoyConfig) -> Tuple[DigitMLP, Dict[str, float]]:
    """Train one MLP (plain or RRR); returns it and ``{"lambda1", "final_ce", "final_rrr"}``."""
    torch.manual_seed(config.seed)
    model = DigitMLP(config.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    lam1 = 0.0
    if config.rrr:
        lam1 = config.lambda1 if config.lambda1 is not None else \
            config.lambda1_scale * auto_lambda1(model, train.x[: config.batch_size], train.y[: config.batch_size],
                                                train.annotation[: config.batch_size])
    loss_fn = RRRLoss(lambda1=lam1, lambda2=config.lambda2)
    g = torch.Generator().manual_seed(config.seed)
    parts: Dict[str, float] = {}
    n = train.x.size(0)
    for _ in range(config.epochs):
        order = torch.randperm(n, generator=g)
        for s in range(0, n, config.batch_size):
            idx = order[s : s + config.batch_size]
            opt.zero_grad(set_to_none=True)
            loss, parts = loss_fn(model, train.x[idx], train.y[idx], train.annotation[idx], model.parameters())
            loss.backward()
            opt.step()
    model.eval()
    return model, {"lambda1": lam1, "final_ce": parts.get("ce", 0.0), "final_rrr": parts.get("rrr", 0.0)}


def decoy_gradient_mass(model: nn.Module, data: DecoyData) -> float:
    """Mean fraction of the input-gradient mass on the patch pixels."""
    g, _ = input_gradients(model, data.x, create_graph=False)
    return float(gradient_mass_inside(g, data.annotation).mean())


def explain_images(model: nn.Module, x: torch.Tensor, target: torch.Tensor, config=None):
    r"""Input-mask optimisation on flat 8×8 images ``x`` ``(N, 64)``: a 2-D Gaussian-kernel mask
    (``image_positions(8, 8)``) with the total-variation term; black (0) as the baseline.
    Returns the :class:`~hardkuma_attention.explain.mask.MaskResult` (``mask`` ``(N, 64)``)."""
    from .mask import optimise_masks, image_positions

    model.requires_grad_(False)
    valid = torch.ones(x.shape, dtype=torch.bool)
    try:
        return optimise_masks(lambda e, v: model(e.squeeze(-1)), x.unsqueeze(-1), valid, target=target,
                              config=config or image_mask_config(), positions=image_positions(SIDE, SIDE),
                              grid=(SIDE, SIDE))
    finally:
        model.requires_grad_(True)


def image_mask_config(**overrides):
    """Mask settings for 8×8 images: the text defaults' kernel is far too wide for 8×8 (at
    ``w = 1.2, σ = 2`` the 2-D kernel sum starts at ~15, so ``sigmoid`` saturates and gradients
    vanish), hence ``w = 0.3``, ``σ`` in (0, 3], ``λ_σ = 0.2`` and a TV weight of 0.3."""
    from .mask import MaskConfig

    values = dict(init_weight=0.3, init_sigma=1.0, sigma_max=3.0, lambda_sigma=0.2, tv_weight=0.3)
    values.update(overrides)
    return MaskConfig(**values)
