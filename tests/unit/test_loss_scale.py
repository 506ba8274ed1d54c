"""fp16 overflow: the trainer's step bookkeeping against a stand-in engine that skips steps as
DeepSpeed's _take_model_step does (global_steps advances, lr scheduler and skipped_steps as below)."""
import math

from fast_electra_ds.training.loss_scale import end_applied_step, schedule_clock
from fast_electra_ds.methods import StepContext
from fast_electra_ds.methods.curriculum import temperature


class OverflowingEngine:
    """DeepSpeed's accounting of one optimizer step, with an overflow on the chosen steps."""

    def __init__(self, overflow_at: set[int]):
        self.overflow_at, self.global_steps, self.skipped_steps, self.scheduler_steps = overflow_at, 0, 0, 0
        self._applied = False

    def step(self) -> None:
        self._applied = self.global_steps not in self.overflow_at
        if self._applied:
            self.scheduler_steps += 1
        else:
            self.skipped_steps += 1
        self.global_steps += 1

    def was_step_applied(self) -> bool:
        return self._applied


class RecordingMethod:
    def __init__(self):
        self.ended: list[int] = []

    def end_step(self, ctx, metrics) -> None:
        self.ended.append(ctx.step)


def run_loop(engine, method, steps: int, total: int, start_step: int = 0):
    """The trainer's loop, reduced to its step bookkeeping."""
    step, consumed, seen = start_step, start_step * 8, []
    for _ in range(steps):
        applied_steps, progress = schedule_clock(engine, step, total)
        ctx = StepContext(applied_steps, progress, None)
        seen.append((step, ctx.step, temperature(ctx.progress, 2.0, 0.3)))
        engine.step()
        step, consumed = step + 1, consumed + 8
        end_applied_step(engine, method, ctx, {"rtd_acc": 0.5})
    return step, consumed, seen


def test_skipped_steps_advance_the_counter_not_the_schedules():
    engine, method = OverflowingEngine(overflow_at={0, 1, 5}), RecordingMethod()
    step, consumed, seen = run_loop(engine, method, steps=10, total=10)
    assert step == engine.global_steps == 10 and consumed == 80  # as DeepSpeed's global_steps / global_samples
    # the schedules' clock is the lr scheduler's: updates applied
    assert [clock for _, clock, _ in seen] == [0, 0, 0, 1, 2, 3, 3, 4, 5, 6]
    assert engine.scheduler_steps == 7 == seen[-1][1] + 1
    # a skipped step's metrics reach no adaptive schedule, and each applied update ends exactly once
    assert method.ended == [0, 1, 2, 3, 4, 5, 6]
    # the temperature holds through skipped steps (T0 = 2 while nothing was applied)
    assert [t for _, _, t in seen[:3]] == [2.0, 2.0, 2.0] and seen[3][2] < 2.0
    assert math.isclose(seen[6][2], seen[5][2])


def test_without_overflow_both_clocks_agree():
    engine, method = OverflowingEngine(overflow_at=set()), RecordingMethod()
    _, _, seen = run_loop(engine, method, steps=5, total=5)
    assert [(s, c) for s, c, _ in seen] == [(i, i) for i in range(5)]
    assert method.ended == list(range(5))


def test_resume_restores_the_schedule_clock():
    """engine.skipped_steps comes back with DeepSpeed's checkpoint, so a resumed run continues the
    same schedule as an uninterrupted one."""
    whole = OverflowingEngine(overflow_at={1, 2})
    _, _, uninterrupted = run_loop(whole, RecordingMethod(), steps=6, total=6)
    first = OverflowingEngine(overflow_at={1, 2})
    run_loop(first, RecordingMethod(), steps=3, total=6)
    resumed = OverflowingEngine(overflow_at={1, 2})
    resumed.global_steps, resumed.skipped_steps = first.global_steps, first.skipped_steps  # load_checkpoint
    _, _, after = run_loop(resumed, RecordingMethod(), steps=3, total=6, start_step=3)
    assert after == uninterrupted[3:]
