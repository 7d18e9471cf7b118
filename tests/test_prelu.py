import pytest
import torch
from torch import nn

from nonlinear_advantage.models import build_model
from nonlinear_advantage.prelu import (
    SparsePReLU,
    lazy_proximal_step_,
    nonlinear_mask,
    nonlinearity_penalty,
    parameter_groups,
    prox_threshold,
    proximal_step_,
)


@pytest.mark.parametrize("shape", [(7, 3), (5, 3, 4, 4)])
def test_slope_one_is_the_identity_bit_for_bit(shape):
    act = SparsePReLU(3)
    with torch.no_grad():
        act.slope.fill_(1.0)
    x = torch.randn(*shape) * 1e3
    assert torch.equal(act(x), x)


def test_slope_zero_is_relu_and_slopes_act_per_channel():
    act = SparsePReLU(2)
    with torch.no_grad():
        act.slope.copy_(torch.tensor([0.0, 0.5]))
    x = torch.tensor([[-2.0, -2.0], [3.0, 3.0]])
    assert torch.equal(act(x), torch.tensor([[0.0, -1.0], [3.0, 3.0]]))
    x4 = -torch.ones(1, 2, 2, 2)
    assert torch.equal(act(x4)[0, 0], torch.zeros(2, 2)) and torch.equal(act(x4)[0, 1], -0.5 * torch.ones(2, 2))


def test_default_slope_and_gradient_reaches_the_slope():
    act = SparsePReLU(4)
    assert act.slope.shape == (4,) and torch.all(act.slope == 0.25)
    act(-torch.ones(2, 4)).sum().backward()
    assert torch.equal(act.slope.grad, -2 * torch.ones(4))


def _two_layer_net(slopes_a, slopes_b):
    a, b = SparsePReLU(len(slopes_a)), SparsePReLU(len(slopes_b))
    with torch.no_grad():
        a.slope.copy_(torch.tensor(slopes_a))
        b.slope.copy_(torch.tensor(slopes_b))
    return nn.Sequential(nn.Linear(3, len(slopes_a)), a, nn.Linear(len(slopes_a), len(slopes_b)), b)


def test_penalty_is_the_mean_over_all_channels():
    net = _two_layer_net([1.0, 0.0], [0.5, 1.5, 1.0])
    # |1-a| = 0, 1, 0.5, 0.5, 0 over 5 channels
    assert nonlinearity_penalty(net).item() == pytest.approx(2.0 / 5)


def test_proximal_step_soft_thresholds_towards_one():
    net = _two_layer_net([0.9, 0.0], [1.05, 1.5, 1.0])
    proximal_step_(net, 0.1)
    slopes = torch.cat([m.slope for m in net if isinstance(m, SparsePReLU)])
    assert torch.allclose(slopes, torch.tensor([1.0, 0.1, 1.0, 1.4, 1.0]))
    assert slopes[0].item() == 1.0 and slopes[2].item() == 1.0  # exactly linear, not approximately


def test_nonlinear_mask_uses_eps():
    net = _two_layer_net([1.0, 0.99], [0.5, 1.0, 1.2])
    masks = nonlinear_mask(net, eps=0.0)
    assert [m.tolist() for m in masks.values()] == [[False, True], [True, False, True]]
    masks = nonlinear_mask(net, eps=0.05)
    assert [m.tolist() for m in masks.values()] == [[False, False], [True, False, True]]
    assert list(masks) == ["1", "3"]


