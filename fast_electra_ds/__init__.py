"""fast-electra-ds: ELECTRA-style encoder pre-training on DeepSpeed (Fast-ELECTRA and its baselines)."""

__version__ = "0.1.0"
