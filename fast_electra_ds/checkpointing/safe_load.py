"""No pickle: DeepSpeed reads checkpoint files with torch.load and weights_only turned off, which can run
code from a run directory someone else wrote. Around its loads (resume, export, universal conversion)
every torch.load is made weights_only=True, with exactly the few DeepSpeed classes that its own
checkpoints hold allowed; a file holding anything else is refused in one line."""
from __future__ import annotations

import contextlib
import pickle
from typing import Iterator

import torch

from ..errors import UserError


def deepspeed_checkpoint_classes() -> list:
    """The non-tensor classes in DeepSpeed's checkpoint files (ZeRO 1-3, bf16/fp16): plain records."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [ZeroStageEnum, LossScaler, DynamicLossScaler, fragment_address]


@contextlib.contextmanager
def weights_only_loads(what: str) -> Iterator[None]:
    """Inside: torch.load is weights_only=True whatever its caller asks. `what` names the checkpoint in the error."""
    original = torch.load
    allowed = deepspeed_checkpoint_classes()

    def load(*args, **kwargs):
        kwargs["weights_only"] = True
        with torch.serialization.safe_globals(allowed):
            try:
                return original(*args, **kwargs)
            except pickle.UnpicklingError as err:
                file = args[0] if args else kwargs.get("f", "?")
                reason = str(err).split("GLOBAL ", 1)[-1].split(" ", 1)[0] if "GLOBAL " in str(err) else "a Python object"
                raise UserError(f"{what}: {file} holds {reason}, which is not loaded (unpickling can run code)",
                                "use checkpoints written by fast-electra, or convert this one where you trust its source") from None

    torch.load = load
    try:
        yield
    finally:
        torch.load = original