def test_slopes_get_no_weight_decay():
    model = build_model("resnet", depth=8, width=4, in_channels=1, num_classes=3)
    groups = parameter_groups(model, weight_decay=5e-4)
    by_name = {g["name"]: g for g in groups}
    slope_ids = {id(m.slope) for m in model.modules() if isinstance(m, SparsePReLU)}
    assert {id(p) for p in by_name["slopes"]["params"]} == slope_ids
    assert by_name["slopes"]["weight_decay"] == 0.0
    assert all(id(p) not in slope_ids for p in by_name["weights"]["params"])
    assert by_name["weights"]["weight_decay"] == 5e-4
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize("ratio, stays_linear", [(0.9, True), (1.1, False)])
def test_the_prox_fixed_point_is_the_stated_objective(nesterov, ratio, stays_linear):
    """A constant gradient g on a slope at 1: it stays at 1 exactly when |g| <= λ/C, whatever the momentum."""
    lam, channels, lr, momentum = 2.0, 4, 0.05, 0.9
    act = SparsePReLU(channels, init=1.0)
    opt = torch.optim.SGD(act.parameters(), lr=lr, momentum=momentum, nesterov=nesterov)
    g = ratio * lam / channels
    for _ in range(500):
        act.slope.grad = torch.full((channels,), g)
        opt.step()
        proximal_step_(act, prox_threshold(lr, lam, channels, momentum))
    assert bool((act.slope == 1).all()) is stays_linear, act.slope


def test_without_the_momentum_term_the_prior_is_weaker():
    """What the threshold lr·λ/C gave: a gradient of half of λ/C already pulls the slope off 1."""
    lam, channels, lr, momentum = 2.0, 4, 0.05, 0.9
    act = SparsePReLU(channels, init=1.0)
    opt = torch.optim.SGD(act.parameters(), lr=lr, momentum=momentum, nesterov=True)
    for _ in range(500):
        act.slope.grad = torch.full((channels,), 0.5 * lam / channels)
        opt.step()
        proximal_step_(act, lr * lam / channels)
    assert bool((act.slope < 1).all())


def _prox_run(form: str, mean: float, noise: float, steps: int = 400, lr: float = 0.05, lam: float = 2.0,
              channels: int = 64, start: float = 1.0) -> torch.Tensor:
    """Slopes under gradients ``mean·λ/C`` plus Gaussian noise of ``noise·λ/C`` per step (plain SGD):
    whether each slope sits exactly at 1, per step."""
    gen = torch.Generator().manual_seed(0)
    act = SparsePReLU(channels, init=start)
    shadows = [act.slope.detach().clone()]
    threshold, total, linear = lr * lam / channels, 0.0, []
    for _ in range(steps):
        g = (mean + noise * torch.randn(channels, generator=gen)) * lam / channels
        before = [act.slope.detach().clone()]
        with torch.no_grad():
            act.slope.sub_(lr * g)
        total += threshold
        if form == "lazy":
            lazy_proximal_step_([act.slope], shadows, before, total)
        else:
            proximal_step_(act, threshold)
        linear.append(act.slope.detach() == 1)
    return torch.stack(linear)


def test_the_lazy_prox_is_the_step_prox_while_no_slope_reaches_one():
    slopes = {}
    for form in ("step", "lazy"):
        gen = torch.Generator().manual_seed(0)
        act = SparsePReLU(5, init=0.25)
        shadows, total = [act.slope.detach().clone()], 0.0
        for _ in range(50):
            before = [act.slope.detach().clone()]
            with torch.no_grad():
                act.slope.add_(0.01 * torch.randn(5, generator=gen))
            total += 0.004
            if form == "lazy":
                lazy_proximal_step_([act.slope], shadows, before, total)
            else:
                proximal_step_(act, 0.004)
        slopes[form] = act.slope.detach()
    assert bool((slopes["step"] < 0.6).all())  # none came near 1
    assert torch.allclose(slopes["lazy"], slopes["step"], atol=1e-6)


def test_the_lazy_prox_keeps_a_channel_linear_that_noise_pulls_off_one_step_at_a_time():
    """Mean gradient half of λ/C, noise twice it: the objective says linear. The per-step prox lets
    every minibatch whose gradient beats λ/C pull the slope off 1 (the exact-zero count flickers);
    the lazy prox leaves 1 only when the gradients' sum does."""
    step, lazy = (_prox_run(form, mean=0.5, noise=2.0)[200:].float().mean().item() for form in ("step", "lazy"))
    assert step < 0.8 and lazy > 0.99, (step, lazy)


def test_the_lazy_prox_lets_go_of_a_channel_the_data_needs():
    """Mean gradient 1.5 λ/C: the objective says nonlinear, and the lazy prox agrees."""
    assert _prox_run("lazy", mean=1.5, noise=2.0)[200:].float().mean().item() < 0.05
