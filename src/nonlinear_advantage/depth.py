"""Effective depth: the average path length (APL) over the channel graph of a network.

The network is traced with torch.fx. Nodes of the channel graph are the channels of each
traced tensor; a path picks one channel per layer. One pass of dynamic programming in
topological order carries, per channel:

* normalized APL, a random walk: ``mass`` (probability of being here) and ``hits``
  (mass-weighted nonlinear units met so far). A tensor with k consumers gives each 1/k
  of its mass, a channel-mixing layer spreads mass uniformly over its outputs, and an
  add sums the masses of its inputs.
* unnormalized APL, every channel-level path weighted equally: ``paths`` (number of
  paths reaching the channel) and ``units`` (nonlinear units summed over those paths).
  Path counts grow like width**depth, so each tensor carries a log scale.

An activation adds ``mask[c]`` to every path through channel c: one for a nonlinear
channel (``|1 - a_c| > eps``), zero for a linear one. ReLUs are fully nonlinear.
Cost is linear in the graph size times the width.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from .prelu import SparsePReLU, sparse_prelus

SLOPE_QUANTILES = (0.1, 0.5, 0.9)  # of |1 - a| over a net's PReLU channels: summary's slope_q10, _q50, _q90
MIXING_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
ADD_OPS = {operator.add, operator.iadd, torch.add, "add", "add_"}
RELU_FUNCS = {F.relu, torch.relu, "relu", "relu_"}
RESHAPE_OPS = {torch.flatten, torch.reshape, "view", "reshape", "flatten"}
IGNORED_OPS = {"size", getattr, operator.getitem, "dim"}


@dataclass
class Flow:
    """What reaches one traced tensor, per channel (float64 vectors)."""

    mass: torch.Tensor
    hits: torch.Tensor
    paths: torch.Tensor  # scaled by exp(log_scale)
    units: torch.Tensor  # scaled by exp(log_scale)
    log_scale: float = 0.0

    def scaled(self, factor: float) -> Flow:
        return Flow(self.mass * factor, self.hits * factor, self.paths, self.units, self.log_scale)


@dataclass
class LayerRow:
    name: str
    width: int
    nonlinear: int
    P: float  # walk probability that reaches the activation
    contribution: float  # P-weighted fraction of nonlinear channels: its share of the APL


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        # ReLU subclasses (models.ReLU) live outside torch.nn: keep them leaves too, so
        # profile rows carry module names for baselines as for PReLU nets.
        return isinstance(m, (SparsePReLU, nn.ReLU)) or super().is_leaf_module(m, qualname)


def _channels(shape: torch.Size) -> int:
    return int(shape[1]) if len(shape) >= 2 else 1


class _Shapes(fx.Interpreter):
    """Records each node's output shape in ``node.meta["shape"]``. (fx's ShapeProp does too, but
    imports torch's symbolic-shapes machinery: half a second in every training and measure process.)"""

    def run_node(self, node: fx.Node):
        result = super().run_node(node)
        if isinstance(result, torch.Tensor):
            node.meta["shape"] = result.shape
        return result


def _renormalize(flow: Flow) -> Flow:
    peak = float(flow.paths.max())
    if peak > 0:
        flow.paths, flow.units = flow.paths / peak, flow.units / peak
        flow.log_scale += math.log(peak)
    return flow


