"""The values no run can work with (a step count, a rate, a policy name), checked as one line when the
config loads, before any process group. Checks that need the files or the methods are validate.py's."""
from __future__ import annotations

import math

from ..errors import UserError

CORRUPTION_RNG = ("step", "sample")  # data.corruption_rng: the masks' random streams (docs/offline-replacements.md)


def check_values(config) -> None:
    """Values no run can work with, as one line before any process group starts."""
    train, lr = config.train, config.optim.lr
    if train.steps <= 0:
        raise UserError(f"train.steps is {train.steps}; a run needs at least one step", "pass train.steps=<a positive number>")
    if train.log_every <= 0:
        raise UserError(f"train.log_every is {train.log_every}; it must be at least 1", "e.g. train.log_every=10")
    for key in ("save_every", "save_every_minutes", "eval_every", "stop_after", "keep_last", "stall_minutes", "max_rollbacks"):
        if not getattr(train, key) >= 0:  # NaN too
            raise UserError(f"train.{key} is {getattr(train, key)}; it must not be negative", f"pass train.{key}=0 or a positive number")
    config.curriculum.check()
    config.seq_len_phases()
    if config.data.corruption_rng not in CORRUPTION_RNG:
        raise UserError(f"unknown data.corruption_rng {config.data.corruption_rng!r}", f"use one of {', '.join(CORRUPTION_RNG)}")
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise UserError(f"optim.lr is {lr}; it must be a positive finite number", "e.g. optim.lr=5e-4")
    if not train.collective_timeout_minutes > 0:
        raise UserError(f"train.collective_timeout_minutes is {train.collective_timeout_minutes}; it must be positive",
                        "e.g. train.collective_timeout_minutes=30")
    if not 0 < train.max_skipped_share <= 1 or train.skipped_window < 1:
        raise UserError(f"train.max_skipped_share {train.max_skipped_share} / train.skipped_window {train.skipped_window} are out of range",
                        "give a share in (0, 1] (1: never stop on skipped steps) and a window of at least 1 step")
    if train.on_divergence not in ("stop", "rollback"):
        raise UserError(f"train.on_divergence is {train.on_divergence!r}", "use stop (exit 4) or rollback (reload the newest checkpoint and skip the samples since)")
    if train.on_divergence == "rollback" and len(config.seq_len_phases()) > 1:
        raise UserError("train.on_divergence=rollback does not work with a multi-length data.seq_len_schedule yet",
                        "use train.on_divergence=stop, or train the phases as separate runs")
    if train.on_divergence == "rollback" and config.aux.replacements:
        raise UserError("train.on_divergence=rollback does not work with aux.replacements (a rollback reads past the samples the pass made)",
                        "use train.on_divergence=stop with precomputed replacements")
