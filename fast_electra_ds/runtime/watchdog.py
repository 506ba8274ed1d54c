"""Hang detection. Each rank runs a thread that publishes a heartbeat (a counter and its step) and
watches two things: its own step progress, and the other ranks' heartbeats. When no step has finished
for `train.stall_minutes`, the job ends with one line naming the ranks that stopped responding (or
saying that all are alive, so the hang is inside a collective or the data), a stack dump per live rank
beside the run, and the checkpoints untouched. Without it the only bound is the collective timeout:
a ~100-line gloo traceback that names no rank, after 30 minutes.

The heartbeats go through the job's rendezvous store, on a client of their own whose every call has a
deadline (DeadlineStore), so a stopped rank 0 (it hosts the store) makes the others' calls fail fast
instead of hanging them.
The same store carries the end of the final export: the other ranks wait for rank 0's key, not in a
barrier bounded by the collective timeout."""
from __future__ import annotations

import faulthandler
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Callable, Protocol

SILENT_AFTER_BEATS = 4  # a rank whose heartbeat has not moved for this many periods is not responding
STORE_TIMEOUT_S = 10.0
STALLED_EXIT = 5  # every rank alive, none advancing: a hang inside a collective or the data
PEER_SILENT_EXIT = 3  # as PeerRankFailure: another rank stopped


class Store(Protocol):
    def set(self, key: str, value: str) -> None: ...
    def get(self, key: str) -> bytes: ...
    def check(self, keys: list[str]) -> bool: ...


def heartbeat_period(stall_s: float) -> float:
    """Often enough that a silent rank is told from a slow one well within the stall window."""
    return max(0.2, min(5.0, stall_s / (2 * SILENT_AFTER_BEATS)))


@dataclass
class Peer:
    beats: int = -1
    step: int = -1
    changed_at: float = 0.0


@dataclass
class Verdict:
    """What one rank concludes when its steps stopped: which ranks are silent, and the line to print."""

    exit_code: int
    silent: list[int]
    line: str


@dataclass
class Watchdog:
    rank: int
    world_size: int
    stall_s: float
    store: Store | None
    progress: Callable[[], int]  # the step this rank has finished
    clock: Callable[[], float] = time.monotonic
    prefix: str = "fast-electra/watchdog/"
    peers: dict[int, Peer] = field(default_factory=dict)
    beats: int = 0
    mode: str = "training"  # "training": steps must advance; "export": only rank 0's heartbeat must
    last_step: int = -1
    progressed_at: float = 0.0

    def __post_init__(self) -> None:
        now = self.clock()
        self.progressed_at = now
        self.peers = {r: Peer(changed_at=now) for r in range(self.world_size) if r != self.rank}

    # --- one period: publish, read, judge ---------------------------------------------------------

    def beat(self) -> Verdict | None:
        now = self.clock()
        step = self.progress()
        if step != self.last_step:
            self.last_step, self.progressed_at = step, now
        self.beats += 1
        self._publish(step)
        self._read_peers(now)
        return self.judge(now)

    def _publish(self, step: int) -> None:
        if self.store is None:
            return
        try:
            self.store.set(f"{self.prefix}beat/{self.rank}", f"{self.beats} {step}")
        except Exception:  # noqa: BLE001 - the store's host (rank 0) may be the stopped rank
            pass

    def _read_peers(self, now: float) -> None:
        if self.store is None:
            return
        for rank, peer in self.peers.items():
            try:
                key = f"{self.prefix}beat/{rank}"
                if not self.store.check([key]):
                    continue
                beats, step = (int(v) for v in self.store.get(key).decode().split())
            except Exception:  # noqa: BLE001 - unreachable store: no news from anyone this period
                continue
            if beats != peer.beats:
                peer.beats, peer.step, peer.changed_at = beats, step, now

    def silent_ranks(self, now: float) -> list[int]:
        period = heartbeat_period(self.stall_s)
        return sorted(r for r, p in self.peers.items() if now - p.changed_at > SILENT_AFTER_BEATS * period)

    def judge(self, now: float) -> Verdict | None:
        silent = self.silent_ranks(now)
        minutes = self.stall_s / 60
        if self.mode == "export":
            if 0 in silent and now - self.peers[0].changed_at > self.stall_s:
                return Verdict(PEER_SILENT_EXIT, [0], f"rank 0 stopped responding during the final export (no heartbeat for "
                                                      f"{minutes:g} minutes); the checkpoints are complete: export the latest "
                                                      f"with `fast-electra export`")
            return None
        if now - self.progressed_at <= self.stall_s:
            return None
        where = f"no training step finished for {minutes:g} minutes (train.stall_minutes; stuck after step {self.last_step})"
        if silent:
            names = ", ".join(str(r) for r in silent)
            return Verdict(PEER_SILENT_EXIT, silent, f"{where}: rank(s) {names} stopped responding (no heartbeat: stopped, "
                                                     f"swapping or hung outside Python)")
        return Verdict(STALLED_EXIT, [], f"{where}, while every rank is alive: a hang inside a collective or the data "
                                         f"pipeline (see the stack dumps)")

    def reporter(self, silent: list[int]) -> bool:
        """The lowest-numbered live rank prints the job's one line; the others only exit."""
        live = [r for r in range(self.world_size) if r not in silent]
        return bool(live) and live[0] == self.rank


