"""The equal budget: each method's training FLOPs per sequence, as the methods count them themselves
(their `flops_per_sequence`, fast_electra_ds/methods/), split into the main model's share and the rest,
and the steps that spend the same main-model FLOPs."""
from __future__ import annotations

import torch

from fast_electra_ds.config.run_config import RunConfig
from fast_electra_ds.errors import UserError
from fast_electra_ds.methods import METHODS, TokenInfo


def flops_per_sequence(config: RunConfig, vocab_size: int, unigram_entropy: float | None = None) -> dict[str, dict[str, float]]:
    """Training FLOPs of one sequence per method, split into the main model's ("main") and the rest
    ("other": electra's generator, trained; fast's frozen aux, forward only), and of the stage-1
    aux-mlm ("aux-mlm": its main is the aux being trained). The aux of `fast` is sized by
    aux.*_fraction, as aux-mlm trains it (it need not exist yet). `unigram_entropy` only lets a
    curriculum that starts from it (curriculum.kind=target) be built; FLOPs do not depend on it."""
    # Only the vocabulary size and the sizes count; the special ids do not enter a FLOPs count.
    tokens = TokenInfo(vocab_size=vocab_size, pad_id=0, unk_id=0, cls_id=0, sep_id=0, mask_id=0, fingerprint="",
                       unigram_entropy=unigram_entropy)
    seq_len, cpu = config.data.seq_len, torch.device("cpu")
    mlm, electra, fast, aux = (METHODS[name](config, tokens, cpu) for name in ("mlm", "electra", "fast", "aux-mlm"))
    return {
        "mlm": {"main": mlm.flops_per_sequence(seq_len), "other": 0.0},
        "electra": {"main": electra.main_flops_per_sequence(seq_len), "other": electra.generator_flops_per_sequence(seq_len)},
        "fast": {"main": fast.main_flops_per_sequence(seq_len), "other": fast.aux_flops_per_sequence(seq_len, aux.hf_config())},
        "aux-mlm": {"main": aux.flops_per_sequence(seq_len), "other": 0.0},
    }


def budget_from_steps(main_steps: int, global_batch: int, per_sequence: dict[str, dict[str, float]]) -> float:
    """The main-model FLOPs budget: `main_steps` steps of the discriminator (electra's and fast's main
    model cost the same per sequence)."""
    return main_steps * global_batch * per_sequence["electra"]["main"]


def steps_for_budget(budget: float, global_batch: int, main_flops_per_sequence: float) -> int:
    """Optimizer steps that spend `budget` main-model FLOPs (at least one)."""
    if budget <= 0 or global_batch <= 0 or main_flops_per_sequence <= 0:
        raise UserError(f"cannot split a budget of {budget:g} FLOPs into steps of {global_batch} sequences",
                        "give a positive --budget or --main-steps and a positive --micro-batch")
    return max(1, round(budget / (global_batch * main_flops_per_sequence)))
