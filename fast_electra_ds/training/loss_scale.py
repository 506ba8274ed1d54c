"""Steps that fp16's dynamic loss scaler skips.

On an overflow DeepSpeed discards the update and halves the scale, and then (engine._take_model_step):
global_steps and global_samples still advance, the lr scheduler does not, skipped_steps counts it.
The trainer follows that: its step counter and consumed_samples advance (the batch is consumed, not
repeated), while the method's schedules (the temperature curriculum, adaptive exits, table refreshes)
run on the lr scheduler's clock, the updates actually applied, and do not learn from a skipped step.
With bf16 or fp32 no step is skipped and both clocks are the same."""
from __future__ import annotations

from typing import Any

from ..methods import Method, StepContext


def schedule_clock(engine: Any, step: int, total_steps: int) -> tuple[int, float]:
    """(applied updates so far, their fraction of training) for the StepContext of step `step`.
    engine.skipped_steps is saved and restored with DeepSpeed's checkpoint, so a resumed run agrees."""
    applied = step - engine.skipped_steps
    return applied, applied / total_steps


def end_applied_step(engine: Any, method: Method, ctx: StepContext, metrics: dict[str, float]) -> bool:
    """After the step's last engine.step(): let the method's schedules advance only if the update
    was applied. Returns whether it was."""
    applied = engine.was_step_applied()
    if applied:
        method.end_step(ctx, metrics)
    return applied
