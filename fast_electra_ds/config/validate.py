"""The run configuration checked as a whole before anything starts (train.py before the process
group, launcher/preflight.py before a job is submitted): each mistake one UserError. What needs the
data, the model or the other ranks is checked where those exist."""
from __future__ import annotations

from collections.abc import Iterable

from ..data.blend import parse_blend
from ..errors import UserError
from .run_config import RunConfig


def validate_config(config: RunConfig, methods: Iterable[str]) -> None:
    """`methods`: the registered method names (fast_electra_ds.methods.METHODS)."""
    if not config.data.tokenizer:
        raise UserError("data.tokenizer is empty", "pass data.tokenizer=<tokenizer directory> (the one the shards were prepared with)")
    if not config.data.path:
        raise UserError("data.path is empty", "pass data.path=<directory written by fast-electra prepare, or Megatron .bin/.idx prefixes>")
    blend = parse_blend(config.data.path)  # a malformed weighted blend, before any process group
    longest = max(phase.seq_len for phase in config.seq_len_phases())
    if longest > config.model.max_position_embeddings:
        where = "data.seq_len" if longest == config.data.seq_len else "data.seq_len_schedule length"
        raise UserError(f"{where} {longest} exceeds model.max_position_embeddings {config.model.max_position_embeddings}",
                        f"shorten it or raise model.max_position_embeddings to at least {longest}")
    if blend is not None and len({phase.seq_len for phase in config.seq_len_phases()}) > 1:
        raise UserError("data.seq_len_schedule does not work with a weighted blend in data.path yet",
                        "train the phases as separate runs (--resume with a new data.seq_len), or blend the corpora in prepare")
    methods = sorted(methods)
    if config.method not in methods:
        raise UserError(f"unknown method {config.method!r}", f"use one of {', '.join(methods)}")
