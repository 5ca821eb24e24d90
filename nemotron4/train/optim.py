"""AdamW with the family's public settings (docs/paper.md section 4): betas (0.9, 0.95), eps 1e-5, weight decay 0.1 on
matrices only (norms, biases and other 1-D parameters are not decayed)."""

from __future__ import annotations

import torch
from torch import nn

from nemotron4.train.config import OptimSection

__all__ = ["build_optimizer", "init_optimizer_state", "set_lr"]


def build_optimizer(model: nn.Module, cfg: OptimSection, device: torch.device) -> torch.optim.AdamW:
    """Two param groups (decay / no decay); fused AdamW on CUDA unless `cfg.fused` says otherwise.

    The LR starts at 0: the trainer sets it from the phase's schedule before every step.
    """
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    fused = device.type == "cuda" if cfg.fused == "auto" else cfg.fused == "true"
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(
        groups, lr=0.0, betas=(cfg.betas[0], cfg.betas[1]), eps=cfg.eps, fused=fused, foreach=None if fused else True
    )


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every param group's LR (the schedule is applied by the trainer, not by an LRScheduler)."""
    for group in optimizer.param_groups:
        group["lr"] = lr


@torch.no_grad()
def init_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Create AdamW's lazily-initialised state (step, exp_avg, exp_avg_sq) as zeros, so a checkpoint can be loaded
    into it in place. Mirrors `torch.optim.adamw._init_group` (step on the param's device when fused)."""
    for group in optimizer.param_groups:
        on_device = group.get("fused") or group.get("capturable")
        for p in group["params"]:
            state = optimizer.state[p]
            if state:
                continue
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device if on_device else "cpu")
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
