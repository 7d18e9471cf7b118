import pytest
import torch
from torch import nn

from nonlinear_advantage import architectures
from nonlinear_advantage.architectures import ARCHITECTURES
from nonlinear_advantage.datasets import DATASETS
from nonlinear_advantage.errors import UserError
from nonlinear_advantage.models import (
    ReLU,
    activation_layers,
    build_model,
    parameter_count,
)
from nonlinear_advantage.prelu import SparsePReLU


@pytest.mark.parametrize("arch,depth", [("resnet", 8), ("resnet", 20), ("plain", 2), ("plain", 3), ("plain", 4),
                                        ("plain", 9)])
@pytest.mark.parametrize("activation", ["prelu", "relu"])
@pytest.mark.parametrize("size,channels", [(8, 1), (28, 1), (32, 3), (17, 3)])
def test_forward_shapes(arch, depth, activation, size, channels):
    model = build_model(arch, depth=depth, width=4, in_channels=channels, num_classes=7, activation=activation)
    out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, 7)
    kind = SparsePReLU if activation == "prelu" else ReLU
    assert all(isinstance(m, kind) for _, m, _ in activation_layers(model))


@pytest.mark.parametrize("arch,depth", [("resnet", 8), ("resnet", 32), ("plain", 2), ("plain", 3), ("plain", 5),
                                        ("plain", 11)])
def test_depth_counts_weighted_layers_on_the_longest_path(arch, depth):
    model = build_model(arch, depth=depth, width=4, in_channels=3, num_classes=10)
    convs = [m for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and "shortcut" not in n]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(convs) + len(linears) == depth


def test_resnet_has_an_activation_after_every_conv_and_add():
    model = build_model("resnet", depth=20, width=16, in_channels=3, num_classes=10)
    layers = activation_layers(model)
    assert len(layers) == 1 + 2 * 9
    assert [w for _, _, w in layers] == [16] + [16] * 6 + [32] * 6 + [64] * 6
    assert layers[0][0] == "features.1" and layers[-1][0] == "features.10.act2"


@pytest.mark.parametrize("depth,widths", [(7, [8, 8, 16, 16, 32, 32]), (2, [8]), (3, [8, 16]), (4, [8, 16, 32])])
def test_plain_has_no_skips_and_widths_per_stage(depth, widths):
    """A plain net of depth d has d − 1 activation layers (its APL when all are nonlinear)."""
    model = build_model("plain", depth=depth, width=8, in_channels=1, num_classes=10, activation="relu")
    assert [w for _, _, w in activation_layers(model)] == widths


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(arch="vgg", depth=20), "no network builder 'nonlinear_advantage.models:vgg'"),
    (dict(arch="resnet", depth=21), "6n+2"),
    (dict(arch="resnet", depth=2), "8, 14, 20"),
    (dict(arch="plain", depth=1), ">= 2"),
    (dict(arch="resnet", depth=20, activation="gelu"), "('prelu', 'relu')"),
])
def test_bad_arguments_name_the_allowed_values(kwargs, fragment):
    arch = kwargs.pop("arch")
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        build_model(arch, width=4, in_channels=3, num_classes=10, **kwargs)


def built_count(arch: str, depth: int, width: int, **kwargs) -> int:
    return parameter_count(build_model(arch, depth=depth, width=width, **kwargs))


def nearest_to_match(arch: str, depth: int, target_params: int, **kwargs) -> int:
    """The oracle for architectures.nearest_width: builds every candidate network from width 1
    until one reaches the target, then takes whichever of it and the one below is nearer (ties:
    the narrower)."""
    width = 1
    while built_count(arch, depth, width, **kwargs) < target_params:
        width += 1
    if width > 1:
        below, above = (abs(built_count(arch, depth, w, **kwargs) - target_params) for w in (width - 1, width))
        if below <= above:
            width -= 1
    return width


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("dataset", ["digits", "cifar100"])
@pytest.mark.parametrize("activation", ["prelu", "relu"])
def test_registry_parameter_count_agrees_with_the_built_model(arch, dataset, activation):
    ds = DATASETS[dataset]
    depths = [d for d in range(1, 27) if ARCHITECTURES[arch].valid_depth(d)][:3]
    for depth in depths:
        for width in (3, 8):
            net = build_model(arch, depth=depth, width=width, in_channels=ds.shape[0], num_classes=ds.num_classes,
                              activation=activation)
            assert architectures.parameter_count(arch, depth, width, ds.shape[0], ds.num_classes,
                                                 activation) == parameter_count(net)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("full_width", [4, 16])
def test_registry_widening_matches_the_oracle(arch, full_width):
    full = parameter_count(build_model("resnet", depth=20, width=full_width, in_channels=1, num_classes=10))
    for depth in [d for d in range(1, 27) if ARCHITECTURES[arch].valid_depth(d)][:3]:
        assert architectures.nearest_width(arch, depth, full, 1, 10) == nearest_to_match(
            arch, depth, full, in_channels=1, num_classes=10, activation="relu"), depth


def test_an_unknown_architecture_is_an_error_not_a_guess():
    with pytest.raises(UserError, match="unknown architecture 'vgg'.*resnet, plain"):
        architectures.parameter_count("vgg", 8, 4, 1, 10, "relu")


def test_schema_enums_come_from_the_registries():
    from nonlinear_advantage import plan

    params = plan.params_schema()
    assert params["properties"]["model"]["properties"]["arch"]["enum"] == list(ARCHITECTURES)
    assert params["properties"]["datasets"]["propertyNames"]["enum"] == list(DATASETS)
    for name, ds in DATASETS.items():
        assert len(ds.classes) in (0, ds.num_classes), name  # 0: read from the archive's meta file


@pytest.mark.parametrize("arch,depth", [("resnet", 8), ("resnet", 14), ("plain", 2), ("plain", 3)])
def test_nearest_width_has_the_nearest_parameter_count(arch, depth):
    """Not the first width at or above the target (issue 11: that gave 1.42x and 1.54x)."""
    full = parameter_count(build_model("resnet", depth=20, width=8, in_channels=1, num_classes=10))
    width = architectures.nearest_width(arch, depth, full, 1, 10)
    off = {w: abs(built_count(arch, depth, w, in_channels=1, num_classes=10, activation="relu") - full)
           for w in (width - 1, width, width + 1)}
    assert width > 8 and off[width] <= off[width - 1] and off[width] < off[width + 1]


def test_nearest_width_can_be_below_the_target():
    """Rounding up would never give fewer parameters than the target: the nearest width can."""
    fulls = [parameter_count(build_model("resnet", depth=20, width=w, in_channels=1, num_classes=10))
             for w in range(4, 12)]
    below = [full for full in fulls
             if architectures.parameter_count("resnet", 8, architectures.nearest_width("resnet", 8, full, 1, 10),
                                              1, 10, "relu") < full]
    assert below  # at least one full width whose nearest ResNet-8 is slightly smaller than it


def test_cli_help_lists_every_stage_and_a_command_loads_only_its_module():
    import subprocess
    import sys

    from nonlinear_advantage.cli import COMMAND_MODULE, STAGE_MODULES

    assert set(COMMAND_MODULE.values()) == set(STAGE_MODULES)
    out = subprocess.run([sys.executable, "-m", "nonlinear_advantage", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert all(command in out for command in COMMAND_MODULE)
    probe = ("import sys; from nonlinear_advantage import cli; cli.build_parser(('trainer',)); "
             "print('matplotlib' in sys.modules, 'reportlab' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True).stdout.split() == ["False", "False"]
