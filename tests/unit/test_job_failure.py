"""A mistake found by ranks on their own is said once per job: the first rank to find it says it, the
others read its exit status through the job's store and leave quietly (a real TCPStore; ranks as threads)."""
import threading
import time
from datetime import timedelta

import torch.distributed as dist

from fast_electra_ds.runtime.job_failure import EXIT_CODE_KEY, READ_WAIT_S, said_elsewhere, say_once
from fast_electra_ds.runtime.process_group import free_port


def job_stores(ranks: int) -> list:
    port = free_port()
    host = dist.TCPStore("127.0.0.1", port, is_master=True, timeout=timedelta(seconds=10), wait_for_workers=False)
    return [host] + [dist.TCPStore("127.0.0.1", port, is_master=False, timeout=timedelta(seconds=10)) for _ in range(ranks - 1)]


def test_one_rank_finds_it_and_the_peer_reads_its_status():
    finder, peer = job_stores(2)
    left = threading.Event()
    outcome = {}

    def finding_rank():
        outcome["first"] = say_once(finder, 2, exit_code=2, leave_group=left.set)

    thread = threading.Thread(target=finding_rank)
    thread.start()
    assert left.wait(10)  # the peer's collective fails once the finder left the group
    assert said_elsewhere(peer) == 2
    thread.join(READ_WAIT_S / 2)  # the finder stops waiting as soon as the peer has read it
    assert not thread.is_alive() and outcome["first"] is True


def test_two_ranks_find_it_at_once_and_only_one_says_it():
    stores = job_stores(3)
    results = [None] * 3
    barrier = threading.Barrier(2)

    def finding_rank(rank):
        barrier.wait()
        results[rank] = say_once(stores[rank], 3, exit_code=2, leave_group=lambda: None)

    threads = [threading.Thread(target=finding_rank, args=(rank,)) for rank in (0, 1)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while not stores[2].check([EXIT_CODE_KEY]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert said_elsewhere(stores[2]) == 2  # the third rank only saw its collective fail
    for thread in threads:
        thread.join(READ_WAIT_S / 2)
        assert not thread.is_alive()
    assert sorted(results[:2]) == [False, True]


def test_a_crash_that_said_nothing_leaves_the_peer_to_report_it():
    _, peer = job_stores(2)
    assert said_elsewhere(peer) is None
    assert said_elsewhere(None) is None


def test_without_a_store_the_finding_rank_says_it_without_waiting():
    left = []
    assert say_once(None, 2, exit_code=2, leave_group=lambda: left.append(1)) is True and not left
