"""The one interface every pre-training method implements.

A method owns corruption and objective; the trainer never knows which method runs. Per micro-batch:

    inputs, metrics = method.prepare_batch(batch, ctx)   # outside the engine (no gradients):
                                                         # masking, frozen-aux sampling
    loss, metrics = engine(**inputs)                     # inside the DeepSpeed engine: the trainable
                                                         # module (built by build_model) computes its loss

`build_model` returns the one nn.Module that goes into deepspeed.initialize; `exports` names the
Hugging Face models inside it that `fast-electra export` writes out.

A method whose sampling happens inside the engine (a generator trained jointly with the main model:
`electra` and its ablations, see joint.py) puts the micro-batch's `ctx.generator` into `inputs` (as
`rng`): a torch.Generator passes through engine(**inputs) unchanged, so the replacements drawn inside
the forward come from (seed, step, micro-batch, rank) and a resumed run draws the same ones.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from transformers import ElectraConfig

from ..config.run_config import RunConfig
from ..errors import UserError
from ..models.encoder import electra_config
from ..metrics.pairs import Metrics
from .corruption_rng import SampleDraws, StepDraws
from .masking import corrupt_inputs, maskable_positions, select_positions


@dataclass(frozen=True)
class TokenInfo:
    vocab_size: int
    pad_id: int
    unk_id: int
    cls_id: int
    sep_id: int
    mask_id: int
    fingerprint: str
    # The corpus's unigram entropy in nats (data/dataset.py), for curricula that start from it; None
    # where no corpus is at hand (benchmarks on random ids).
    unigram_entropy: float | None = None

    @classmethod
    def of(cls, dataset) -> "TokenInfo":
        """The token ids, fingerprint and unigram entropy of a packed data set (data/dataset.py)."""
        ids = dataset.special_ids
        return cls(vocab_size=dataset.vocab_size, pad_id=ids["pad"], unk_id=ids["unk"], cls_id=ids["cls"], sep_id=ids["sep"],
                   mask_id=ids["mask"], fingerprint=dataset.fingerprint, unigram_entropy=dataset.unigram_entropy())

    @classmethod
    def of_random_ids(cls, vocab_size: int, fingerprint: str, pad_id: int = 0, unk_id: int = 1, cls_id: int = 2, sep_id: int = 3,
                      mask_id: int = 4) -> "TokenInfo":
        """The token ids of batches of uniformly random non-special ids (benchmarks, unit tests): their
        unigram entropy is log(the non-special ids), where the default curriculum (`target`) starts."""
        specials = {pad_id, unk_id, cls_id, sep_id, mask_id}
        return cls(vocab_size=vocab_size, pad_id=pad_id, unk_id=unk_id, cls_id=cls_id, sep_id=sep_id, mask_id=mask_id,
                   fingerprint=fingerprint, unigram_entropy=math.log(vocab_size - len(specials)))

    @property
    def special_ids(self) -> list[int]:
        return sorted({self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id})


@dataclass
class StepContext:
    step: int  # optimizer steps done before this micro-batch
    progress: float  # fraction of training done, u in [0, 1]
    generator: torch.Generator  # seeded by (seed, step, micro-batch, rank): resumable without saved state
    # The keys of the micro-batch's samples for data.corruption_rng=sample: their positions in the training
    # stream (0-based over all steps and ranks), or below zero the held-out samples' (metrics/validation.py).
    positions: list[int] | None = None


class Method:
    name: ClassVar[str]
    supports_corrective_lm: ClassVar[bool] = False  # model.corrective_lm: main models that are discriminators
    # True for schedules that adapt to every step's metrics (end_step gets them: one small all-reduce
    # per step); otherwise metrics are reduced only when logged, and end_step gets {}.
    reads_step_metrics: ClassVar[bool] = False
    # True where every random draw of a step is made in prepare_batch (through `draws`), so that
    # data.corruption_rng=sample makes them per sample; methods drawing inside the engine are not.
    sample_indexed: ClassVar[bool] = False

    def __init__(self, config: RunConfig, tokens: TokenInfo, device: torch.device):
        self.config = config
        self.tokens = tokens
        self.device = device
        if config.model.corrective_lm and not self.supports_corrective_lm:
            raise UserError(f"model.corrective_lm is on, but method {self.name} has no discriminator to carry the corrective-LM head",
                            "use it with method fast, electra or electra-15, or set model.corrective_lm=false")
        if config.data.corruption_rng == "sample" and not self.sample_indexed:
            indexed = ", ".join(sorted(name for name, cls in METHODS.items() if cls.sample_indexed))
            raise UserError(f"data.corruption_rng=sample is not supported by method {self.name}, whose draws are not all made per sample",
                            f"use data.corruption_rng=step, or one of {indexed}")

    def main_config(self) -> ElectraConfig:
        """The Hugging Face config of the main model (the preset's sizes, this vocabulary)."""
        return electra_config(self.config.model.sizes(), self.config.model, self.tokens.vocab_size, self.tokens.pad_id)

    # --- built once -------------------------------------------------------------------------
    def build_model(self, ds_config: dict[str, Any] | None) -> torch.nn.Module:
        """The trainable module; its forward(**inputs) returns (loss, metrics)."""
        raise NotImplementedError

    def param_groups(self, module: torch.nn.Module) -> list:
        """deepspeed.initialize's model_parameters: optimizer groups ({"name": ..., "params": [...]}),
        split by `weight_decay_groups` so that biases and LayerNorm weights get no weight decay. A
        method that treats parts of its module apart returns more groups."""
        return weight_decay_groups([{"name": "all", "params": [p for p in module.parameters() if p.requires_grad]}])

    def before_optimizer_step(self, param_groups: list[dict[str, Any]]) -> None:
        """Called right before every engine.step() with the optimizer's param_groups (in the order
        param_groups() made them). DeepSpeed's scheduler rewrites every group's lr after each
        optimizer step, so a per-group setting (e.g. lr 0 for a part that did not run) is set here."""

    def setup(self) -> None:
        """Load whatever lives outside the engine (e.g. a frozen auxiliary model)."""

    def frozen_modules(self) -> dict[str, torch.nn.Module]:
        """Models used outside the engine (never trained, never in the optimizer)."""
        return {}

    def exports(self, module: torch.nn.Module) -> dict[str, torch.nn.Module]:
        """Sub-directory name ("" for the top level) -> Hugging Face model inside `module`."""
        raise NotImplementedError

    # --- per micro-batch ----------------------------------------------------------------------
    def prepare_batch(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> tuple[dict[str, Any], Metrics]:
        """The engine's keyword inputs (tensors, and possibly ctx.generator) and metrics computed outside it."""
        raise NotImplementedError

    def end_step(self, ctx: StepContext, metrics: dict[str, float]) -> None:
        """Called after every optimizer step on every rank with that step's metrics, averaged over
        micro-batches and ranks (identical everywhere): the place for schedules that adapt to
        training (their state belongs in state_dict). After this call ctx.step + 1 steps are done."""

    def logged_values(self, ctx: StepContext) -> dict[str, float]:
        """Scalars to log that are not averaged metrics (e.g. the temperature)."""
        return {}

    # --- resumable state (curricula, adaptive schedules) -------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def flops_per_sequence(self, seq_len: int) -> float:
        """Model FLOPs of one training sequence (forward + backward of what trains, forward of
        what is frozen), for the TFLOP/s log."""
        return 0.0

    # --- shared helpers ---------------------------------------------------------------------
    def draws(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> StepDraws | SampleDraws:
        """The micro-batch's random draws: per sample under data.corruption_rng=sample (where the context
        carries the samples' keys), else from ctx.generator."""
        if self.config.data.corruption_rng == "sample" and ctx.positions is not None:
            return SampleDraws(self.config.train.seed, ctx.positions, batch["input_ids"].shape[1], batch["input_ids"].device)
        return StepDraws(ctx.generator)

    def select_and_corrupt(self, batch: dict[str, torch.Tensor], ctx: StepContext, mask_token_prob: float,
                           random_token_prob: float, draws: StepDraws | SampleDraws | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        masking = self.config.masking
        draws = self.draws(batch, ctx) if draws is None else draws
        input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        maskable = maskable_positions(input_ids, attention_mask, self.tokens.special_ids)
        selected = select_positions(maskable, masking.mask_prob, draws)
        corrupted = corrupt_inputs(input_ids, selected, self.tokens.mask_id, mask_token_prob, random_token_prob,
                                   self.tokens.vocab_size, draws, self.tokens.special_ids)
        return selected, corrupted


NO_DECAY = ".no_decay"


def exempt_from_weight_decay(param: torch.nn.Parameter) -> bool:
    """Biases and LayerNorm weights, as ELECTRA and BERT exclude them: the 1-D parameters (ZeRO-3
    keeps a partitioned parameter's real shape in ds_shape)."""
    return len(getattr(param, "ds_shape", param.shape)) < 2


def weight_decay_groups(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each group split in two: its decayed parameters (the optimizer's weight_decay) and
    `<name>.no_decay` with weight_decay 0. Empty halves are dropped."""
    split = []
    for group in groups:
        decayed = [p for p in group["params"] if not exempt_from_weight_decay(p)]
        exempt = [p for p in group["params"] if exempt_from_weight_decay(p)]
        if decayed:
            split.append({**group, "params": decayed})
        if exempt:
            split.append({**group, "name": group["name"] + NO_DECAY, "params": exempt, "weight_decay": 0.0})
    return split


METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    METHODS[cls.name] = cls
    return cls
