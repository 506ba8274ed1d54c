"""Adaptive Early-Exit (Gen) (Kang et al., KAIST, section "Adaptive Early Exit", Table 1: 1.15x the
baseline's steps/s): ELECTRA whose generator has MLM exits after the layers in `early_exit.exits`
(the paper: 3, 6, 9, 12). Each step one exit k is drawn with probabilities P and only generator
layers 1..exits[k] run; the replacements are sampled from exit k; the discriminator runs in full.
The model is models/early_exit.py's AdaptiveExitElectra (exit heads, the concatenation trick, the
loss weights, which exits' MLM losses count).

The update of P, every `early_exit.window` steps, exactly as the paper writes it:
    diff = clip(acc_now - acc_prev, -1, 1)
    S = alpha * diff * R,  R = [0, 1, ..., n-1]  (the paper's [0, 1, 2, 3] for 4 exits)
    P <- Softmax(P + S)
acc = the discriminator's RTD accuracy (`rtd_acc`, over every real token) averaged over the window's
steps. The first window has no acc_prev: P stays, and its accuracy becomes acc_prev.

alpha: the paper gives no value, only a worked example, P = [0.4, 0.4, 0.1, 0.1] with acc 0.7 -> 0.9
giving [0.27, 0.28, 0.21, 0.21]. Those four numbers sum to 0.97, so they are not exactly any softmax
(an extraction or rounding slip). Least squares over alpha gives alpha = 0.099 (-> [0.280, 0.285,
0.215, 0.220]); alpha = 0 would give [0.287, 0.287, 0.213, 0.213]. Most of the example's change is the
softmax itself: Softmax is applied to probabilities, which flattens P toward uniform at every update
whatever diff is. The default alpha is 0.1. The direction the paper describes holds for every
alpha > 0: a rising accuracy moves mass toward the deeper (harder) exits.

Draws and ranks: under ZeRO-3 every layer's forward is an all-gather and every gradient a
reduce-scatter over all ranks, so all ranks MUST run the same exit in a micro-batch (a rank running
fewer layers would deadlock the others or mix gradients). The trainer's ctx.generator is seeded by
(seed, step, micro-batch, rank), so it cannot give that without communication; the draw comes from
a generator seeded by (train.seed, step) alone: the same on every rank and for every micro-batch of
a step (one exit per step, as the paper), no communication, and exactly the same after a resume.
P itself is updated from the reduced metrics, identical on every rank.

Layers that did not run: each exit's segment (its layers, head and projection) is its own optimizer
group; in a step where it did not run its gradient is cleared and its lr is 0 (methods/
skipped_groups.py: ZeRO-3 would otherwise re-apply the segment's last gradient, and AdamW's momentum
and weight decay would move it), as a plain torch optimizer skips parameters without gradients.

Export: the discriminator only (a standard ElectraForPreTraining). The generator's exits read
concatenations through projections that a Hugging Face ElectraForMaskedLM does not have, so no
stand-alone masked-LM export would reproduce them."""
from __future__ import annotations

import copy
import math
from typing import Any

import torch
from transformers import ElectraConfig, ElectraForMaskedLM, ElectraForPreTraining

from ..accounting.flops import encoder_forward_flops, mlm_head_flops, rtd_head_flops, training_flops
from ..errors import UserError
from ..models.early_exit import AdaptiveExitElectra
from ..metrics.pairs import Metrics
from .base import StepContext, register, weight_decay_groups
from .joint import JointMethod
from .skipped_groups import SkippedGroups, named_groups


def update_p(p: list[float], acc_now: float, acc_prev: float, alpha: float) -> list[float]:
    """P <- Softmax(P + alpha * clip(acc_now - acc_prev, -1, 1) * [0, 1, ..., n-1]) (Kang et al.),
    in float64 Python arithmetic: identical on every rank."""
    diff = min(1.0, max(-1.0, acc_now - acc_prev))
    logits = [p_i + alpha * diff * r for r, p_i in enumerate(p)]
    top = max(logits)
    exps = [math.exp(x - top) for x in logits]
    total = sum(exps)
    return [e / total for e in exps]


