"""Fast-ELECTRA's learning curriculum by temperature ("simulated annealing", poster eq. 1)."""
from __future__ import annotations

import math


def temperature(progress: float, t0: float, tau: float) -> float:
    """T(u) = 1 + (T0 - 1) * exp(-u / tau) for u = fraction of training done, in [0, 1]."""
    if tau <= 0:
        return 1.0
    return 1.0 + (t0 - 1.0) * math.exp(-progress / tau)
