"""model.compile: torch.compile of each transformer block's forward, not of the whole engine.

Compiling the whole engine module (engine.compile()) traces ZeRO-3's parameter-fetch hooks on every
submodule and the losses' boolean indexing, and breaks the graph at each (measured on CPU for
`fast`: ~110 graph breaks, 76 of them at module hooks). Instead each block is a ZeRO-3 leaf module
(one fetch hook for the whole block, outside its forward) and only the block's forward is compiled,
so each compiled graph is one whole block with no break; embeddings, heads and losses run eagerly.
Call before deepspeed.initialize, which registers the hooks."""
from __future__ import annotations

import torch


def transformer_blocks(module: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks of every Hugging Face encoder in `module`: the items of each
    `<encoder>.layer` ModuleList."""
    blocks = []
    for name, child in module.named_modules():
        if isinstance(child, torch.nn.ModuleList) and name.rsplit(".", 1)[-1] == "layer" and ".encoder" in f".{name}":
            blocks.extend(child)
    return blocks


def compile_blocks(module: torch.nn.Module) -> int:
    """Mark each block a ZeRO-3 leaf and compile its forward; returns how many blocks."""
    from deepspeed.utils import set_z3_leaf_module

    blocks = transformer_blocks(module)
    for block in blocks:
        set_z3_leaf_module(block, True)
        block.forward = torch.compile(block.forward)
    return len(blocks)
