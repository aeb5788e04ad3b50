"""Ranger (RAdam + Lookahead + gradient centralisation), version 20.4.11 as pSp trains its encoder with it
(eladrich/pixel2style2pixel `training/ranger.py`, from lessw2020/Ranger-Deep-Learning-Optimizer).

Per parameter p with gradient g:
    g ← g − mean(g over all but dim 0)                     (gradient centralisation, tensors of dim > 1)
    m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²
    RAdam: ρ_t = ρ∞ − 2t·β2^t/(1−β2^t), ρ∞ = 2/(1−β2) − 1
      ρ_t > 5: p ← p − lr·r_t/(1−β1^t) · m/(√v + eps),  r_t = √((1−β2^t)(ρ_t−4)(ρ_t−2)ρ∞ / ((ρ∞−4)(ρ∞−2)ρ_t))
      else:    p ← p − lr/(1−β1^t) · m
    every k steps (Lookahead): slow ← slow + α·(p − slow); p ← slow

State per parameter: step, exp_avg, exp_avg_sq, slow_buffer (plain tensors: saved and resumed as-is).
"""

from __future__ import annotations

import math

import torch
from torch.optim.optimizer import Optimizer


class Ranger(Optimizer):
    """Defaults are the official ones (pSp passes only lr): α 0.5, k 6, threshold 5, β (0.95, 0.999), eps 1e-5."""

    def __init__(self, params, lr: float = 1e-3, alpha: float = 0.5, k: int = 6, n_sma_threshold: float = 5,
                 betas: tuple[float, float] = (0.95, 0.999), eps: float = 1e-5, weight_decay: float = 0.0):
        if not 0.0 <= alpha <= 1.0 or k < 1 or lr <= 0 or eps <= 0:
            raise ValueError(f"invalid Ranger settings: alpha {alpha}, k {k}, lr {lr}, eps {eps}")
        defaults = dict(lr=lr, alpha=alpha, k=k, n_sma_threshold=n_sma_threshold, betas=tuple(betas), eps=eps,
                        weight_decay=weight_decay)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.float().clone()
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                    state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
                    state["slow_buffer"] = p.detach().clone()
                if grad.dim() > 1:
                    grad -= grad.mean(dim=tuple(range(1, grad.dim())), keepdim=True)
                state["step"] += 1
                t = state["step"]
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                beta2_t = beta2**t
                n_sma_max = 2 / (1 - beta2) - 1
                n_sma = n_sma_max - 2 * t * beta2_t / (1 - beta2_t)
                data = p.float()
                if group["weight_decay"]:
                    data.add_(data, alpha=-group["weight_decay"] * group["lr"])
                if n_sma > group["n_sma_threshold"]:
                    step_size = math.sqrt((1 - beta2_t) * (n_sma - 4) / (n_sma_max - 4) * (n_sma - 2) / n_sma
                                          * n_sma_max / (n_sma_max - 2)) / (1 - beta1**t)
                    data.addcdiv_(exp_avg, exp_avg_sq.sqrt().add_(group["eps"]), value=-step_size * group["lr"])
                else:
                    data.add_(exp_avg, alpha=-group["lr"] / (1 - beta1**t))
                p.copy_(data)
                if t % group["k"] == 0:
                    slow = state["slow_buffer"]
                    slow.add_(p - slow, alpha=group["alpha"])
                    p.copy_(slow)
        return loss
