"""The model registry: one entry per architecture (builder, parameter count, depth rule).

Torch-free on purpose: the study plan needs parameter counts (to widen baselines) while the
Snakefile is parsed, and ``snakemake -n`` must not import torch. The builder is named by its
import path: the plan writes it into each run config (``model.builder``), and the trainer loads it
by name, so the trainer's code is the builder's module and never this table (a new row retrains
nothing). The parameter count is a closed form of
the same network; tests/test_models.py checks it against every built model.
Adding an architecture starts here (docs/extending.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .errors import UserError
from .layouts import plain_stage_convs


def _conv_bn(cin: int, cout: int, kernel: int = 3) -> int:
    return cin * cout * kernel * kernel + 2 * cout  # conv (no bias) + BatchNorm weight and bias


def resnet_parameters(depth: int, width: int, in_channels: int, num_classes: int, activation: str) -> int:
    act = 1 if activation == "prelu" else 0  # a PReLU has one slope per channel
    total, cin = _conv_bn(in_channels, width) + act * width, width
    for stage, mult in enumerate((1, 2, 4)):
        for i in range((depth - 2) // 6):
            cout, stride = width * mult, 2 if stage > 0 and i == 0 else 1
            total += _conv_bn(cin, cout) + _conv_bn(cout, cout) + 2 * act * cout
            if stride != 1 or cin != cout:
                total += _conv_bn(cin, cout, kernel=1)
            cin = cout
    return total + cin * num_classes + num_classes


def plain_parameters(depth: int, width: int, in_channels: int, num_classes: int, activation: str) -> int:
    act = 1 if activation == "prelu" else 0
    total, cin = 0, in_channels
    for count, mult in zip(plain_stage_convs(depth), (1, 2, 4), strict=True):
        for _ in range(count):
            total += _conv_bn(cin, width * mult) + act * width * mult
            cin = width * mult
    return total + cin * num_classes + num_classes


@dataclass(frozen=True)
class Architecture:
    builder: str  # "package.module:function", called as builder(depth, width, in_channels, classes, act, slope)
    parameters: Callable[[int, int, int, int, str], int]  # (depth, width, in_channels, classes, activation)
    valid_depth: Callable[[int], bool]
    depth_rule: str  # says what valid_depth accepts, for messages


ARCHITECTURES: dict[str, Architecture] = {
    "resnet": Architecture("nonlinear_advantage.models:resnet", resnet_parameters,
                           lambda d: d >= 8 and (d - 2) % 6 == 0, "6n+2 with n >= 1: 8, 14, 20, 26, ..."),
    "plain": Architecture("nonlinear_advantage.models:plain", plain_parameters,
                          lambda d: d >= 2, ">= 2 (depth − 1 convs over up to three stages, then the classifier)"),
}


def architecture(arch: str) -> Architecture:
    try:
        return ARCHITECTURES[arch]
    except KeyError:
        raise UserError(f"unknown architecture {arch!r} (known: {', '.join(ARCHITECTURES)})") from None


def check_depth(arch: str, depth: int) -> None:
    if not architecture(arch).valid_depth(depth):
        raise UserError(f"{depth} is not a {arch} depth ({architecture(arch).depth_rule})")


def parameter_count(arch: str, depth: int, width: int, in_channels: int, num_classes: int, activation: str) -> int:
    """What ``models.parameter_count(models.build_model(...))`` gives, in closed form."""
    return architecture(arch).parameters(depth, width, in_channels, num_classes, activation)


def nearest_width(arch: str, depth: int, target: int, in_channels: int, num_classes: int) -> int:
    """The width whose ReLU network of ``depth`` has the parameter count nearest ``target``
    (ties to the narrower): a widened baseline matches the full network's size, not exceeds it."""
    def count(width):
        return parameter_count(arch, depth, width, in_channels, num_classes, "relu")

    width = 1
    while count(width + 1) < target:  # the count grows with the width
        width += 1
    return width + 1 if abs(count(width + 1) - target) < abs(count(width) - target) else width
