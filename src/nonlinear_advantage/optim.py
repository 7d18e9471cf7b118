"""SGD with momentum, as ``torch.optim.SGD`` computes it on the CPU, without its start-up cost.

``torch.optim.Optimizer`` imports ``torch._dynamo`` on first use (about 1.2 s per process), and
a study starts a training process per run: hundreds of them. This is the same update (weight
decay per group, heavy ball or Nesterov, no dampening), written out, bit for bit the
single-tensor path of ``torch.optim.SGD`` (tests/test_trainer.py compares them).
"""

from __future__ import annotations

import torch


class SGD:
    def __init__(self, groups: list[dict], lr: float, momentum: float, nesterov: bool):
        self.param_groups = [{**g, "params": list(g["params"]), "lr": lr} for g in groups]
        self.momentum, self.nesterov = momentum, nesterov
        self.buffers: list[list[torch.Tensor | None]] = [[None] * len(g["params"]) for g in self.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for group, buffers in zip(self.param_groups, self.buffers, strict=True):
            for i, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                d_p = p.grad if group["weight_decay"] == 0 else p.grad.add(p, alpha=group["weight_decay"])
                if self.momentum:
                    if buffers[i] is None:
                        buffers[i] = d_p.clone()
                    else:
                        buffers[i].mul_(self.momentum).add_(d_p)
                    d_p = d_p.add(buffers[i], alpha=self.momentum) if self.nesterov else buffers[i]
                p.add_(d_p, alpha=-group["lr"])

    def state_dict(self) -> dict:
        return {"momentum_buffers": [list(b) for b in self.buffers]}

    def load_state_dict(self, state: dict) -> None:
        buffers = state["momentum_buffers"]
        if [len(b) for b in buffers] != [len(b) for b in self.buffers]:
            raise ValueError("the saved momentum buffers do not fit this model's parameter groups")
        self.buffers = [[None if b is None else b.to(p.device, p.dtype) for b, p in zip(bs, g["params"], strict=True)]
                        for bs, g in zip(buffers, self.param_groups, strict=True)]
