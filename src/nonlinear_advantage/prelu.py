"""The sparsifiable activation and the prior that makes channels linear.

A channel-wise PReLU computes ``max(0, x) + a_c * min(0, x)``. With ``a_c = 1`` the
channel is the identity, with ``a_c = 0`` it is a ReLU. The prior ``mean_c |1 - a_c|``
pushes slopes towards 1; a proximal step after each optimiser step makes them exactly 1.
"""

from __future__ import annotations

import torch
from torch import nn


class SparsePReLU(nn.Module):
    """Channel-wise PReLU acting on dim 1, so ``(N, C)`` and ``(N, C, H, W)`` both work."""

    def __init__(self, num_channels: int, init: float = 0.25):
        super().__init__()
        self.num_channels = num_channels
        self.slope = nn.Parameter(torch.full((num_channels,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        slope = self.slope.view(1, -1, *([1] * (x.dim() - 2)))
        # where(): a slope of exactly 1 returns x itself, bit for bit (no 0*x + x rounding).
        # The product is taken in fp32: under bf16 autocast a slope of 0.998 would round to 1,
        # acting linear while the depth measure still counts it nonlinear.
        return torch.where(x >= 0, x, (x.float() * slope).to(x.dtype))

    def extra_repr(self) -> str:
        return f"{self.num_channels}"


def sparse_prelus(model: nn.Module) -> list[SparsePReLU]:
    return [m for m in model.modules() if isinstance(m, SparsePReLU)]


def nonlinearity_penalty(model: nn.Module) -> torch.Tensor:
    """Mean over all PReLU channels of ``|1 - a_c|``; the same λ means the same across nets."""
    slopes = [m.slope for m in sparse_prelus(model)]
    if not slopes:
        return torch.zeros(())
    return (1 - torch.cat(slopes)).abs().mean()


def prox_threshold(lr: float, lam: float, channels: int, momentum: float) -> float:
    """The soft-threshold per step whose fixed point is that of loss + λ·mean_c|1 − a_c|.

    With momentum μ a constant gradient g moves a parameter by lr·g/(1 − μ) per step in
    steady state (heavy ball and Nesterov alike). A slope sitting at 1 stays there exactly
    when that step is within the threshold, so lr·λ/(C·(1 − μ)) keeps a channel linear iff
    |∂L/∂a_c| ≤ λ/C: the stationarity condition of the stated objective. (lr·λ/C alone
    would give (1 − μ)·λ/C, a prior ten times weaker at μ = 0.9.)
    """
    return lr * lam / (channels * (1.0 - momentum))


@torch.no_grad()
def proximal_step_(model: nn.Module, threshold: float) -> None:
    """Soft-threshold ``a_c - 1`` by ``threshold``: channels within it become exactly linear."""
    if threshold <= 0:
        return
    for m in sparse_prelus(model):
        offset = m.slope - 1
        m.slope.copy_(1 + offset.sign() * (offset.abs() - threshold).clamp_min(0))


@torch.no_grad()
def lazy_proximal_step_(slopes: list[torch.Tensor], shadows: list[torch.Tensor], before: list[torch.Tensor],
                        threshold_sum: float) -> None:
    """The prox in dual-averaging form (ℓ1-RDA, Xiao 2010): each shadow sums the optimiser's steps
    since the prior came on, and its slope is the shadow with ``a_c - 1`` soft-thresholded by the
    thresholds' sum so far.

    While a channel stays nonlinear this is ``proximal_step_`` exactly. A linear channel keeps
    what its gradients sum to, so it leaves 1 only when their lr-weighted mean since the prior came
    on, not one minibatch's noise, beats λ/C: the set of linear channels settles where the per-step
    prox's flickers (proximal SGD does not identify the support; dual averaging does, Lee & Wright
    2012).
    """
    for slope, shadow, old in zip(slopes, shadows, before, strict=True):
        shadow.add_(slope - old)
        offset = shadow - 1
        slope.copy_(1 + offset.sign() * (offset.abs() - threshold_sum).clamp_min(0))


@torch.no_grad()
def nonlinear_mask(model: nn.Module, eps: float = 0.0) -> dict[str, torch.Tensor]:
    """Per activation (by module name): a bool mask of its nonlinear channels.

    A channel is nonlinear when ``|1 - a_c| > eps``. ReLUs carry no per-channel size,
    so only SparsePReLUs appear here; depth.py treats ReLUs as fully nonlinear.
    """
    return {
        name: (1 - m.slope).abs() > eps
        for name, m in model.named_modules()
        if isinstance(m, SparsePReLU)
    }


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Optimiser groups: decay on weights, none on slopes, biases and norm parameters."""
    slope_ids = {id(m.slope) for m in sparse_prelus(model)}
    slopes, decay, no_decay = [], [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if id(p) in slope_ids:
            slopes.append(p)
        elif p.dim() > 1:
            decay.append(p)
        else:
            no_decay.append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "name": "weights"},
        {"params": no_decay, "weight_decay": 0.0, "name": "norm_and_bias"},
        {"params": slopes, "weight_decay": 0.0, "name": "slopes"},
    ]
    return [g for g in groups if g["params"]]
