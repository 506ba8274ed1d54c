"""Safe defaults: a run checkpoints every N steps or M minutes of wall time, whichever comes first,
and validates at an interval, unless told otherwise; every rank takes the same wall-clock decision."""
import subprocess
import sys

import torch.distributed as dist
import torch.multiprocessing as mp

from fast_electra_ds.config.run_config import RunConfig, load_config
from fast_electra_ds.training.trainer import SaveClock, StopSignal
from tests.helpers import ROOT, cpu_env, free_port


def test_a_default_run_checkpoints_and_validates_on_its_way():
    train = RunConfig().train
    assert train.save_every > 0 and train.save_every_minutes > 0 and train.eval_every > 0 and train.keep_last > 0
    assert train.safety_summary() == (f"checkpoints every {train.save_every} steps or every {train.save_every_minutes:g} minutes "
                                      f"of wall time, whichever comes first, and at the end (the newest {train.keep_last} kept); "
                                      f"validation every {train.eval_every} steps and at the last step")


def test_rules_turned_off_are_said_so():
    train = load_config([], ["train.save_every=0", "train.save_every_minutes=0", "train.eval_every=0", "train.keep_last=0"]).train
    assert train.safety_summary() == "checkpoints at the end (all kept); validation at the last step"
    train = load_config([], ["train.save_every=0", "train.save_every_minutes=5.5"]).train
    assert train.safety_summary().startswith("checkpoints every 5.5 minutes of wall time and at the end")


def test_help_states_the_defaults():
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), "--help"], env=cpu_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert " ".join(result.stdout.split()).count(RunConfig().train.safety_summary()) == 1


def test_save_clock_is_due_after_its_minutes_and_restarts_at_each_save():
    now = [100.0]
    clock = SaveClock(2, clock=lambda: now[0])
    now[0] += 119
    assert not clock.due()
    now[0] += 1
    assert clock.due()
    clock.reset()
    assert not clock.due()
    now[0] += 1e6
    assert not SaveClock(0, clock=lambda: now[0]).due()  # 0: off


def _agree(rank, port, results):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    import torch

    stop = StopSignal()
    stop.received = False
    results[rank] = [stop.agreed(torch.device("cpu"), save_due=(rank == 1)), stop.agreed(torch.device("cpu"), save_due=False)]
    dist.destroy_process_group()


def test_a_save_due_on_one_rank_is_due_on_every_rank():
    """Ranks' clocks drift apart; the checkpoint must still be taken by all or none."""
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_agree, args=(free_port(), results), nprocs=2)
        assert dict(results) == {0: [(False, True), (False, False)], 1: [(False, True), (False, False)]}
