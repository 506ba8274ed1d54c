"""Starting the process group quietly and with an actionable error: DeepSpeed's collectives warn on
every call, and a taken rendezvous port is one line that says which port to pass instead."""
from __future__ import annotations

import os
import socket
import warnings

from .errors import UserError

# DeepSpeed 0.19 calls torch.distributed.all_gather_into_tensor / reduce_scatter_tensor, which torch
# marks deprecated with a FutureWarning; ZeRO-3 calls them every step and the warning reappeared on
# every step (31 times in a 30-step single-rank run). Nothing for a user to act on (the calls are
# inside DeepSpeed): filtered once, these two messages only.
DEEPSPEED_DEPRECATED_COLLECTIVES = r"`torch\.distributed\.(all_gather_into_tensor|reduce_scatter_tensor)` is deprecated"


def quiet_known_warnings() -> None:
    warnings.filterwarnings("ignore", message=DEEPSPEED_DEPRECATED_COLLECTIVES, category=FutureWarning)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_process_group() -> None:
    """deepspeed.init_distributed, with a taken MASTER_PORT as one line naming a free one."""
    import deepspeed
    import torch.distributed as dist

    try:
        deepspeed.init_distributed(verbose=False)
    except dist.DistNetworkError as err:
        if "EADDRINUSE" not in str(err):
            raise
        port = os.environ.get("MASTER_PORT", "?")
        other = free_port()
        raise UserError(f"the rendezvous port {port} (MASTER_PORT) is already in use on this machine, probably by another run",
                        f"pass a free port to the launcher, e.g. deepspeed --master_port {other} ... (torchrun --master_port {other}; "
                        f"python train.py: MASTER_PORT={other})") from None