def _mix(flow: Flow, cout: int, groups: int = 1) -> Flow:
    """A channel-mixing layer: every output channel of a group sees every input of it."""
    def spread(v, uniform):
        per_group = v.view(groups, -1).sum(1, keepdim=True)
        if uniform:
            per_group = per_group / (cout // groups)
        return per_group.expand(groups, cout // groups).reshape(cout).clone()

    return _renormalize(
        Flow(spread(flow.mass, True), spread(flow.hits, True),
             spread(flow.paths, False), spread(flow.units, False), flow.log_scale)
    )


def _merge(flows: list[Flow]) -> Flow:
    """Merge at an add: masses and path counts add, aligned to a common scale."""
    top = max(f.log_scale for f in flows)
    out = Flow(sum(f.mass for f in flows), sum(f.hits for f in flows), 0, 0, top)
    out.paths = sum(f.paths * math.exp(f.log_scale - top) for f in flows)
    out.units = sum(f.units * math.exp(f.log_scale - top) for f in flows)
    return out


def _reshape(flow: Flow, cout: int) -> Flow:
    """Flatten/view: each input channel becomes ``cout/cin`` features (NCHW order)."""
    cin = flow.mass.numel()
    if cout == cin:
        return flow
    if cout % cin:
        raise ValueError(f"cannot follow a reshape from {cin} to {cout} channels")
    k = cout // cin
    rep = lambda v: v.repeat_interleave(k)  # noqa: E731
    return Flow(rep(flow.mass) / k, rep(flow.hits) / k, rep(flow.paths), rep(flow.units), flow.log_scale)


def _activate(flow: Flow, mask: torch.Tensor) -> Flow:
    m = mask.to(torch.float64)
    return Flow(flow.mass, flow.hits + m * flow.mass, flow.paths, flow.units + m * flow.paths, flow.log_scale)


def _mask_of(module: nn.Module | None, width: int, eps: float) -> torch.Tensor:
    if isinstance(module, SparsePReLU):
        return ((1 - module.slope.detach().double()).abs() > eps).cpu()
    return torch.ones(width, dtype=torch.bool)  # a ReLU is fully nonlinear


def _trace(model: nn.Module, example_input: torch.Tensor) -> fx.GraphModule:
    graph = _Tracer().trace(model)
    gm = fx.GraphModule(model, graph)
    was_training = model.training
    gm.eval()  # batch statistics of one sample would fail in BatchNorm
    with torch.no_grad():
        _Shapes(gm).run(example_input[:1])
    model.train(was_training)
    return gm


def _target_key(node: fx.Node):
    return node.target if node.op in ("call_function", "call_method") else None


def _flow_through(model: nn.Module, example_input: torch.Tensor, eps: float):
    """Run the dynamic programme; returns the output Flow and one LayerRow per activation."""
    gm = _trace(model, example_input)
    modules = dict(gm.named_modules())
    flows: dict[fx.Node, Flow] = {}
    rows: list[LayerRow] = []

    def consumers(node: fx.Node) -> int:
        return sum(1 for u in node.users if _target_key(u) not in IGNORED_OPS)

    def inputs_of(node: fx.Node) -> list[Flow]:
        args: list[fx.Node] = []
        fx.node.map_arg((node.args, node.kwargs), lambda a: args.append(a) or a)
        return [flows[a].scaled(1 / consumers(a)) for a in dict.fromkeys(args) if a in flows]

    for node in gm.graph.nodes:
        if node.op == "placeholder":
            c = _channels(node.meta["shape"])
            ones = torch.ones(c, dtype=torch.float64)
            flows[node] = Flow(ones / c, torch.zeros(c, dtype=torch.float64), ones, torch.zeros_like(ones))
            continue
        if node.op == "output":
            (result,) = inputs_of(node)
            return result, rows
        if node.op == "get_attr" or _target_key(node) in IGNORED_OPS:
            continue
        ins = inputs_of(node)
        if not ins:
            continue  # a constant
        cout = _channels(node.meta["shape"])
        module = modules.get(node.target) if node.op == "call_module" else None
        key = _target_key(node)
        if isinstance(module, MIXING_MODULES):
            flows[node] = _mix(ins[0], cout, getattr(module, "groups", 1))
        elif isinstance(module, (SparsePReLU, nn.ReLU)) or key in RELU_FUNCS:
            mask = _mask_of(module, cout, eps)
            flow = ins[0]
            rows.append(LayerRow(
                name=node.target if module is not None else node.name,
                width=cout,
                nonlinear=int(mask.sum()),
                P=float(flow.mass.sum()),
                contribution=float((mask.double() * flow.mass).sum()),
            ))
            flows[node] = _activate(flow, mask)
        elif key in ADD_OPS or len(ins) > 1:
            if key not in ADD_OPS:
                raise ValueError(f"APL: cannot follow {node.format_node()}: only adds may merge tensors")
            flows[node] = _merge(ins)
        elif isinstance(module, nn.Flatten) or key in RESHAPE_OPS:
            flows[node] = _reshape(ins[0], cout)
        elif ins[0].mass.numel() == cout:
            flows[node] = ins[0]  # channel-wise: norms, pooling, dropout, scaling
        else:
            raise ValueError(f"APL: cannot follow {node.format_node()}: it changes the channel count")
    raise ValueError("APL: the traced graph has no output")


def average_path_length(
    model: nn.Module, example_input: torch.Tensor, *, normalized: bool = True, eps: float = 0.0
) -> float:
    """Expected number of nonlinear units on a path from input to output.

    ``normalized=True`` is the random walk that splits evenly at every fork;
    ``normalized=False`` weights every channel-level path equally.
    """
    out, _ = _flow_through(model, example_input, eps)
    if normalized:
        return float(out.hits.sum() / out.mass.sum())
    return float(out.units.sum() / out.paths.sum())


def layer_profile(model: nn.Module, example_input: torch.Tensor, eps: float = 0.0) -> list[dict]:
    """One row per activation: name, width, nonlinear, P and its contribution to the APL."""
    _, rows = _flow_through(model, example_input, eps)
    return [dict(index=i, **vars(r)) for i, r in enumerate(rows)]


def slope_distances(model: nn.Module) -> torch.Tensor:
    """|1 - a_c| of every PReLU channel (float64; empty for a ReLU net): how far each is from
    linear, which the exact-zero count hides for channels the prior only partly linearized."""
    slopes = [(1 - m.slope.detach().double()).abs().flatten().cpu() for m in sparse_prelus(model)]
    return torch.cat(slopes) if slopes else torch.zeros(0, dtype=torch.float64)


def slope_quantiles(model: nn.Module, quantiles=SLOPE_QUANTILES) -> dict[str, float | None]:
    """``slope_q10`` ... : quantiles of |1 - a| (linear interpolation); None for a net without PReLUs."""
    distances = slope_distances(model)
    return {f"slope_q{round(100 * q)}": float(torch.quantile(distances, q)) if distances.numel() else None
            for q in quantiles}


def depth_summary(model: nn.Module, example_input: torch.Tensor, eps: float = 0.0,
                  depth_eps: float | None = None) -> dict:
    """Both APLs and the per-layer profile from one pass; with ``depth_eps``, also both APLs and
    the nonlinear count at that second threshold (``*_eps``: depth beyond exact zeros) and the
    slope quantiles."""
    out, rows = _flow_through(model, example_input, eps)
    summary = {
        "apl_normalized": float(out.hits.sum() / out.mass.sum()),
        "apl_unnormalized": float(out.units.sum() / out.paths.sum()),
        "nonlinear_channels": sum(r.nonlinear for r in rows),
        "total_channels": sum(r.width for r in rows),
    }
    if depth_eps is not None:
        out_eps, rows_eps = _flow_through(model, example_input, depth_eps)
        summary |= {
            "depth_eps": depth_eps,
            "apl_normalized_eps": float(out_eps.hits.sum() / out_eps.mass.sum()),
            "apl_unnormalized_eps": float(out_eps.units.sum() / out_eps.paths.sum()),
            "nonlinear_channels_eps": sum(r.nonlinear for r in rows_eps),
            **slope_quantiles(model),
        }
    return summary | {"layers": [dict(index=i, **vars(r)) for i, r in enumerate(rows)]}
