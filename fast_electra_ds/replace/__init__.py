"""Replacement strategies / objectives, one module per method; importing this registers them all."""
from . import aux_mlm, fast  # noqa: F401
from .base import METHODS, Method, StepContext, TokenInfo  # noqa: F401
