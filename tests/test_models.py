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


@pytest.mark.parametrize("arch,depth", [("resnet", 8), ("resnet", 20), ("plain", 4), ("plain", 9)])
@pytest.mark.parametrize("activation", ["prelu", "relu"])
@pytest.mark.parametrize("size,channels", [(8, 1), (28, 1), (32, 3), (17, 3)])
def test_forward_shapes(arch, depth, activation, size, channels):
    model = build_model(arch, depth=depth, width=4, in_channels=channels, num_classes=7, activation=activation)
    out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, 7)
    kind = SparsePReLU if activation == "prelu" else ReLU
    assert all(isinstance(m, kind) for _, m, _ in activation_layers(model))


@pytest.mark.parametrize("arch,depth", [("resnet", 8), ("resnet", 32), ("plain", 5), ("plain", 11)])
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


def test_plain_has_no_skips_and_widths_per_stage():
    model = build_model("plain", depth=7, width=8, in_channels=1, num_classes=10, activation="relu")
    assert [w for _, _, w in activation_layers(model)] == [8, 8, 16, 16, 32, 32]


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(arch="vgg", depth=20), "('resnet', 'plain')"),
    (dict(arch="resnet", depth=21), "6n+2"),
    (dict(arch="resnet", depth=2), "8, 14, 20"),
    (dict(arch="plain", depth=3), ">= 4"),
    (dict(arch="resnet", depth=20, activation="gelu"), "('prelu', 'relu')"),
])
def test_bad_arguments_name_the_allowed_values(kwargs, fragment):
    arch = kwargs.pop("arch")
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        build_model(arch, width=4, in_channels=3, num_classes=10, **kwargs)


def widen_to_match(arch: str, depth: int, width: int, target_params: int, **kwargs) -> int:
    """The oracle for architectures.widened_width: builds every candidate network."""
    while parameter_count(build_model(arch, depth=depth, width=width, **kwargs)) < target_params:
        width += 1
    return width


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("dataset", ["digits", "cifar100"])
@pytest.mark.parametrize("activation", ["prelu", "relu"])
def test_registry_parameter_count_agrees_with_the_built_model(arch, dataset, activation):
    ds = DATASETS[dataset]
    depths = [d for d in range(4, 27) if ARCHITECTURES[arch].valid_depth(d)][:3]
    for depth in depths:
        for width in (3, 8):
            net = build_model(arch, depth=depth, width=width, in_channels=ds.shape[0], num_classes=ds.num_classes,
                              activation=activation)
            assert architectures.parameter_count(arch, depth, width, ds.shape[0], ds.num_classes,
                                                 activation) == parameter_count(net)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_registry_widening_matches_the_oracle(arch):
    depth = [d for d in range(4, 27) if ARCHITECTURES[arch].valid_depth(d)][0]
    full = parameter_count(build_model(arch, depth=20, width=4, in_channels=1, num_classes=10))
    assert architectures.widened_width(arch, depth, full, 1, 10, start=4) == widen_to_match(
        arch, depth, 4, full, in_channels=1, num_classes=10, activation="relu")


def test_an_unknown_architecture_is_an_error_not_a_guess():
    with pytest.raises(UserError, match="unknown architecture 'vgg'.*resnet, plain"):
        architectures.parameter_count("vgg", 8, 4, 1, 10, "relu")


def test_schema_enums_come_from_the_registries():
    from nonlinear_advantage import schemas

    params, run = schemas.load(schemas.PARAMS), schemas.load(schemas.RUN)
    assert params["properties"]["model"]["properties"]["arch"]["enum"] == list(ARCHITECTURES)
    assert run["properties"]["model"]["properties"]["arch"]["enum"] == list(ARCHITECTURES)
    assert params["properties"]["datasets"]["propertyNames"]["enum"] == list(DATASETS)
    for name, ds in DATASETS.items():
        assert len(ds.classes) in (0, ds.num_classes), name  # 0: read from the archive's meta file


def test_widen_to_match_reaches_the_target_parameter_count():
    full = parameter_count(build_model("resnet", depth=20, width=8, in_channels=1, num_classes=10))
    width = widen_to_match("resnet", 8, 8, full, in_channels=1, num_classes=10, activation="relu")
    wide = parameter_count(build_model("resnet", depth=8, width=width, in_channels=1, num_classes=10))
    narrower = parameter_count(build_model("resnet", depth=8, width=width - 1, in_channels=1, num_classes=10))
    assert width > 8 and narrower < full <= wide


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
