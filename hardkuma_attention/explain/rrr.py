r"""Right for the right reasons (Ross, Hughes & Doshi-Velez, IJCAI 2017).

For inputs ``x`` ``(N, ...)``, labels ``y`` and an annotation ``A`` (same shape as the reduced
input gradient, True / 1 = this feature must NOT matter)::

    loss = CE(f(x), y) + λ1 Σ_n Σ_d (A_nd ∂/∂x_nd Σ_k log p_k(x_n))^2 + λ2 ||θ||^2

The input gradient is taken with ``torch.autograd.grad(..., create_graph=True)`` so the penalty is
differentiable in ``θ`` (double backpropagation).  For text, ``x`` is the ``(N, T, E)`` input
embedding and the gradient is summed over the embedding dimension (``reduce_dims=(-1,)``) to give
one value per token before it is masked by ``A`` ``(N, T)``.

The penalty is a *sum* over the batch and features (as in the paper); :func:`auto_lambda1` picks
``λ1`` so that it starts at the size of the cross-entropy.

:func:`find_another_explanation` is the unsupervised loop: train with ``A_0`` (e.g. all False),
then ``A_{i+1} = A_i ∪ {d : |g_nd| > 0.67 max_d |g_nd|}`` (per input ``n``) from the input
gradients ``g`` of model ``i``, giving a sequence of models that are forced to use different
features.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "input_gradients",
    "rrr_penalty",
    "RRRLoss",
    "auto_lambda1",
    "expand_annotation",
    "find_another_explanation",
    "gradient_mass_inside",
]

LogitsFn = Callable[[torch.Tensor], torch.Tensor]


def input_gradients(logits_fn: LogitsFn, x: torch.Tensor, reduce_dims: Sequence[int] = (),
                    create_graph: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""``(g, logits)`` with ``g = ∂/∂x Σ_n Σ_k log p_k(x_n)`` (``x``'s shape, then summed over
    ``reduce_dims``).  ``x`` is detached and made a leaf that requires grad; with
    ``create_graph=True`` ``g`` is differentiable in the model parameters."""
    x = x.detach().requires_grad_(True)
    logits = logits_fn(x)
    log_p = F.log_softmax(logits, dim=-1)
    (g,) = torch.autograd.grad(log_p.sum(), x, create_graph=create_graph)
    if reduce_dims:
        g = g.sum(dim=tuple(reduce_dims))
    return g, logits


def rrr_penalty(grads: torch.Tensor, annotation: torch.Tensor) -> torch.Tensor:
    r"""``Σ_n Σ_d (A_nd g_nd)^2`` (a scalar).  ``annotation`` bool or float, ``grads``' shape."""
    if annotation.shape != grads.shape:
        raise ValueError(f"annotation shape {tuple(annotation.shape)} != gradient shape {tuple(grads.shape)} "
                         "(for text pass reduce_dims=(-1,) so gradients are per token)")
    return (annotation.to(grads.dtype) * grads).pow(2).sum()


@dataclass
class RRRLoss:
    r"""``CE + λ1 · penalty + λ2 · ||θ||^2``; call it with ``(logits_fn, x, y, annotation, params)``.

    ``reduce_dims``: dimensions of the input gradient summed before masking (text: ``(-1,)``).
    ``params``: the parameters in ``||θ||^2`` (pass ``[]`` or set ``lambda2 = 0`` to use the
    optimiser's weight decay instead).
    """

    lambda1: float = 1.0
    lambda2: float = 0.0
    reduce_dims: Tuple[int, ...] = ()

    def __call__(self, logits_fn: LogitsFn, x: torch.Tensor, y: torch.Tensor, annotation: torch.Tensor,
                 params: Iterable[torch.Tensor] = ()) -> Tuple[torch.Tensor, Dict[str, float]]:
        if self.lambda1 > 0:
            grads, logits = input_gradients(logits_fn, x, self.reduce_dims, create_graph=True)
            penalty = rrr_penalty(grads, annotation)
        else:
            logits = logits_fn(x)
            penalty = logits.new_zeros(())
        ce = F.cross_entropy(logits, y)
        l2 = sum((p.pow(2).sum() for p in params), logits.new_zeros(())) if self.lambda2 > 0 else logits.new_zeros(())
        total = ce + self.lambda1 * penalty + self.lambda2 * l2
        return total, {k: float(v.detach()) for k, v in (("ce", ce), ("rrr", penalty), ("l2", l2), ("loss", total))}


def auto_lambda1(logits_fn: LogitsFn, x: torch.Tensor, y: torch.Tensor, annotation: torch.Tensor,
                 reduce_dims: Sequence[int] = (), eps: float = 1e-12) -> float:
    r"""``λ1 = CE / penalty`` on one batch at the current parameters, so that both terms start
    equally large (Ross et al. choose λ1 "so that the two terms have similar orders of magnitude")."""
    grads, logits = input_gradients(logits_fn, x, reduce_dims, create_graph=False)
    penalty = float(rrr_penalty(grads, annotation))
    ce = float(F.cross_entropy(logits.detach(), y))
    return ce / max(penalty, eps)


def expand_annotation(annotation: torch.Tensor, grads: torch.Tensor, threshold: float = 0.67) -> torch.Tensor:
    r"""``A ∪ {d : |g_nd| > threshold · max_d |g_nd|}`` per input ``n`` (bool, ``grads``' shape)."""
    flat = grads.detach().abs().flatten(1)
    top = flat.max(1, keepdim=True).values
    new = (flat > threshold * top) & (top > 0)
    return annotation.bool() | new.view_as(grads)


def find_another_explanation(train_fn: Callable[[torch.Tensor], nn.Module],
                             gradient_fn: Callable[[nn.Module], torch.Tensor],
                             initial: torch.Tensor, rounds: int, threshold: float = 0.67
                             ) -> List[Tuple[nn.Module, torch.Tensor]]:
    r"""The find-another-explanation loop.

    ``train_fn(A) -> model`` trains a model with the RRR penalty on annotation ``A``;
    ``gradient_fn(model) -> g`` gives its (reduced) input gradients on the training inputs, the
    shape of ``A``.  Returns ``[(model_0, A_0), (model_1, A_1), ...]`` (``rounds`` models).
    """
    out = []
    annotation = initial.bool()
    for _ in range(rounds):
        model = train_fn(annotation)
        out.append((model, annotation))
        annotation = expand_annotation(annotation, gradient_fn(model), threshold)
    return out


def gradient_mass_inside(grads: torch.Tensor, region: torch.Tensor, valid: Optional[torch.Tensor] = None
                         ) -> torch.Tensor:
    r"""Fraction of ``Σ |g|`` that falls inside ``region`` per input, ``(N,)``: how much of the
    model's input-gradient mass lies on, e.g., the human rationale."""
    g = grads.detach().abs().flatten(1)
    r = region.flatten(1).to(g.dtype)
    if valid is not None:
        g = g * valid.flatten(1).to(g.dtype)
    return (g * r).sum(1) / g.sum(1).clamp_min(1e-30)
