"""The divergence guard: a non-finite loss on an applied step, or too many fp16-overflow skips in a
window, is divergence; a non-finite loss on a skipped step only counts as a skip; non-finite weights
are found; the run stops with one line naming the step and the last good checkpoint."""
import pytest
import torch

from fast_electra_ds.errors import UserError
from fast_electra_ds.config.run_config import load_config
from fast_electra_ds.training.divergence import Divergence, DivergenceGuard, stop_diverged, weights_are_finite

pytestmark = pytest.mark.usefixtures("world_of_one")
CPU = torch.device("cpu")


def test_a_non_finite_loss_on_an_applied_step_is_divergence():
    guard = DivergenceGuard(CPU, window=4, max_skipped_share=0.5)
    guard.see_loss(torch.tensor(2.0))
    assert guard.end_step(applied=True) is None
    guard.see_loss(torch.tensor(float("nan")))
    guard.see_loss(torch.tensor(1.0))  # a later finite micro-batch does not hide it
    assert "not finite" in guard.end_step(applied=True)


def test_without_a_loss_scaler_a_non_finite_loss_is_divergence_even_on_a_skipped_step():
    guard = DivergenceGuard(CPU, window=4, max_skipped_share=0.5, loss_scaled=False)  # bf16 / fp32
    guard.see_loss(torch.tensor(float("nan")))
    assert "not finite" in guard.end_step(applied=False)
    scaled = DivergenceGuard(CPU, window=4, max_skipped_share=0.5, loss_scaled=True)  # fp16: a recoverable overflow
    scaled.see_loss(torch.tensor(float("nan")))
    assert scaled.end_step(applied=False) is None


def test_skips_stop_the_run_only_past_the_share_of_a_full_window():
    guard = DivergenceGuard(CPU, window=4, max_skipped_share=0.5)
    guard.see_loss(torch.tensor(float("inf")))  # fp16: the scaler skipped it, the weights are untouched
    verdicts = [guard.end_step(applied=False)]
    verdicts += [guard.end_step(applied=a) for a in (True, False, True, False)]  # 2 of the last 4 skipped: not more than half
    assert verdicts == [None] * 5
    assert "3 of the last 4 steps were skipped" in guard.end_step(applied=False)


def test_non_finite_weights_are_found():
    model = torch.nn.Linear(3, 2)
    assert weights_are_finite(model, CPU)
    with torch.no_grad():
        model.weight[1, 2] = float("nan")
    assert not weights_are_finite(model, CPU)


def test_the_stop_is_one_line_naming_the_step_and_the_last_good_checkpoint():
    with pytest.raises(Divergence) as stopped:
        stop_diverged(0, 53, "the loss is not finite", "runs/x/checkpoints/step_00000050")
    text = str(stopped.value)
    assert "\n" not in text and "step 53" in text and "step_00000050" in text and stopped.value.exit_code == 4
    assert stopped.value.known_to_every_rank  # an agreed stop: no rank is told again through the store


def test_the_other_ranks_leave_quietly_with_the_stops_status(monkeypatch):
    from fast_electra_ds.runtime import resources

    monkeypatch.setattr(resources.time, "sleep", lambda seconds: None)
    with pytest.raises(SystemExit) as left:
        stop_diverged(1, 53, "the loss is not finite", None)
    assert left.value.code == 4


@pytest.mark.parametrize("override, fragment", [
    ("train.steps=0", "train.steps is 0"),
    ("train.steps=-5", "train.steps is -5"),
    ("train.log_every=0", "train.log_every is 0"),
    ("train.save_every_minutes=-5", "train.save_every_minutes is -5"),
    ("train.save_every_minutes=nan", "train.save_every_minutes is nan"),
    ("train.collective_timeout_minutes=0", "train.collective_timeout_minutes is 0"),
    ("optim.lr=nan", "optim.lr is nan"),
    ("optim.lr=-1", "optim.lr is -1"),
    ("train.max_skipped_share=0", "max_skipped_share"),
    ("train.on_divergence=retry", "train.on_divergence is 'retry'"),
    ("train.max_rollbacks=-1", "train.max_rollbacks is -1"),
])
def test_values_no_run_can_use_are_one_line(override, fragment):
    with pytest.raises(UserError, match=fragment):
        load_config([], [override])


def test_rollback_is_refused_where_its_data_position_cannot_hold():
    """After a rollback the run reads past its planned samples: a later switch of length would rebuild
    another position, and a replacements pass has no samples there."""
    with pytest.raises(UserError, match="on_divergence=rollback does not work with a multi-length"):
        load_config([], ["data.seq_len=64", "data.seq_len_schedule=32:0.5", "train.on_divergence=rollback"])
    with pytest.raises(UserError, match="does not work with aux.replacements"):
        load_config([], ["method=fast", "aux.replacements=/somewhere", "train.on_divergence=rollback"])
    assert load_config([], ["train.on_divergence=rollback"]).train.on_divergence == "rollback"


def test_a_reset_guard_forgets_the_diverged_window():
    guard = DivergenceGuard(CPU, window=2, max_skipped_share=0.5)
    guard.see_loss(torch.tensor(float("nan")))
    guard.end_step(applied=False)  # one skip of a window of two
    guard.see_loss(torch.tensor(float("nan")))
    guard.reset()
    assert guard.end_step(applied=True) is None  # neither the pending loss nor the earlier skip counts
