"""One line per job for a mistake that ranks find on their own once the process group exists (a shard
changed on disk after `prepare`, read by one rank or by several at once). The first rank to find it
says it; the others leave quietly with its exit status, instead of each adding its own line or
"another rank of this job stopped".

The word goes through the job's store: the finding rank posts its exit status, leaves the process
group (so the others' collectives fail now, not at the collective timeout), and waits a few seconds
until each has read it, because rank 0 hosts the store and takes it along when it exits. An agreed
error (every rank reached the same decision: runtime.resources.fail_on_every_rank) needs none of this."""
from __future__ import annotations

import time
from typing import Callable, Protocol

FOUND_KEY = "fast-electra/failure/found"  # how many ranks found a mistake: the first says it
EXIT_CODE_KEY = "fast-electra/failure/exit-code"
READ_KEY = "fast-electra/failure/read"  # how many ranks read the exit status
READ_WAIT_S = 10.0
QUIET_EXIT_DELAY_S = 2.0  # a quiet rank lets the first print before the launcher sees its exit


class CountingStore(Protocol):
    def set(self, key: str, value: str) -> None: ...
    def get(self, key: str) -> bytes: ...
    def check(self, keys: list[str]) -> bool: ...
    def add(self, key: str, amount: int) -> int: ...


def say_once(store: CountingStore | None, world_size: int, exit_code: int, leave_group: Callable[[], None],
             clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> bool:
    """This rank found a mistake. True: it is the job's first (it prints the line, after the others have
    read its status or READ_WAIT_S passed). False: another rank says it; this one leaves quietly."""
    if store is None:
        return True
    try:
        first = store.add(FOUND_KEY, 1) == 1
        if first:
            store.set(EXIT_CODE_KEY, str(exit_code))
    except Exception:  # noqa: BLE001 - no store (its host is gone): say it here
        return True
    leave_group()
    if not first:
        _count_read(store)
        return False
    deadline = clock() + READ_WAIT_S
    while clock() < deadline:
        try:
            if store.add(READ_KEY, 0) >= world_size - 1:
                break
        except Exception:  # noqa: BLE001 - the store's host (rank 0) read it and left
            break
        sleep(0.1)
    return True


def said_elsewhere(store: CountingStore | None) -> int | None:
    """A collective failed because a rank left: the exit status it posted when it left to say why
    (this rank then stays quiet), or None when no rank said anything (a crash, a kill)."""
    if store is None:
        return None
    try:
        if not store.check([EXIT_CODE_KEY]):
            return None
        code = int(store.get(EXIT_CODE_KEY).decode())
    except Exception:  # noqa: BLE001 - the store is gone: this rank says what it saw
        return None
    _count_read(store)
    return code


def _count_read(store: CountingStore) -> None:
    try:
        store.add(READ_KEY, 1)
    except Exception:  # noqa: BLE001 - the first rank stops waiting after READ_WAIT_S anyway
        pass
