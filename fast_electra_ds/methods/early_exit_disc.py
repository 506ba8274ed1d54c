"""Early-Exit (Disc) (Kang et al., KAIST, section "Adaptive Early Exit", Figure 2, Table 1: 1.29x the
baseline's steps/s, and a large GLUE drop the paper blames on under-trained later layers; implemented
faithfully so that the comparison can be reproduced).

The discriminator is split into sections ending after the layers in `early_exit.sections` (the
paper: 1-3, 4-6, 7-9, 10-12), each with an RTD head; generator and discriminator share all
parameters, as the paper does (models/early_exit.py's EarlyExitDiscriminator: one encoder, an MLM
head for the generator pass, both passes stop at the same section).

Every `early_exit.window` steps (the paper: 100 iterations):
- each section's RTD accuracy is its `rtd_acc_section<L>` averaged over the window's steps in which it
  ran; a section that did not run in the window keeps its last measured accuracy (there is nothing
  newer; this is what keeps a skipped section skipped, the paper's under-training);
- threshold = the mean of the section accuracies;
- for the next window the forward stops at the lowest section whose accuracy exceeds the threshold
  (strictly); if none does (all equal) every section runs.
The first window runs every section (no accuracies yet).

"Skipped sections receive no updates": each section (its layers and RTD head) is its own optimizer
group; while it is skipped its gradient is cleared and its lr is 0 (methods/skipped_groups.py: zero
gradients alone would not do, AdamW's momentum and weight decay would still move it, and ZeRO-3 would
re-apply its last gradient).

Export: the standard ElectraForPreTraining (full depth; the last section's head is its own
discriminator_predictions). No generator export: the generator is this encoder truncated at whichever
section is active, so no single masked-LM is the one that trained."""
from __future__ import annotations

import math
from typing import Any

import torch
from transformers import ElectraForPreTraining

from ..accounting.flops import encoder_forward_flops, mlm_head_flops, rtd_head_flops, training_flops
from ..errors import UserError
from ..models.early_exit import EarlyExitDiscriminator
from ..models.encoder import build_model
from ..metrics.pairs import Metrics
from .base import Method, StepContext, register, weight_decay_groups
from .skipped_groups import SkippedGroups, named_groups


def next_active_sections(accuracies: list[float | None]) -> int:
    """How many sections run next: up to the lowest section whose accuracy exceeds the mean of the
    known accuracies (all sections when none does, or none is known)."""
    known = [a for a in accuracies if a is not None]
    if not known:
        return len(accuracies)
    threshold = sum(known) / len(known)
    for s, accuracy in enumerate(accuracies):
        if accuracy is not None and accuracy > threshold:
            return s + 1
    return len(accuracies)


