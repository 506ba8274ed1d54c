"""Optimizer parameter groups whose parameters did not run this step: their gradients set to zero
and their learning rate to 0, so AdamW moves them not at all (neither the update nor weight decay,
which it scales by lr).

Why both:
- lr 0: AdamW's momentum and weight decay move a parameter even when its gradient is zero.
- zero gradients: DeepSpeed ZeRO-3 keeps, for a parameter that got no gradient in a step, the gradient
  of the last step it ran (stage3.py partition_grads writes only the partitions of parameters that
  had gradients; nothing clears the buffer), and the optimizer would feed it to the Adam moments
  again. That made a resumed run (fresh, zero buffer) differ from an uninterrupted one. The gradient
  is cleared through DeepSpeed's public safe_set_local_grad. Plain torch optimizers skip parameters
  whose .grad is None, so there (tests, benchmarks) nothing needs clearing.
The skipped groups' Adam moments still decay (m <- beta1·m, v <- beta2·v) and their step count
advances, identically in a resumed run."""
from __future__ import annotations

from typing import Any

import torch

from .base import NO_DECAY


def named_groups(module: torch.nn.Module, parts: dict[str, list[torch.nn.Module]], rest: str = "shared") -> list[dict[str, Any]]:
    """One optimizer group per name in `parts` (the trainable parameters of its modules) and one
    `rest` group for every other trainable parameter of `module`; each parameter in exactly one group
    (a tied Parameter goes to the first part that owns it, the shared word embeddings to `rest`)."""
    owner: dict[int, str] = {}
    for name, modules in parts.items():
        for part in modules:
            for param in part.parameters():
                owner.setdefault(id(param), name)
    rest_params = [p for p in module.parameters() if p.requires_grad and id(p) not in owner]
    for param in rest_params:
        owner[id(param)] = rest
    groups = {name: [] for name in [rest, *parts]}
    for param in module.parameters():  # deduplicated: each Parameter once
        if param.requires_grad:
            groups[owner[id(param)]].append(param)
    return [{"name": name, "params": params} for name, params in groups.items() if params]


def clear_gradients(params: list[torch.nn.Parameter]) -> None:
    """Zero what the optimizer will read as these parameters' gradients: the ZeRO-3 partition this
    rank holds, or .grad (plain torch, ZeRO stages 0-2)."""
    for param in params:
        if hasattr(param, "ds_id"):
            from deepspeed.utils import safe_set_local_grad  # only under ZeRO-3

            safe_set_local_grad(param, torch.zeros(param.ds_tensor.numel(), dtype=torch.float32, device=param.ds_tensor.device))
        elif param.grad is not None:
            param.grad.zero_()


class SkippedGroups:
    """Made from the groups a method's param_groups() returned. Right before each optimizer step,
    `apply` clears the skipped groups' gradients and sets their lr to 0. DeepSpeed's scheduler
    rewrites every group's lr after the step; without a scheduler nobody would, so a group zeroed
    before the previous call whose lr is still 0 gets its lr back first. (A scheduler that itself sets
    exactly 0 after a step in which that group was skipped would be undone for one step.)"""

    def __init__(self, groups: list[dict[str, Any]]) -> None:
        self.names = [g["name"] for g in groups]
        self.params = {g["name"]: list(g["params"]) for g in groups}
        self.parked: dict[int, float] = {}  # group index -> its lr before we zeroed it

    def apply(self, param_groups: list[dict[str, Any]], skipped: set[str]) -> None:
        """`param_groups`: the optimizer's, in the order of the method's groups (DeepSpeed keeps
        that order; names are checked where the optimizer kept them)."""
        if len(param_groups) != len(self.names):
            raise RuntimeError(f"the optimizer has {len(param_groups)} parameter groups, the method made {len(self.names)}")
        for index, (group, name) in enumerate(zip(param_groups, self.names)):
            if group.get("name", name) != name:
                raise RuntimeError(f"optimizer group {index} is {group.get('name')!r}, expected {name!r}")
            if index in self.parked and group["lr"] == 0.0:
                group["lr"] = self.parked[index]
            self.parked.pop(index, None)
            if name.removesuffix(NO_DECAY) in skipped:  # both halves of a weight-decay split
                clear_gradients(self.params[name])
                self.parked[index] = group["lr"]
                group["lr"] = 0.0
