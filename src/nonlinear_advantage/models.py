"""Model factory: a CIFAR-style ResNet (6n+2 layers) and a plain VGG-style CNN.

Every activation is a module that knows its width, so the depth measure and the
sparsity prior can find them: a :class:`SparsePReLU` or, for baselines, a :class:`ReLU`.
"""

from __future__ import annotations

import importlib

from torch import nn

from .layouts import plain_stage_convs
from .prelu import SparsePReLU

ACTIVATIONS = ("prelu", "relu")


class ReLU(nn.ReLU):
    """A ReLU that records its width, so baselines report nonlinear channel counts too."""

    def __init__(self, num_channels: int):
        super().__init__()
        self.num_channels = num_channels

    def extra_repr(self) -> str:
        return f"{self.num_channels}"


def make_activation(kind: str, channels: int, slope_init: float = 0.25) -> nn.Module:
    if kind == "prelu":
        return SparsePReLU(channels, init=slope_init)
    if kind == "relu":
        return ReLU(channels)
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {kind!r}")


def conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
    )


class BasicBlock(nn.Module):
    """conv-bn-act-conv-bn, plus the shortcut, then the activation after the add."""

    def __init__(self, cin: int, cout: int, stride: int, act: str, slope_init: float):
        super().__init__()
        self.conv1 = conv_bn(cin, cout, stride=stride)
        self.act1 = make_activation(act, cout, slope_init)
        self.conv2 = conv_bn(cout, cout)
        # A 1x1 projection where the shape changes; it is linear, so it adds no depth.
        self.shortcut = (
            conv_bn(cin, cout, kernel=1, stride=stride)
            if stride != 1 or cin != cout
            else nn.Identity()
        )
        self.act2 = make_activation(act, cout, slope_init)

    def forward(self, x):
        return self.act2(self.conv2(self.act1(self.conv1(x))) + self.shortcut(x))


class Classifier(nn.Module):
    def __init__(self, features: nn.Module, channels: int, num_classes: int):
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        return self.fc(self.flatten(self.pool(self.features(x))))


def resnet(depth, width, in_channels, num_classes, act, slope_init) -> Classifier:
    if depth < 8 or (depth - 2) % 6:
        allowed = ", ".join(str(6 * n + 2) for n in range(1, 6))
        raise ValueError(f"resnet depth must be 6n+2 with n >= 1 ({allowed}, ...), got {depth}")
    blocks_per_stage = (depth - 2) // 6
    layers: list[nn.Module] = [conv_bn(in_channels, width), make_activation(act, width, slope_init)]
    cin = width
    for stage, mult in enumerate((1, 2, 4)):
        for i in range(blocks_per_stage):
            stride = 2 if stage > 0 and i == 0 else 1
            layers.append(BasicBlock(cin, width * mult, stride, act, slope_init))
            cin = width * mult
    return Classifier(nn.Sequential(*layers), cin, num_classes)


def plain(depth, width, in_channels, num_classes, act, slope_init) -> Classifier:
    """depth counts weighted layers: depth-1 convs in three stages, then the classifier."""
    if depth < 2:
        raise ValueError(f"plain depth must be >= 2 (depth - 1 convs, then the classifier), got {depth}")
    per_stage = plain_stage_convs(depth)
    layers: list[nn.Module] = []
    cin = in_channels
    for stage, (count, mult) in enumerate(zip(per_stage, (1, 2, 4), strict=True)):
        for i in range(count):
            stride = 2 if stage > 0 and i == 0 else 1
            layers += [conv_bn(cin, width * mult, stride=stride), make_activation(act, width * mult, slope_init)]
            cin = width * mult
    return Classifier(nn.Sequential(*layers), cin, num_classes)


def builder_path(arch: str) -> str:
    """The builder of ``arch`` when none is named: the function of that name in this module."""
    return f"{__name__}:{arch}"


def load_builder(path: str):
    """The builder function named by ``module:function`` (architectures.py rows, ``model.builder``)."""
    module, _, name = path.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        raise ValueError(f"no network builder {path!r} (module:function; see architectures.py)") from None


def build_model(
    arch: str,
    *,
    depth: int,
    width: int,
    in_channels: int,
    num_classes: int,
    activation: str = "prelu",
    slope_init: float = 0.25,
    builder: str | None = None,
) -> nn.Module:
    """Build a network with ``builder`` (default: this module's function named ``arch``); a bad
    argument is a ValueError naming the allowed values. No registry lookup here: the plan names
    the builder of every run (architectures.py)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    build = load_builder(builder or builder_path(arch))
    return build(depth, width, in_channels, num_classes, activation, slope_init)


def activation_layers(model: nn.Module) -> list[tuple[str, nn.Module, int]]:
    """The network's activations in forward order, as (name, module, width)."""
    return [
        (name, m, m.num_channels)
        for name, m in model.named_modules()
        if isinstance(m, (SparsePReLU, ReLU))
    ]


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
