"""SGD with momentum, as ``torch.optim.SGD`` computes it, without its start-up cost.

``torch.optim.Optimizer`` imports ``torch._dynamo`` on first use (about 1.2 s per process), and
a study starts a training process per run: hundreds of them. This is the same update (weight
decay per group, heavy ball or Nesterov, no dampening) in ``torch._foreach`` ops, as
torch.optim.SGD runs it on CUDA; on the CPU they run tensor by tensor, bit for bit the
single-tensor path torch.optim.SGD takes there (tests/test_trainer.py compares them).
"""

from __future__ import annotations

import torch


class SGD:
    def __init__(self, groups: list[dict], lr: float, momentum: float, nesterov: bool):
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum requires a momentum > 0")
        self.param_groups = [{**g, "params": list(g["params"]), "lr": lr} for g in groups]
        self.momentum, self.nesterov = momentum, nesterov
        self.buffers: list[list[torch.Tensor | None]] = [[None] * len(g["params"]) for g in self.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        for group, buffers in zip(self.param_groups, self.buffers, strict=True):
            live = [i for i, p in enumerate(group["params"]) if p.grad is not None]
            if not live:
                continue
            params = [group["params"][i] for i in live]
            grads = [p.grad for p in params]
            if group["weight_decay"]:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            if self.momentum:
                if any(buffers[i] is None for i in live):  # the first step: the buffer is the gradient
                    for i, g in zip(live, grads, strict=True):
                        buffers[i] = g.clone() if buffers[i] is None else buffers[i].mul_(self.momentum).add_(g)
                else:
                    torch._foreach_mul_([buffers[i] for i in live], self.momentum)
                    torch._foreach_add_([buffers[i] for i in live], grads)
                bufs = [buffers[i] for i in live]
                grads = torch._foreach_add(grads, bufs, alpha=self.momentum) if self.nesterov else bufs
            torch._foreach_add_(params, grads, alpha=-group["lr"])

    def state_dict(self) -> dict:
        return {"momentum_buffers": [list(b) for b in self.buffers]}

    def load_state_dict(self, state: dict) -> None:
        buffers = state["momentum_buffers"]
        if [len(b) for b in buffers] != [len(b) for b in self.buffers]:
            raise ValueError("the saved momentum buffers do not fit this model's parameter groups")
        self.buffers = [[None if b is None else b.to(p.device, p.dtype) for b, p in zip(bs, g["params"], strict=True)]
                        for bs, g in zip(buffers, self.param_groups, strict=True)]
