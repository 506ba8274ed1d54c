"""The pre-training methods (`method=` in the config: each one's objective and replacement strategy),
one module per method; importing this registers them all."""
from . import all_tokens_mlm, aux_mlm, electra, electra_15, fast, mlm, replace_mlm  # noqa: F401
from . import emb_gen  # noqa: F401
from . import adaptive_exit, early_exit_disc  # noqa: F401
from .base import METHODS, Method, StepContext, TokenInfo  # noqa: F401