@register
class EarlyExitDisc(Method):
    name = "early-exit-disc"
    reads_step_metrics = True  # end_step adapts the schedule to every step's RTD accuracy

    def __init__(self, config, tokens, device):
        super().__init__(config, tokens, device)
        self.sections = list(config.early_exit.sections)
        depth = self.main_config().num_hidden_layers
        if not self.sections or self.sections[0] < 1 or any(b <= a for a, b in zip(self.sections, self.sections[1:])) or self.sections[-1] != depth:
            n = max(1, len(self.sections))
            suggestion = ",".join(str(x) for x in sorted({max(1, round(depth * (i + 1) / n)) for i in range(n)}))
            raise UserError(f"early_exit.sections {self.sections} do not fit the {depth}-layer discriminator (increasing layer numbers, the last = {depth})",
                            f"set early_exit.sections={suggestion}")
        if config.early_exit.window < 1:
            raise UserError(f"early_exit.window is {config.early_exit.window}", "give a window of at least 1 step")
        n = len(self.sections)
        self.active = n
        self.last_acc: list[float | None] = [None] * n
        self.window_sum, self.window_count = [0.0] * n, [0] * n
        self.skipped: SkippedGroups | None = None  # made by param_groups()

    # --- the model ----------------------------------------------------------------------------
    def build_model(self, ds_config: dict[str, Any] | None) -> EarlyExitDiscriminator:
        main = build_model(ElectraForPreTraining, self.main_config(), ds_config, self.config.model.attn_implementation)
        gen = self.config.generator
        return EarlyExitDiscriminator(main, self.sections, self.tokens.special_ids, gen.gen_weight, gen.disc_weight)

    def exports(self, module: torch.nn.Module) -> dict[str, torch.nn.Module]:
        return {"": module.main}

    def param_groups(self, module: EarlyExitDiscriminator) -> list[dict[str, Any]]:
        """`shared` (embeddings, their projection, the MLM head) and one group per section: its layers
        and its RTD head."""
        layers = module.main.electra.encoder.layer
        parts = {f"section{end}": [layers[j] for j in range(self.sections[s - 1] if s else 0, end)] + [module.section_head(s)]
                 for s, end in enumerate(self.sections)}
        groups = weight_decay_groups(named_groups(module, {"shared": [module.main.electra.embeddings], **parts}, rest="shared"))
        self.skipped = SkippedGroups(groups)
        return groups

    def before_optimizer_step(self, param_groups: list[dict[str, Any]]) -> None:
        if self.skipped is not None:
            self.skipped.apply(param_groups, {f"section{end}" for end in self.sections[self.active:]})

    # --- per step -----------------------------------------------------------------------------
    def prepare_batch(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> tuple[dict[str, Any], Metrics]:
        masking = self.config.masking
        selected, masked = self.select_and_corrupt(batch, ctx, masking.mask_token_prob, masking.random_token_prob)
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "masked_ids": masked,
                "selected": selected, "rng": ctx.generator, "active_sections": self.active}, {}

    def section_accuracies(self) -> list[float | None]:
        """This window's mean per section that ran in it, else its last measured accuracy."""
        return [self.window_sum[s] / self.window_count[s] if self.window_count[s] else self.last_acc[s] for s in range(len(self.sections))]

    def end_step(self, ctx: StepContext, metrics: dict[str, float]) -> None:
        for s, end in enumerate(self.sections):
            acc = metrics.get(f"rtd_acc_section{end}", float("nan"))
            if math.isfinite(acc):  # NaN: the section did not run
                self.window_sum[s] += acc
                self.window_count[s] += 1
        if (ctx.step + 1) % self.config.early_exit.window == 0:
            self.last_acc = self.section_accuracies()
            self.active = next_active_sections(self.last_acc)
            n = len(self.sections)
            self.window_sum, self.window_count = [0.0] * n, [0] * n

    def logged_values(self, ctx: StepContext) -> dict[str, float]:
        """The sections that run in the next step, and the section accuracies of the last window."""
        values = {"active_sections": float(self.active)}
        values.update({f"window_acc_section{end}": (a if a is not None else float("nan")) for end, a in zip(self.sections, self.last_acc)})
        return values

    def state_dict(self) -> dict[str, Any]:
        return {"active": self.active, "last_acc": self.last_acc, "window_sum": self.window_sum, "window_count": self.window_count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            if len(state["last_acc"]) != len(self.sections):
                raise UserError(f"the checkpoint has {len(state['last_acc'])} sections, early_exit.sections {self.sections} has {len(self.sections)}",
                                "resume with the early_exit settings the run started with")
            self.active, self.last_acc = state["active"], list(state["last_acc"])
            self.window_sum, self.window_count = list(state["window_sum"]), list(state["window_count"])

    # --- accounting ---------------------------------------------------------------------------
    def flops_per_sequence(self, seq_len: int) -> float:
        """Training FLOPs with the currently active sections: both passes through layers
        1..sections[active-1], the MLM head at the masked positions, an RTD head per section that ran
        over every position. The trainer reads this once at the start of a session."""
        config = self.main_config()
        config.num_hidden_layers = self.sections[self.active - 1]
        masked = seq_len * self.config.masking.mask_prob
        generator = encoder_forward_flops(config, seq_len) + mlm_head_flops(config, masked)
        discriminator = encoder_forward_flops(config, seq_len) + self.active * rtd_head_flops(config, seq_len)
        return training_flops(generator) + training_flops(discriminator)
