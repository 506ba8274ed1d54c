"""The run configuration checked as a whole before anything starts (train.py before the process
group, launcher/preflight.py before a job is submitted): each mistake one UserError. What needs the
data, the model or the other ranks is checked where those exist."""
from __future__ import annotations

from collections.abc import Iterable

from ..errors import UserError
from .run_config import RunConfig


def validate_config(config: RunConfig, methods: Iterable[str]) -> None:
    """`methods`: the registered method names (fast_electra_ds.methods.METHODS)."""
    if not config.data.tokenizer:
        raise UserError("data.tokenizer is empty", "pass data.tokenizer=<tokenizer directory> (the one the shards were prepared with)")
    if not config.data.path:
        raise UserError("data.path is empty", "pass data.path=<directory written by fast-electra prepare, or Megatron .bin/.idx prefixes>")
    longest = max(phase.seq_len for phase in config.seq_len_phases())
    if longest > config.model.max_position_embeddings:
        where = "data.seq_len" if longest == config.data.seq_len else "data.seq_len_schedule length"
        raise UserError(f"{where} {longest} exceeds model.max_position_embeddings {config.model.max_position_embeddings}",
                        f"shorten it or raise model.max_position_embeddings to at least {longest}")
    methods = sorted(methods)
    if config.method not in methods:
        raise UserError(f"unknown method {config.method!r}", f"use one of {', '.join(methods)}")
