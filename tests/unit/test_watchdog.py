"""The hang watchdog's judgement, with a dict for the store and a hand-moved clock: a rank that
stops beating is named, a job whose ranks all beat but none advances is called a hang, progress
resets the stall window, and the final export watches only rank 0's heartbeat. The store's calls
end at a deadline even when its host never answers."""
import threading
import time
from pathlib import Path

import pytest

from fast_electra_ds.runtime.watchdog import (PEER_SILENT_EXIT, STALLED_EXIT, DeadlineStore, Watchdog, WatchdogThread,
                                              heartbeat_period, wait_for_export)


class DictStore:
    def __init__(self):
        self.data = {}

    def set(self, key, value):
        self.data[key] = value.encode()

    def get(self, key):
        return self.data[key]

    def check(self, keys):
        return all(k in self.data for k in keys)


class Job:
    """Several ranks' watchdogs on one store and one clock; each rank's step is set by hand."""

    def __init__(self, world_size=2, stall_s=60.0):
        self.now = 0.0
        self.store = DictStore()
        self.steps = [0] * world_size
        self.dogs = [Watchdog(r, world_size, stall_s, self.store, (lambda r=r: self.steps[r]), clock=lambda: self.now)
                     for r in range(world_size)]
        self.period = heartbeat_period(stall_s)

    def run(self, seconds, beating=None, advancing=False):
        """Move the clock period by period; ranks in `beating` (default all) beat; returns the verdicts seen."""
        beating = range(len(self.dogs)) if beating is None else beating
        verdicts = {}
        for _ in range(int(seconds / self.period)):
            self.now += self.period
            if advancing:
                self.steps = [s + 1 for s in self.steps]
            for r in beating:
                verdict = self.dogs[r].beat()
                if verdict is not None:
                    verdicts.setdefault(r, verdict)
        return verdicts


def test_progress_never_fires():
    job = Job()
    assert job.run(600, advancing=True) == {}


def test_a_stopped_rank_is_named_by_the_others():
    job = Job(world_size=3)
    job.run(30, advancing=True)
    verdicts = job.run(120, beating=[0, 2])  # rank 1 stopped (SIGSTOP): no beat, no step anywhere
    assert set(verdicts) == {0, 2}
    for verdict in verdicts.values():
        assert verdict.exit_code == PEER_SILENT_EXIT and verdict.silent == [1]
        assert "rank(s) 1 stopped responding" in verdict.line and "stuck after step" in verdict.line
    assert job.dogs[0].reporter([1]) and not job.dogs[2].reporter([1])  # one line per job


def test_a_stopped_rank_0_is_named_and_rank_1_reports():
    job = Job()
    job.run(30, advancing=True)
    verdicts = job.run(120, beating=[1])
    assert verdicts[1].silent == [0] and job.dogs[1].reporter([0])


def test_all_alive_but_stuck_is_a_hang_not_a_peer_failure():
    job = Job()
    job.run(30, advancing=True)
    before = job.run(50)  # under the 60 s window: nothing yet
    assert before == {}
    verdicts = job.run(30)
    assert verdicts[0].exit_code == STALLED_EXIT and verdicts[0].silent == []
    assert "every rank is alive" in verdicts[0].line


def test_progress_resets_the_window():
    job = Job()
    for _ in range(5):
        assert job.run(50) == {}
        job.run(job.period, advancing=True)


def test_export_mode_waits_on_rank_0_only():
    job = Job()
    job.run(30, advancing=True)
    for dog in job.dogs:
        dog.mode = "export"
    assert job.run(600) == {}  # a long export: steps frozen, everyone beating
    verdicts = job.run(120, beating=[1])  # rank 0 stops during the export
    assert verdicts[1].exit_code == PEER_SILENT_EXIT and "final export" in verdicts[1].line


def test_an_unreachable_store_counts_as_silence():
    class DeadStore(DictStore):
        def get(self, key):
            raise TimeoutError("store host stopped")

    job = Job()
    job.store.__class__ = DeadStore
    job.run(30, advancing=True)
    verdicts = job.run(120, beating=[1])
    assert verdicts[1].silent == [0]


def test_the_thread_dumps_stacks_prints_one_line_and_exits(tmp_path: Path, capsys):
    job = Job()
    job.run(30, advancing=True)
    verdict = job.run(120, beating=[0])[0]
    codes = []
    WatchdogThread(job.dogs[0], tmp_path, lambda: "latest complete checkpoint: /x/step_10", exit_process=codes.append).fire(verdict)
    assert codes == [PEER_SILENT_EXIT]
    assert "test_the_thread_dumps_stacks" in (tmp_path / "stall-rank0.txt").read_text()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "step_10" in err[0] and "--resume" in err[0]


def test_export_outcome_reaches_the_waiting_rank():
    store = DictStore()
    store.set("k", "failed")
    assert wait_for_export(store, "k", poll_s=0.01) == "failed"
    assert wait_for_export(None, "k") == "done"


def test_a_store_call_that_never_answers_ends_at_its_deadline_and_blocks_no_later_call():
    """TCPStore.check waits in recv() while its host (rank 0) is stopped; the watchdog must not."""
    release = threading.Event()

    class StoppedHost(DictStore):
        def check(self, keys):
            release.wait()
            return super().check(keys)

    store = DeadlineStore(StoppedHost(), timeout_s=0.2)
    store.set("k", "1")
    with pytest.raises(TimeoutError, match="did not answer within 0.2 s"):
        store.check(["k"])
    with pytest.raises(TimeoutError, match="not answered an earlier call"):  # at once, not after another deadline
        store.get("k")
    release.set()  # the host comes back
    for _ in range(100):
        if store.pending.is_set():
            break
        time.sleep(0.01)
    assert store.get("k") == b"1" and store.check(["k"])


def test_a_deadline_store_passes_the_store_errors_on():
    class Refusing(DictStore):
        def get(self, key):
            raise KeyError(key)

    with pytest.raises(KeyError):
        DeadlineStore(Refusing(), timeout_s=1).get("missing")
