"""The next micro-batches, built in a background thread while the current step runs.

The thread reads the shards, stacks the batch and pins it (CUDA); the main thread copies it with
non_blocking=True. Order is RankBatches' order, and `consumed_samples` counts the batches handed
out, not the ones read ahead: a checkpoint resumes at the first batch no step has used (the ones
read ahead are read again, RankBatches being a pure function of the position)."""
from __future__ import annotations

import queue
import threading
from typing import Any

import torch

from .unpadded import unpadded_mask

_POLL_S = 0.1  # how often a blocked reader thread checks whether it should stop


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


def _read_ahead(batches, device: torch.device, out: queue.Queue, stop: threading.Event) -> None:
    if device.type == "cuda":
        torch.cuda.set_device(device)  # else pinning would create a CUDA context on GPU 0 from every rank
    try:
        while not stop.is_set():
            batch = next(batches)
            unpadded = bool(batch["attention_mask"].all())  # on the host: no device sync
            if device.type == "cuda":
                batch = {key: value.pin_memory() for key, value in batch.items()}
            item = (batch, unpadded, batches.consumed_samples)
            while not stop.is_set():
                try:
                    out.put(item, timeout=_POLL_S)
                    break
                except queue.Full:
                    pass
    except BaseException as error:  # handed to the main thread, raised by __next__
        while not stop.is_set():
            try:
                out.put(_Failure(error), timeout=_POLL_S)
                break
            except queue.Full:
                pass


def to_device(batch: dict[str, torch.Tensor], unpadded: bool, device: torch.device) -> dict[str, torch.Tensor]:
    """The batch on `device`; without padding its attention mask is data.unpadded.unpadded_mask."""
    moved = {key: value.to(device, non_blocking=True) for key, value in batch.items() if not (unpadded and key == "attention_mask")}
    if unpadded:
        mask = batch["attention_mask"]
        moved["attention_mask"] = unpadded_mask(tuple(mask.shape), mask.dtype, device)
    return {key: moved[key] for key in batch}


class Prefetcher:
    """Iterator of micro-batches on `device` over `batches` (a RankBatches or phases.PhasedBatches), `depth` read ahead."""

    def __init__(self, batches, device: torch.device, depth: int = 2):
        self.device = device
        self.consumed_samples = batches.consumed_samples
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        # The thread holds the queue and the event, not self: dropping the prefetcher stops it.
        self._thread = threading.Thread(target=_read_ahead, args=(batches, device, self._queue, self._stop), daemon=True,
                                        name="batch-prefetch")
        self._thread.start()

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, Any]:
        item = self._queue.get()
        if isinstance(item, _Failure):
            self.close()
            raise item.error
        batch, unpadded, consumed = item
        self.consumed_samples = consumed
        return to_device(batch, unpadded, self.device)

    def close(self, timeout: float = 60.0) -> None:
        """Stop the thread and wait for it. A daemon thread still inside a torch op when the interpreter
        exits is killed there, and the process aborts ("terminate called without an active exception")
        after a finished run: the thread must be gone before the rank exits."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def __del__(self) -> None:
        self._stop.set()
