"""Optimizer parameter groups whose parameters did not run this step: learning rate 0, so AdamW
moves them not at all (neither the update nor weight decay, which it scales by lr).

Why zero gradients are not enough: AdamW's momentum and weight decay still move a parameter whose
gradient is zero, and DeepSpeed ZeRO-3 does not even give zero: a parameter that got no gradient in a
step keeps, in its flat gradient partition, the gradient of the last step it ran (stage3.py
partition_grads writes only the partitions of parameters that had gradients, and nothing clears the
buffer), which the optimizer would apply again. Plain torch optimizers skip parameters whose .grad is
None, so there (tests, benchmarks) this is a no-op in effect.

What remains: the skipped groups' Adam moments still see that stale gradient (lr 0 does not stop
the moment update), and their step count advances."""
from __future__ import annotations

from typing import Any

import torch


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


class SkippedGroups:
    """Sets lr = 0 on the skipped groups right before each optimizer step. DeepSpeed's scheduler
    rewrites every group's lr after the step; without a scheduler nobody would, so a group zeroed
    before the previous call whose lr is still 0 gets its lr back first. (A scheduler that itself
    sets exactly 0 after a step in which that group was skipped would be undone for one step.)"""

    def __init__(self) -> None:
        self.parked: dict[int, float] = {}  # group index -> its lr before we zeroed it

    def apply(self, param_groups: list[dict[str, Any]], names: list[str], skipped: set[str]) -> None:
        """`names`: the group names in the order the method returned them from param_groups()
        (DeepSpeed keeps that order; names are checked when the optimizer kept them)."""
        if len(param_groups) != len(names):
            raise RuntimeError(f"the optimizer has {len(param_groups)} parameter groups, the method made {len(names)}")
        for index, (group, name) in enumerate(zip(param_groups, names)):
            if group.get("name", name) != name:
                raise RuntimeError(f"optimizer group {index} is {group.get('name')!r}, expected {name!r}")
            if index in self.parked and group["lr"] == 0.0:
                group["lr"] = self.parked[index]
            self.parked.pop(index, None)
            if name in skipped:
                self.parked[index] = group["lr"]
                group["lr"] = 0.0
