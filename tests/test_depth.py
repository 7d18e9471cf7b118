"""APL by dynamic programming, checked against closed forms and brute-force path enumeration."""

import random

import numpy as np
import pytest
import torch
from torch import nn

from nonlinear_advantage.depth import average_path_length, depth_summary, layer_profile
from nonlinear_advantage.models import build_model
from nonlinear_advantage.prelu import SparsePReLU


class Residual(nn.Module):
    def __init__(self, branch: nn.Module, post: nn.Module | None = None):
        super().__init__()
        self.branch, self.post = branch, post or nn.Identity()

    def forward(self, x):
        return self.post(x + self.branch(x))


def test_paper_figure_1():
    """One residual block skipping 4 linear layers of width 4, every unit nonlinear: 257 paths."""
    model = Residual(nn.Sequential(*[m for _ in range(4) for m in (nn.Linear(4, 4), nn.ReLU())]))
    x = torch.randn(3, 4)
    assert average_path_length(model, x) == pytest.approx(2.0, abs=1e-12)
    assert average_path_length(model, x, normalized=False) == pytest.approx(256 * 4 / 257, abs=1e-12)


def _prelu(slopes):
    act = SparsePReLU(len(slopes))
    with torch.no_grad():
        act.slope.copy_(torch.tensor(slopes, dtype=torch.float32))
    return act


def test_plain_chain_is_the_sum_of_nonlinear_fractions():
    slopes = [[0.2, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0], [0.5, 0.5]]
    layers, width = [], 5
    for s in slopes:
        layers += [nn.Linear(width, len(s)), _prelu(s)]
        width = len(s)
    model = nn.Sequential(*layers, nn.Linear(width, 3))
    expected = 1 / 3 + 1 / 4 + 2 / 2
    x = torch.randn(2, 5)
    assert average_path_length(model, x) == pytest.approx(expected, abs=1e-12)
    assert average_path_length(model, x, normalized=False) == pytest.approx(expected, abs=1e-12)


def test_fully_linear_network_has_zero_depth():
    model = build_model("resnet", depth=14, width=4, in_channels=1, num_classes=10)
    for m in model.modules():
        if isinstance(m, SparsePReLU):
            m.slope.data.fill_(1.0)
    x = torch.randn(2, 1, 8, 8)
    assert average_path_length(model, x) == 0.0
    assert average_path_length(model, x, normalized=False) == 0.0


def test_eps_decides_which_slopes_count():
    model = nn.Sequential(nn.Linear(2, 2), _prelu([0.98, 0.5]), nn.Linear(2, 1))
    x = torch.randn(1, 2)
    assert average_path_length(model, x, eps=0.0) == pytest.approx(1.0)
    assert average_path_length(model, x, eps=0.05) == pytest.approx(0.5)


def test_second_threshold_and_slope_quantiles():
    """Known slopes: |1 - a| of 0, 0.05, 0.3, 0.9 over 2 + 2 channels of a plain chain."""
    model = nn.Sequential(nn.Linear(2, 2), _prelu([1.0, 0.95]), nn.Linear(2, 2), _prelu([0.7, 0.1]),
                          nn.Linear(2, 1))
    summary = depth_summary(model, torch.randn(1, 2), eps=0.0, depth_eps=0.1)
    assert summary["apl_normalized"] == pytest.approx(1 / 2 + 2 / 2) and summary["nonlinear_channels"] == 3
    # at |1 - a| > 0.1 the 0.95 slope is linear too: layer 1 has no nonlinear channel left
    assert summary["depth_eps"] == 0.1 and summary["nonlinear_channels_eps"] == 2
    assert summary["apl_normalized_eps"] == pytest.approx(2 / 2)
    assert summary["apl_unnormalized_eps"] == pytest.approx(2 / 2)
    # linear interpolation over the sorted distances (0, 0.05, 0.3, 0.9), as numpy's default
    distances = [0.0, 0.05, 0.3, 0.9]
    assert [summary[f"slope_q{q}"] for q in (10, 50, 90)] == pytest.approx(
        [float(np.quantile(distances, q / 100)) for q in (10, 50, 90)], abs=1e-7)
    assert summary["slope_q50"] == pytest.approx(0.175, abs=1e-7)
    assert "depth_eps" not in depth_summary(model, torch.randn(1, 2))  # one pass unless asked


def test_a_relu_net_has_no_slope_quantiles():
    model = build_model("resnet", depth=8, width=4, in_channels=1, num_classes=10, activation="relu")
    summary = depth_summary(model, torch.randn(1, 1, 8, 8), depth_eps=0.1)
    assert {summary[f"slope_q{q}"] for q in (10, 50, 90)} == {None}
    assert summary["nonlinear_channels_eps"] == summary["nonlinear_channels"] == summary["total_channels"]
    assert summary["apl_normalized_eps"] == summary["apl_normalized"]