class WatchdogThread:
    """Runs Watchdog.beat every period on a daemon thread; on a verdict it dumps this rank's stacks
    next to the run, prints the one line (one rank), and ends the process: the stuck main thread
    cannot be interrupted from here, and the checkpoints are already complete on disk."""

    def __init__(self, watchdog: Watchdog, run_dir: Path, latest_checkpoint: Callable[[], str],
                 exit_process: Callable[[int], None] = os._exit) -> None:
        self.watchdog = watchdog
        self.run_dir = run_dir
        self.latest_checkpoint = latest_checkpoint
        self.exit_process = exit_process
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="fast-electra-watchdog", daemon=True)

    def start(self) -> "WatchdogThread":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)

    def _loop(self) -> None:
        period = heartbeat_period(self.watchdog.stall_s)
        while not self.stopped.wait(period):
            verdict = self.watchdog.beat()
            if verdict is not None and not self.stopped.is_set():
                self.fire(verdict)
                return

    def fire(self, verdict: Verdict) -> None:
        dump = self.run_dir / f"stall-rank{self.watchdog.rank}.txt"
        try:
            with dump.open("w") as out:
                faulthandler.dump_traceback(out, all_threads=True)
        except OSError:
            pass
        if self.watchdog.reporter(verdict.silent):
            print(f"error: {verdict.line}; stacks in {self.run_dir}/stall-rank*.txt; {self.latest_checkpoint()}; "
                  f"re-launch with --resume once the node is healthy", file=sys.stderr, flush=True)
        self.exit_process(verdict.exit_code)


class DeadlineStore:
    """A store whose calls each end within `timeout_s`, answered or not. TCPStore's own timeout does not
    cover every call: `check` waits in recv() for as long as the host is stopped (a SIGSTOPped rank 0
    hung the watchdog there, so the job never ended). The calls run one at a time on a daemon thread;
    while one is unanswered, the next fails at once."""

    def __init__(self, store: Store, timeout_s: float = STORE_TIMEOUT_S) -> None:
        self.store, self.timeout_s = store, timeout_s
        self.calls: queue.Queue = queue.Queue()
        self.lock = threading.Lock()
        self.pending: threading.Event | None = None
        threading.Thread(target=self._serve, name="fast-electra-store", daemon=True).start()

    def _serve(self) -> None:
        while True:
            call, answered, reply = self.calls.get()
            try:
                reply["value"] = call()
            except Exception as error:  # noqa: BLE001 - handed to the caller
                reply["error"] = error
            answered.set()

    def _call(self, call: Callable):
        with self.lock:
            if self.pending is not None and not self.pending.is_set():
                raise TimeoutError("the store has not answered an earlier call")
            answered, reply = threading.Event(), {}
            self.pending = answered
            self.calls.put((call, answered, reply))
        if not answered.wait(self.timeout_s):
            raise TimeoutError(f"the store did not answer within {self.timeout_s:g} s")
        if "error" in reply:
            raise reply["error"]
        return reply["value"]

    def set(self, key: str, value: str) -> None:
        self._call(lambda: self.store.set(key, value))

    def get(self, key: str) -> bytes:
        return self._call(lambda: self.store.get(key))

    def check(self, keys: list[str]) -> bool:
        return self._call(lambda: self.store.check(keys))

    def add(self, key: str, amount: int) -> int:
        return self._call(lambda: self.store.add(key, amount))


def store_client(timeout_s: float = STORE_TIMEOUT_S) -> Store | None:
    """A client of its own to the job's rendezvous store (MASTER_ADDR:MASTER_PORT), None on one process."""
    import torch.distributed as dist

    if dist.get_world_size() == 1 or "MASTER_ADDR" not in os.environ:
        return None
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                          timeout=timedelta(seconds=timeout_s), wait_for_workers=False)
    # An elastic restart keeps the store: keys from the attempt before must not count as heartbeats.
    return DeadlineStore(dist.PrefixStore(f"attempt{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/", store), timeout_s)


def wait_for_export(store: Store | None, key: str, poll_s: float = 1.0) -> str:
    """The other ranks' side of the final export: wait for rank 0's outcome ("done" or "failed") for as
    long as the export takes (the watchdog, in export mode, ends this rank if rank 0 stops responding)."""
    if store is None:
        return "done"
    while True:
        try:
            if store.check([key]):
                return store.get(key).decode()
        except Exception:  # noqa: BLE001 - a slow store answer: ask again
            pass
        time.sleep(poll_s)
