"""Every rank's RNG state (torch, CUDA, Python, numpy), stored as tensors and plain values so that a
resume loads it with weights_only=True."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch


def rng_state() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss_next": gauss},
             "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss, "cached_gaussian": cached}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    python, numpy = state["python"], state["numpy"]
    if isinstance(python, dict):
        random.setstate((python["version"], tuple(python["internal"].tolist()), python["gauss_next"]))
        np.random.set_state((numpy["name"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"], numpy["cached_gaussian"]))
    else:  # the format before tensors: random.getstate() and np.random.get_state() as they were
        random.setstate(python)
        np.random.set_state(numpy)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def load_rng_file(path: Path) -> dict[str, Any]:
    # Checkpoints written before the tensor format hold numpy arrays: allow exactly those classes.
    numpy_core = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core
    numpy_array = [np.ndarray, np.dtype, np.dtype("uint32").__class__, numpy_core.multiarray._reconstruct]
    with torch.serialization.safe_globals(numpy_array):
        return torch.load(path, weights_only=True)
