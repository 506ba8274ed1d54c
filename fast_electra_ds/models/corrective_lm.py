"""The corrective language-model (CLM) head of the main model: `model.corrective_lm` for the methods whose
main model is a discriminator (`fast`, `electra`, `electra-15`).

Source. The Fast-ELECTRA poster builds on METRO (Bajaj et al. 2022), whose main model carries, besides
the RTD head, a vocabulary head that predicts the original token at every position: COCO-LM's corrective
LM (Meng et al., NeurIPS 2021, §3.1; the same group). METRO's own text is not in our reference store, so
the definition followed is COCO-LM's, from its paper and its released code (microsoft/COCO-LM,
fairseq/models/cocolm/model.py `CLMHead`, fairseq/criterions/cocolm.py):

- copy mechanism: p_CLM(x_orig | h_i) = 1[x_orig = x_input]·p_copy(h_i) + (1 − p_copy(h_i))·softmax(W h_i)[x_orig],
  where p_copy is the binary "not replaced" head, i.e. the RTD head: p_copy = 1 − sigmoid(rtd_logit);
- the copy probability is stop-gradient inside the LM loss (COCO-LM's sg(·); its code detaches it), so
  the CLM loss never trains the RTD head;
- the output layer is tied to the main model's word embeddings, with its own bias (COCO-LM's CLMHead);
- loss weights: COCO-LM adds the binary (RTD) loss with weight 50 and the CLM loss with weight 1. Here
  the CLM loss is added to the main objective as L_RTD + `corrective_lm_weight`·L_CLM, default 1/50, so
  `electra` (disc_weight 50) gets exactly COCO-LM's 50·L_RTD + 1·L_CLM and `fast` the same ratio.

Our choices where the sources differ or are silent:
- positions: every real (non-padding) token, as COCO-LM's equation and the issue's FLOPs derivation
  (the poster counts a 2·V·h head over all 512 positions); COCO-LM's code evaluates it at the masked
  positions only, weighting the cross-entropy by (1 − p_copy).
- the head is Electra's masked-LM head (dense h→e, GELU, LayerNorm, tied e→V decoder), where COCO-LM has
  the decoder alone: with it the main encoder plus this head IS a Hugging Face ElectraForMaskedLM, which
  `masked_lm_view` exports (sub-directory corrective_lm/) and which also works when embedding_size < hidden
  (ELECTRA-Small). Cost: 2·h·e more FLOPs per position (+0.3% of the paper-base main model).
- with `electra-15` the copy gate (its RTD head) is trained at the selected positions only, so p_copy is
  uncalibrated elsewhere; the option is allowed there but is COCO-LM's design only with an all-token RTD.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from transformers import ElectraConfig, ElectraForMaskedLM, ElectraForPreTraining
from transformers.models.electra.modeling_electra import ElectraGeneratorPredictions

from ..config.run_config import ModelConfig
from ..metrics.pairs import Metrics, ratio
from .encoder import is_partitioned
from .vocab_loss import copy_mechanism_scores, vocab_log_probs

DEFAULT_WEIGHT = 1 / 50  # COCO-LM: CLM loss weight 1 beside binary_loss_weight 50


class CorrectiveLMHead(torch.nn.Module):
    """Vocabulary head over all positions of the discriminator, trained with COCO-LM's corrective-LM loss."""

    def __init__(self, config: ElectraConfig, word_embeddings: torch.nn.Embedding, weight: float = DEFAULT_WEIGHT):
        super().__init__()
        self.loss_weight = weight
        self.predictions = ElectraGeneratorPredictions(config)
        # Built on the meta device: its weight is replaced by the tied word embeddings at once, so a
        # V×e matrix is never allocated.
        self.decoder = torch.nn.Linear(config.embedding_size, config.vocab_size, device="meta")
        self.decoder.weight = word_embeddings.weight
        self.decoder.bias = torch.nn.Parameter(torch.zeros(config.vocab_size))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.predictions(hidden))

    def forward(self, hidden: torch.Tensor, rtd_logits: torch.Tensor, corrupted: torch.Tensor, original: torch.Tensor,
                attention_mask: torch.Tensor) -> tuple[torch.Tensor, Metrics]:
        """L_CLM = −mean log p_CLM(original | corrupted) over every real token. hidden: [b, s, h] of the
        discriminator; rtd_logits: [b, s] (positive = replaced)."""
        counted = attention_mask.bool()
        copy_logits = -rtd_logits.detach()[counted]  # p_copy = 1 − P(replaced), stop-gradient (COCO-LM)
        inputs, targets = corrupted[counted], original[counted]
        # the decoder over all positions in chunks (models/vocab_loss.py): no [tokens x V] logits held
        scores = vocab_log_probs(self.predictions(hidden[counted]), self.decoder, targets, inputs=inputs)
        log_probs, predictions = copy_mechanism_scores(scores, copy_logits, inputs, targets)
        loss = -log_probs.mean()
        with torch.no_grad():
            correct = predictions == targets
            replaced = inputs != targets
        return loss, {"clm_loss": ratio(loss, 1), "clm_acc": ratio(correct.sum(), correct.numel()),
                      "clm_acc_replaced": ratio((correct & replaced).sum(), replaced.sum())}