def exit_generator(seed: int, step: int) -> torch.Generator:
    """Randomness of the exit draw: (seed, step) only, never the rank (see the module docstring)."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + step) * 7_919 + 104_729) % (2**63 - 1))


def draw_exit(p: list[float], generator: torch.Generator) -> int:
    """An index i with probability p[i] (inverse CDF of one float64 uniform)."""
    u = torch.rand((), generator=generator, dtype=torch.float64).item() * sum(p)
    cumulative = 0.0
    for i, p_i in enumerate(p):
        cumulative += p_i
        if u < cumulative:
            return i
    return len(p) - 1


@register
class AdaptiveExit(JointMethod):
    name = "adaptive-exit"
    reads_step_metrics = True  # end_step adapts the schedule to every step's RTD accuracy
    main_class = ElectraForPreTraining

    def __init__(self, config, tokens, device):
        super().__init__(config, tokens, device)
        ee = config.early_exit
        self.exits = list(ee.exits)
        self.validate(self.generator_config().num_hidden_layers)
        total = sum(ee.exit_loss_weights)
        self.exit_weights = [w / total for w in ee.exit_loss_weights]  # normalised (only ratios matter)
        self.p = list(ee.initial_p)
        self.alpha = ee.alpha
        self.acc_prev: float | None = None
        self.window_sum, self.window_count = 0.0, 0
        self.current_exit = len(self.exits) - 1
        self.skipped: SkippedGroups | None = None  # made by param_groups()

    def validate(self, depth: int) -> None:
        ee, n = self.config.early_exit, len(self.exits)
        suggestion = ",".join(str(x) for x in sorted({max(1, round(depth * (i + 1) / n)) for i in range(n)}))
        if not self.exits or any(b <= a for a, b in zip(self.exits, self.exits[1:])) or self.exits[0] < 1 or self.exits[-1] != depth:
            raise UserError(f"early_exit.exits {self.exits} do not fit the {depth}-layer generator (increasing layer numbers, the last = {depth})",
                            f"set early_exit.exits={suggestion} (and early_exit.initial_p / exit_loss_weights with as many values)")
        for key in ("initial_p", "exit_loss_weights"):
            values = getattr(ee, key)
            if len(values) != n or any(v < 0 for v in values) or sum(values) <= 0:
                raise UserError(f"early_exit.{key} {values} needs {n} non-negative values (one per exit {self.exits})",
                                f"give {n} values, e.g. early_exit.{key}={','.join(str(i + 1) for i in range(n)) if key != 'initial_p' else ','.join([f'{1 / n:.4g}'] * n)}")
        if abs(sum(ee.initial_p) - 1) > 1e-6:
            raise UserError(f"early_exit.initial_p {ee.initial_p} sums to {sum(ee.initial_p):.6g}, not 1", "give probabilities that sum to 1")
        if ee.window < 1:
            raise UserError(f"early_exit.window is {ee.window}", "give a window of at least 1 step")

    # --- the model ----------------------------------------------------------------------------
    def joint_module(self, generator: ElectraForMaskedLM, main: ElectraForPreTraining) -> AdaptiveExitElectra:
        gen = self.config.generator
        return AdaptiveExitElectra(generator, main, self.exits, self.exit_weights, self.tokens.special_ids, gen.gen_weight, gen.disc_weight)

    def exports(self, module: torch.nn.Module) -> dict[str, torch.nn.Module]:
        return {"": module.main}

    def param_groups(self, module: AdaptiveExitElectra) -> list[dict[str, Any]]:
        """`shared` (embeddings, the generator's embeddings projection, the discriminator) and one group
        per exit: its generator layers (those above the previous exit), its head and projection."""
        layers = module.generator.electra.encoder.layer
        parts = {}
        for i, end in enumerate(self.exits):
            start = self.exits[i - 1] if i else 0
            head = list(module.exit_head(i)) + ([module.concat_projections[i - 1]] if i else [])
            # the tied output weight is the shared word embeddings: `shared` claims it first below
            parts[f"exit{end}"] = [layers[j] for j in range(start, end)] + head
        shared = [module.main]
        groups = weight_decay_groups(named_groups(module, {"shared": shared, **parts}, rest="shared"))
        self.skipped = SkippedGroups(groups)
        return groups

    def before_optimizer_step(self, param_groups: list[dict[str, Any]]) -> None:
        if self.skipped is not None:
            self.skipped.apply(param_groups, {f"exit{e}" for e in self.exits[self.current_exit + 1:]})

    # --- per step -----------------------------------------------------------------------------
    def prepare_batch(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> tuple[dict[str, Any], Metrics]:
        inputs, metrics = super().prepare_batch(batch, ctx)
        self.current_exit = draw_exit(self.p, exit_generator(self.config.train.seed, ctx.step))
        inputs["exit_index"] = self.current_exit
        return inputs, metrics

    def end_step(self, ctx: StepContext, metrics: dict[str, float]) -> None:
        acc = metrics.get("rtd_acc", float("nan"))
        if math.isfinite(acc):
            self.window_sum += acc
            self.window_count += 1
        if (ctx.step + 1) % self.config.early_exit.window == 0 and self.window_count:
            acc_now = self.window_sum / self.window_count
            if self.acc_prev is not None:
                self.p = update_p(self.p, acc_now, self.acc_prev, self.alpha)
            self.acc_prev = acc_now
            self.window_sum, self.window_count = 0.0, 0

    def logged_values(self, ctx: StepContext) -> dict[str, float]:
        return {f"p_exit{layer}": p for layer, p in zip(self.exits, self.p)}

    def state_dict(self) -> dict[str, Any]:
        return {"p": self.p, "alpha": self.alpha, "acc_prev": self.acc_prev, "window_sum": self.window_sum, "window_count": self.window_count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            if len(state["p"]) != len(self.exits):
                raise UserError(f"the checkpoint's P has {len(state['p'])} exits, early_exit.exits {self.exits} has {len(self.exits)}",
                                "resume with the early_exit settings the run started with")
            self.p, self.alpha, self.acc_prev = list(state["p"]), state["alpha"], state["acc_prev"]
            self.window_sum, self.window_count = state["window_sum"], state["window_count"]

    # --- accounting ---------------------------------------------------------------------------
    def exit_forward_flops(self, i: int, gen: ElectraConfig, seq_len: int, masked: float) -> float:
        """Generator forward when exit i is drawn: layers 1..exits[i], the heads of exits 0..i and the
        concatenation projections of exits 1..i (heads and projections at the masked positions)."""
        truncated = copy.copy(gen)
        truncated.num_hidden_layers = self.exits[i]
        h = gen.hidden_size
        projections = sum(masked * 2 * (j + 1) * h * h for j in range(1, i + 1))
        return encoder_forward_flops(truncated, seq_len) + (i + 1) * mlm_head_flops(gen, masked) + projections

    def flops_per_sequence(self, seq_len: int) -> float:
        """Expected training FLOPs under the current P: Σ_i P_i · 3·(generator forward to exit i) plus
        the full discriminator (3·forward). The trainer reads this once at the start of a session."""
        gen, main = self.generator_config(), self.main_config()
        masked = seq_len * self.config.masking.mask_prob
        expected_gen = sum(p * self.exit_forward_flops(i, gen, seq_len, masked) for i, p in enumerate(self.p))
        main_forward = encoder_forward_flops(main, seq_len) + rtd_head_flops(main, seq_len)
        return training_flops(expected_gen) + training_flops(main_forward)
