"""The trainable modules that go into the DeepSpeed engine. Each wraps Hugging Face models and
returns (loss, metrics), so the engine's forward is the whole objective."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import ElectraForMaskedLM, ElectraForPreTraining

from ..metrics.pairs import Metrics, ratio
from .objectives import mlm_loss, rtd_loss
from .corrective_lm import rtd_with_corrective_lm
from .vocab_loss import copy_mechanism_scores, masked_lm_loss, masked_lm_loss_and_sample, vocab_log_probs


class ReplacedTokenDetection(torch.nn.Module):
    """The discriminator and its RTD loss over all real tokens; with a `corrective_lm` head
    (models/corrective_lm.py) also its corrective-LM loss, which needs the original tokens."""

    def __init__(self, discriminator: ElectraForPreTraining, corrective_lm: torch.nn.Module | None = None):
        super().__init__()
        self.discriminator = discriminator
        self.corrective_lm = corrective_lm

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, is_replaced: torch.Tensor,
                original_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, Metrics]:
        if self.corrective_lm is not None:
            loss, metrics = rtd_with_corrective_lm(self.discriminator, self.corrective_lm, input_ids, original_ids, attention_mask,
                                                   lambda logits: rtd_loss(logits, is_replaced, attention_mask, input_ids=input_ids,
                                                                          vocab_size=self.discriminator.config.vocab_size))
            return loss, {"loss": ratio(loss, 1), **metrics}
        logits = self.discriminator(input_ids=input_ids, attention_mask=attention_mask).logits
        loss, metrics = rtd_loss(logits, is_replaced, attention_mask, input_ids=input_ids, vocab_size=self.discriminator.config.vocab_size)
        return loss, {"loss": metrics["rtd_loss"], **metrics}


def masked_lm_logits(model: ElectraForMaskedLM, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     selected: torch.Tensor) -> torch.Tensor:
    """Vocabulary logits at the selected positions only [M, V]: the head's cost scales with the
    number of predictions, not the sequence length."""
    hidden = model.electra(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    return model.generator_lm_head(model.generator_predictions(hidden[selected]))


class MaskedLanguageModel(torch.nn.Module):
    """An Electra masked-LM trained on its own (stage 1 of Fast-ELECTRA: the auxiliary model)."""

    def __init__(self, mlm: ElectraForMaskedLM):
        super().__init__()
        self.mlm = mlm

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, selected: torch.Tensor,
                targets: torch.Tensor) -> tuple[torch.Tensor, Metrics]:
        loss, metrics = masked_lm_loss(self.mlm, input_ids, attention_mask, selected, targets)  # chunked: models/vocab_loss.py
        return loss, {"loss": metrics["mlm_loss"], **metrics}


# --- a generator trained jointly with the main model (ELECTRA and its ablations) ----------------------

def share_embeddings(generator: ElectraForMaskedLM, main: torch.nn.Module) -> None:
    """Make `generator` use the main model's embeddings module (token, position and token-type
    embeddings and their LayerNorm), as ELECTRA shares them: the same nn.Module, so the same
    Parameters, one tensor each. A narrower generator reaches its width through its own
    `embeddings_project`. Its output layer is tied to the shared word embeddings."""
    shared = main.electra.embeddings
    if generator.config.embedding_size != main.config.embedding_size:
        raise ValueError("the generator and the main model must have the same embedding_size to share embeddings")
    generator.electra.embeddings = shared
    generator.generator_lm_head.weight = shared.word_embeddings.weight


class JointGenerator(torch.nn.Module):
    """The generator (an Electra masked-LM) and the main model in ONE module, so both go into the one
    DeepSpeed engine (ZeRO-3 partitions both) with one optimizer. Per micro-batch:

    masked input -> generator MLM logits at the selected positions, in chunks -> one exact sample per
    position from Softmax(logits) (what ELECTRA's Gumbel-max draws, here by inverse CDF: models/sampling.py;
    float32/64, from the forward's detached logits, special tokens disallowed, randomness from `rng`: the
    trainer's per-micro-batch generator) -> corrupted sequence -> the main model's objective
    (`main_objective`, defined by subclasses).

    loss = gen_weight * L_MLM(generator) + main_weight * L_main. The generator's metrics are
    `mlm_loss` / `mlm_acc`."""

    def __init__(self, generator: ElectraForMaskedLM, main: torch.nn.Module, disallowed_ids: list[int],
                 gen_weight: float, main_weight: float, shared_embeddings: bool = True):
        super().__init__()
        if shared_embeddings:
            share_embeddings(generator, main)
        self.main = main  # first: the shared embeddings are named main.electra.embeddings.*
        self.generator = generator
        self.disallowed_ids = list(disallowed_ids)
        self.gen_weight = gen_weight
        self.main_weight = main_weight

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, masked_ids: torch.Tensor,
                selected: torch.Tensor, rng: torch.Generator) -> tuple[torch.Tensor, Metrics]:
        """input_ids: the original sequence; masked_ids: with the selected positions corrupted
        (mostly [MASK]); selected: the positions the generator predicts."""
        gen_loss, gen_metrics, sampled = masked_lm_loss_and_sample(self.generator, masked_ids, attention_mask, selected,  # chunked
                                                                   input_ids[selected], rng, self.disallowed_ids)
        corrupted = input_ids.clone()
        corrupted[selected] = sampled
        main_loss, main_metrics = self.main_objective(input_ids, corrupted, attention_mask, selected)
        loss = self.gen_weight * gen_loss + self.main_weight * main_loss
        return loss, {"loss": ratio(loss, 1), **gen_metrics, **main_metrics}

    def main_objective(self, original: torch.Tensor, corrupted: torch.Tensor, attention_mask: torch.Tensor,
                       selected: torch.Tensor) -> tuple[torch.Tensor, Metrics]:
        raise NotImplementedError


class JointElectra(JointGenerator):
    """ELECTRA: the main model is the discriminator (ElectraForPreTraining), with replaced-token
    detection over every real token, or over the selected positions only (`selected_only`: the
    "ELECTRA 15%" ablation). A sampled token equal to the original is labelled original."""

    def __init__(self, generator: ElectraForMaskedLM, discriminator: ElectraForPreTraining, disallowed_ids: list[int],
                 gen_weight: float, disc_weight: float, selected_only: bool = False, corrective_lm: torch.nn.Module | None = None,
                 shared_embeddings: bool = True):
        super().__init__(generator, discriminator, disallowed_ids, gen_weight, disc_weight, shared_embeddings)
        self.selected_only = selected_only
        self.corrective_lm = corrective_lm  # models/corrective_lm.py: main objective L_RTD + w·L_CLM

    @property
    def discriminator(self) -> ElectraForPreTraining:
        return self.main

    def main_objective(self, original, corrupted, attention_mask, selected):
        positions = selected if self.selected_only else None
        if getattr(self, "corrective_lm", None) is not None:  # getattr: subclasses may skip this __init__
            return rtd_with_corrective_lm(self.main, self.corrective_lm, corrupted, original, attention_mask,
                                          lambda logits: rtd_loss(logits, corrupted != original, attention_mask, positions=positions,
                                                                  input_ids=corrupted, vocab_size=self.main.config.vocab_size))
        logits = self.main(input_ids=corrupted, attention_mask=attention_mask).logits
        return rtd_loss(logits, corrupted != original, attention_mask, positions=positions, input_ids=corrupted,
                        vocab_size=self.main.config.vocab_size)


class JointReplaceMLM(JointGenerator):
    """Replace MRM: masked-LM whose selected positions hold generator samples instead of [MASK]; the
    main model (ElectraForMaskedLM) predicts the original token at the selected positions."""

    def main_objective(self, original, corrupted, attention_mask, selected):
        return masked_lm_loss(self.main, corrupted, attention_mask, selected, original[selected], prefix="main_mlm")


def copy_mechanism_log_probs(mlm_logits: torch.Tensor, gate_logits: torch.Tensor, inputs: torch.Tensor,
                             targets: torch.Tensor) -> torch.Tensor:
    """log p(target) under ELECTRA's copy mechanism (All-Tokens MLM):
    p(x) = D * 1[x = input] + (1 - D) * p_mlm(x), with D = sigmoid(gate_logits).
    mlm_logits [N, V], gate_logits [N], inputs and targets [N]. Computed in float32 in log space."""
    log_p_mlm = torch.log_softmax(mlm_logits.float(), dim=-1).gather(1, targets[:, None]).squeeze(1)
    gate = gate_logits.float()
    log_copy, log_generate = F.logsigmoid(gate), F.logsigmoid(-gate)
    generate = log_generate + log_p_mlm
    copy = torch.where(targets == inputs, log_copy, torch.full_like(log_copy, float("-inf")))
    return torch.logaddexp(copy, generate)


def copy_mechanism_predictions(mlm_logits: torch.Tensor, gate_logits: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """argmax over the vocabulary of the copy-mechanism distribution."""
    gate = torch.sigmoid(gate_logits.float())[:, None]
    probs = (1 - gate) * torch.softmax(mlm_logits.float(), dim=-1)
    probs = probs.scatter_add(1, inputs[:, None], gate)
    return probs.argmax(dim=-1)


def match_zero_init_dtype(module: torch.nn.Module) -> None:
    """Parameters created outside zero.Init (the heads added next to the Hugging Face models) in the
    dtype zero.Init gave the others (bf16 / fp16): DeepSpeed casts neither kind at initialize, and
    ZeRO-3 needs one dtype for its flat partitions. No-op without ZeRO-3."""
    partitioned = [p for p in module.parameters() if hasattr(p, "ds_id")]
    if partitioned:
        for param in module.parameters():
            if not hasattr(param, "ds_id") and param.dtype != partitioned[0].dtype:
                param.data = param.data.to(partitioned[0].dtype)


class JointAllTokensMLM(JointGenerator):
    """All-Tokens MLM: the main model (ElectraForMaskedLM) predicts the identity of every real input
    token of the generator-corrupted sequence, with ELECTRA's copy mechanism: a sigmoid gate D from
    a small head (`copy_gate`, hidden -> 1) on the main model's hidden states mixes copying the input
    token with the MLM softmax, p(x_t) = D·1[x_t = input_t] + (1 − D)·p_mlm(x_t). The loss is
    −log p(x_t) averaged over every real (non-padding) token. `copy_gate` is trained but not part
    of the exported Hugging Face model."""

    def __init__(self, generator: ElectraForMaskedLM, main: ElectraForMaskedLM, disallowed_ids: list[int],
                 gen_weight: float, main_weight: float):
        super().__init__(generator, main, disallowed_ids, gen_weight, main_weight)
        self.copy_gate = torch.nn.Linear(main.config.hidden_size, 1)
        match_zero_init_dtype(self)  # the gate is made outside zero.Init, next to the 16-bit partitioned models

    def main_objective(self, original, corrupted, attention_mask, selected):
        counted = attention_mask.bool()
        hidden = self.main.electra(input_ids=corrupted, attention_mask=attention_mask).last_hidden_state[counted]
        gate_logits = self.copy_gate(hidden).squeeze(-1)
        inputs, targets = corrupted[counted], original[counted]
        # the vocabulary head over every token in chunks (models/vocab_loss.py): no [tokens x V] logits held
        scores = vocab_log_probs(self.main.generator_predictions(hidden), self.main.generator_lm_head, targets, inputs=inputs)
        log_probs, predictions = copy_mechanism_scores(scores, gate_logits, inputs, targets)
        loss = -log_probs.mean()
        with torch.no_grad():
            correct = predictions == targets
            replaced = inputs != targets
            copy_prob = torch.sigmoid(gate_logits.float())
        return loss, {"main_mlm_loss": ratio(loss, 1), "main_mlm_acc": ratio(correct.sum(), correct.numel()),
                      "main_mlm_acc_replaced": ratio((correct & replaced).sum(), replaced.sum()),
                      "copy_prob": ratio(copy_prob.sum(), copy_prob.numel())}