def corrective_lm_head(discriminator: ElectraForPreTraining, model: ModelConfig,
                       ds_config: dict[str, Any] | None) -> CorrectiveLMHead | None:
    """The head for `discriminator` if `model.corrective_lm` is on, else None. Under ZeRO-3 its own
    parameters are partitioned (and cast to the engine's 16-bit dtype) as zero.Init does for the
    discriminator; the tied decoder weight already is."""
    if not model.corrective_lm:
        return None
    head = CorrectiveLMHead(discriminator.config, discriminator.electra.embeddings.word_embeddings, model.corrective_lm_weight)
    partitioned = [p for p in discriminator.parameters() if is_partitioned(p)]
    if partitioned:
        import deepspeed

        dtype = partitioned[0].ds_tensor.dtype  # zero.Init(module=...) partitions but does not cast
        head.predictions.to(dtype)
        head.decoder.bias.data = head.decoder.bias.data.to(dtype)
        deepspeed.zero.Init(module=head, config_dict_or_path=ds_config)
    return head


def rtd_with_corrective_lm(discriminator: ElectraForPreTraining, head: CorrectiveLMHead, corrupted: torch.Tensor,
                           original: torch.Tensor, attention_mask: torch.Tensor,
                           rtd_loss_fn) -> tuple[torch.Tensor, Metrics]:
    """One discriminator pass feeding both heads: L_RTD + weight·L_CLM and both heads' metrics.
    `rtd_loss_fn(logits)` computes the RTD loss (all tokens, or the selected ones for ELECTRA 15%)."""
    hidden = discriminator.electra(input_ids=corrupted, attention_mask=attention_mask).last_hidden_state
    rtd_logits = discriminator.discriminator_predictions(hidden)
    rtd, rtd_metrics = rtd_loss_fn(rtd_logits)
    clm, clm_metrics = head(hidden, rtd_logits, corrupted, original, attention_mask)
    return rtd + head.loss_weight * clm, {**rtd_metrics, **clm_metrics}


def masked_lm_view(discriminator: ElectraForPreTraining, head: CorrectiveLMHead) -> ElectraForMaskedLM:
    """A Hugging Face ElectraForMaskedLM made of the discriminator's encoder and the CLM head (shared
    modules, nothing copied): the exported corrective_lm/ directory. Its logits are the CLM vocabulary
    logits without the copy mechanism (the copy gate is the RTD head of the top-level export)."""
    config = copy.deepcopy(discriminator.config)  # save_pretrained writes `architectures` into its config
    with torch.device("meta"):  # every sub-module is replaced below: nothing of it is allocated
        view = ElectraForMaskedLM(config)
    view.electra = discriminator.electra
    view.generator_predictions = head.predictions
    view.generator_lm_head = head.decoder
    return view.train(discriminator.training)
