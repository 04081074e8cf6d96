"""The AdamW of transformers 4.x (``transformers.AdamW``), which the official RMU code trains with.

Its update differs from ``torch.optim.AdamW``: eps is added to sqrt(v) *before* the bias
correction is applied to the step size,

    p -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)

so early steps behave as if eps were ~30x larger than in torch's AdamW. The class was removed
in transformers 5; reference runs need the formula itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


class LegacyAdamW(torch.optim.Optimizer):
    """transformers 4.x ``AdamW`` (correct_bias=True, decoupled weight decay applied after the step)."""

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
    ) -> None:
        if lr < 0 or eps < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"Invalid LegacyAdamW settings: lr={lr}, betas={betas}, eps={eps}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - torch.optim.Optimizer.step
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(p.grad, alpha=1.0 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(p.grad, p.grad, value=1.0 - beta2)
                denom = exp_avg_sq.sqrt().add_(group["eps"])
                step_size = group["lr"] * math.sqrt(1.0 - beta2 ** state["step"]) / (1.0 - beta1 ** state["step"])
                p.addcdiv_(exp_avg, denom, value=-step_size)
                if group["weight_decay"] > 0.0:
                    p.add_(p, alpha=-group["lr"] * group["weight_decay"])
        return loss


class MasterWeights:
    """Optimizer wrapper keeping a float32 master copy of each low-precision trained tensor.

    bfloat16 holds 8 significant bits: an update smaller than half the spacing between
    neighbouring bf16 values rounds away, so at lr 5e-5 about half the elements of a bf16
    down-projection never move (docs/devices.md). Here the inner optimizer steps the float32
    masters, with the gradients upcast, and each trained tensor is then set to its master
    rounded to its own dtype: small updates accumulate in the master until they show.
    The masters are part of :meth:`state_dict`, so a checkpoint resumes exactly.
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], make_optimizer, dtype: torch.dtype = torch.float32) -> None:
        self.params = list(params)
        self.masters = [p.detach().to(dtype).clone() for p in self.params]
        self.optimizer = make_optimizer(self.masters)

    @property
    def param_groups(self) -> list[dict]:
        return self.optimizer.param_groups

    @property
    def state(self):
        return self.optimizer.state

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()
        self.optimizer.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - torch.optim.Optimizer.step
        loss = closure() if closure is not None else None
        for p, master in zip(self.params, self.masters):
            master.grad = None if p.grad is None else p.grad.to(master.dtype)
        self.optimizer.step()
        for p, master in zip(self.params, self.masters):
            p.copy_(master)
        return loss

    def state_dict(self) -> dict:
        """The inner optimizer's state with each parameter's master copy under ``"master"``."""
        inner = self.optimizer.state_dict()
        state = {index: dict(inner["state"].get(index, {})) for index in range(len(self.masters))}
        for index, master in enumerate(self.masters):
            state[index]["master"] = master
        return {"state": state, "param_groups": inner["param_groups"]}

    def load_state_dict(self, state_dict: dict) -> None:
        state = {int(i): dict(s) for i, s in state_dict["state"].items()}
        with torch.no_grad():
            for index, master in enumerate(self.masters):
                master.copy_(state[index].pop("master"))
        self.optimizer.load_state_dict({"state": {i: s for i, s in state.items() if s}, "param_groups": state_dict["param_groups"]})