def test_relu_resnet_closed_form():
    """Stem activation (1) + per block: half the walk through act1, all of it through act2."""
    for depth in (8, 20, 56):
        model = build_model("resnet", depth=depth, width=4, in_channels=3, num_classes=10, activation="relu")
        blocks = (depth - 2) // 2
        assert average_path_length(model, torch.randn(1, 3, 16, 16)) == pytest.approx(1 + 1.5 * blocks)


def test_profile_rows_add_up_to_the_apl():
    model = build_model("resnet", depth=14, width=4, in_channels=1, num_classes=10)
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, SparsePReLU):
            m.slope.data = torch.where(torch.rand(m.num_channels, generator=gen) < 0.5, 1.0, 0.25)
    x = torch.randn(1, 1, 12, 12)
    rows = layer_profile(model, x)
    assert len(rows) == 13 and [r["index"] for r in rows] == list(range(13))
    assert sum(r["contribution"] for r in rows) == pytest.approx(average_path_length(model, x), abs=1e-12)
    for r in rows:
        assert r["contribution"] == pytest.approx(r["P"] * r["nonlinear"] / r["width"], abs=1e-12)
    summary = depth_summary(model, x)
    assert summary["nonlinear_channels"] == sum(r["nonlinear"] for r in rows)
    assert summary["total_channels"] == sum(r["width"] for r in rows) == 4 + 4 * 4 + 4 * 8 + 4 * 16


# --------------------------------------------------------------- brute-force path enumeration

def _random_spec(rng: random.Random, width: int, budget: int):
    """A random stack of ('layer', width, mask) and ('res', [inner spec], post_mask | None)."""
    spec = []
    for _ in range(budget):
        if rng.random() < 0.5:
            inner, w = [], width
            for i in range(rng.randint(1, 2)):
                w = width if i == 1 or rng.random() < 0.5 else rng.randint(1, 3)
                inner.append(("layer", w, [rng.random() < 0.5 for _ in range(w)]))
            if inner[-1][1] != width:
                inner.append(("layer", width, [rng.random() < 0.5 for _ in range(width)]))
            post = [rng.random() < 0.5 for _ in range(width)] if rng.random() < 0.5 else None
            spec.append(("res", inner, post))
        else:
            width = rng.randint(1, 3)
            spec.append(("layer", width, [rng.random() < 0.5 for _ in range(width)]))
    return spec, width


def _module(spec, width):
    layers = []
    for item in spec:
        if item[0] == "layer":
            _, w, mask = item
            layers += [nn.Linear(width, w), _prelu([0.3 if m else 1.0 for m in mask])]
            width = w
        else:
            _, inner, post = item
            branch = _module(inner, width)
            layers.append(Residual(branch, _prelu([0.3 if m else 1.0 for m in post]) if post else None))
    return nn.Sequential(*layers)


def _paths(spec, channel):
    """Every path from `channel` through spec: (end channel, walk probability, nonlinear count)."""
    frontier = [(channel, 1.0, 0)]
    for item in spec:
        nxt = []
        for c, p, n in frontier:
            if item[0] == "layer":
                _, w, mask = item
                nxt += [(c2, p / w, n + mask[c2]) for c2 in range(w)]
            else:
                _, inner, post = item
                ends = [(c, p / 2, n)] + [(c2, p / 2 * p2, n + n2) for c2, p2, n2 in _paths(inner, c)]
                nxt += [(c2, p2, n2 + (post[c2] if post else 0)) for c2, p2, n2 in ends]
        frontier = nxt
    return frontier


@pytest.mark.parametrize("seed", range(25))
def test_agrees_with_brute_force_enumeration(seed):
    rng = random.Random(seed)
    in_width = rng.randint(1, 3)
    spec, _ = _random_spec(rng, in_width, rng.randint(2, 5))
    model = _module(spec, in_width)
    paths = [path for c in range(in_width) for path in _paths(spec, c)]
    normalized = sum(p * n for _, p, n in paths) / in_width
    unnormalized = sum(n for _, _, n in paths) / len(paths)
    x = torch.randn(1, in_width)
    assert average_path_length(model, x) == pytest.approx(normalized, abs=1e-9)
    assert average_path_length(model, x, normalized=False) == pytest.approx(unnormalized, abs=1e-9)


def test_deep_network_path_counts_do_not_overflow():
    model = build_model("resnet", depth=110, width=16, in_channels=3, num_classes=10)
    x = torch.randn(1, 3, 8, 8)
    value = average_path_length(model, x, normalized=False)
    assert 0 < value < 109 and value == value  # finite, not NaN, below the longest path
