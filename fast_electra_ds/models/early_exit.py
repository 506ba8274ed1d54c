"""Electra encoders that stop early (Kang et al., KAIST, "Adaptive Early Exit"): the engine modules
of the `adaptive-exit` and `early-exit-disc` methods. Both run an Electra encoder layer by layer
(`run_layers`) so that the layers above the exit are never called: no FLOPs, and under ZeRO-3 no
all-gather of their weights and no gradients for them."""
from __future__ import annotations

import torch
from transformers import ElectraForMaskedLM, ElectraForPreTraining, ElectraModel
from transformers.masking_utils import create_bidirectional_mask
from transformers.models.electra.modeling_electra import ElectraDiscriminatorPredictions, ElectraGeneratorPredictions

from ..metrics.pairs import Metrics, ratio
from .objectives import rtd_loss
from .pretraining import match_zero_init_dtype, share_embeddings
from .vocab_loss import chunked_mlm_loss


def run_layers(electra: ElectraModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, stops: list[int]) -> list[torch.Tensor]:
    """ElectraModel.forward up to layer stops[-1] only: embeddings (and their projection), the same
    attention mask the model builds, then layers 1..stops[-1]. Returns the hidden state after each
    layer number in `stops` (1-based, increasing)."""
    hidden = electra.embeddings(input_ids=input_ids)
    if hasattr(electra, "embeddings_project"):
        hidden = electra.embeddings_project(hidden)
    # The mask ElectraModel.forward builds for an encoder (its private helper changed signature between 5.x releases).
    mask = create_bidirectional_mask(config=electra.config, inputs_embeds=hidden, attention_mask=attention_mask)
    outputs = []
    for number, layer in enumerate(electra.encoder.layer[:stops[-1]], start=1):
        hidden = layer(hidden, mask)
        if number in stops:
            outputs.append(hidden)
    return outputs


def tied_vocab_output(embedding_size: int, word_embeddings: torch.nn.Embedding) -> torch.nn.Linear:
    """An output layer embedding -> vocabulary whose weight IS the shared word-embedding Parameter
    (as ElectraForMaskedLM ties generator_lm_head), with its own bias. Owning the Parameter lets
    ZeRO-3 gather it when this layer runs."""
    output = torch.nn.Linear(embedding_size, word_embeddings.num_embeddings)
    output.weight = word_embeddings.weight
    torch.nn.init.zeros_(output.bias)
    return output


def _init_new(model: torch.nn.Module, *modules: torch.nn.Module) -> None:
    """Hugging Face's initialisation (normal(0, initializer_range), LayerNorm 1/0) for modules
    added next to a Hugging Face model (never applied to tied outputs: that would re-draw the
    shared embeddings)."""
    for module in modules:
        module.apply(model._init_weights)


def _unrun(metrics: Metrics, name: str, device: torch.device) -> None:
    """A metric of a head that did not run this micro-batch: 0/0, so the logged names stay the same
    every step and the reduced value is NaN (not measured) unless it ran on some micro-batch."""
    zero = torch.zeros((), device=device)
    metrics[name] = (zero, zero)


class AdaptiveExitElectra(torch.nn.Module):
    """Adaptive Early-Exit (Gen): ELECTRA (generator and discriminator in ONE engine module, shared
    embeddings, Gumbel-max sampling, loss = gen_weight·L_MLM + disc_weight·L_RTD) whose generator has
    an MLM exit after each layer in `exits` (the last is the generator's top layer).

    - Exit i's head is an Electra generator head (dense h->e, GELU, LayerNorm) and an output layer
      tied to the shared word embeddings; the top exit uses the generator's own head
      (generator_predictions, generator_lm_head).
    - The paper's first monotonicity trick: exit i > 0 reads the concatenation of the hidden states
      of exits 0..i, projected back to the hidden width by its own Linear((i+1)·h, h)
      (`concat_projections[i-1]`); exit 0 reads its layer's output as it is. Everything past the
      encoder runs only at the selected positions.
    - The second trick: exit i's MLM loss weighs `exit_weights[i]`; the generator's loss is
      Σ_{i<=k} w_i·L_i / Σ_{i<=k} w_i over the exits that ran (k = the drawn exit), so its scale does
      not depend on the draw.
    - forward(..., exit_index=k) runs generator layers 1..exits[k] only; the replacements are sampled
      from exit k; the discriminator always runs in full (the paper: "the inputs fully propagate
      through the discriminator").
    """

    def __init__(self, generator: ElectraForMaskedLM, discriminator: ElectraForPreTraining, exits: list[int],
                 exit_weights: list[float], disallowed_ids: list[int], gen_weight: float, disc_weight: float):
        super().__init__()
        share_embeddings(generator, discriminator)
        self.main = discriminator  # first: the shared embeddings are named main.electra.embeddings.*
        self.generator = generator
        config = generator.config
        word_embeddings = discriminator.electra.embeddings.word_embeddings
        self.exit_heads = torch.nn.ModuleList(ElectraGeneratorPredictions(config) for _ in exits[:-1])
        self.exit_outputs = torch.nn.ModuleList(tied_vocab_output(config.embedding_size, word_embeddings) for _ in exits[:-1])
        self.concat_projections = torch.nn.ModuleList(torch.nn.Linear((i + 1) * config.hidden_size, config.hidden_size)
                                                      for i in range(1, len(exits)))
        _init_new(generator, self.exit_heads, self.concat_projections)
        match_zero_init_dtype(self)
        self.exits = list(exits)
        self.exit_weights = list(exit_weights)
        self.disallowed_ids = list(disallowed_ids)
        self.gen_weight, self.disc_weight = gen_weight, disc_weight

    def exit_head(self, i: int) -> tuple[torch.nn.Module, torch.nn.Module]:
        if i == len(self.exits) - 1:
            return self.generator.generator_predictions, self.generator.generator_lm_head
        return self.exit_heads[i], self.exit_outputs[i]

    def exit_features(self, masked_ids: torch.Tensor, attention_mask: torch.Tensor, selected: torch.Tensor,
                      exit_index: int) -> list[tuple[torch.Tensor, torch.nn.Module]]:
        """(the output layer's input [M, e], the output layer) at the selected positions of exits 0..exit_index."""
        hidden = [h[selected] for h in run_layers(self.generator.electra, masked_ids, attention_mask, self.exits[:exit_index + 1])]
        heads = []
        for i in range(exit_index + 1):
            features = hidden[0] if i == 0 else self.concat_projections[i - 1](torch.cat(hidden[:i + 1], dim=-1))
            predictions, output = self.exit_head(i)
            heads.append((predictions(features), output))
        return heads

    def exit_logits(self, masked_ids: torch.Tensor, attention_mask: torch.Tensor, selected: torch.Tensor,
                    exit_index: int) -> list[torch.Tensor]:
        """Vocabulary logits [M, V] at the selected positions of exits 0..exit_index (forward computes the
        same losses in chunks, without them)."""
        return [output(features) for features, output in self.exit_features(masked_ids, attention_mask, selected, exit_index)]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, masked_ids: torch.Tensor, selected: torch.Tensor,
                rng: torch.Generator, exit_index: int) -> tuple[torch.Tensor, Metrics]:
        targets = input_ids[selected]
        metrics: Metrics = {}
        gen_loss, weight_sum = 0.0, 0.0
        heads = self.exit_features(masked_ids, attention_mask, selected, exit_index)
        for i, layer in enumerate(self.exits):
            if i > exit_index:
                _unrun(metrics, f"mlm_loss_exit{layer}", input_ids.device)
                _unrun(metrics, f"mlm_acc_exit{layer}", input_ids.device)
                continue
            # chunked vocabulary loss (models/vocab_loss.py); exit k's pass also draws the replacements
            loss_i, metrics_i, drawn = chunked_mlm_loss(*heads[i], targets, prefix=f"mlm_exit{layer}",
                                                        sample=(1.0, rng, self.disallowed_ids) if i == exit_index else None)
            if i == exit_index:
                sampled = drawn
            metrics[f"mlm_loss_exit{layer}"], metrics[f"mlm_acc_exit{layer}"] = metrics_i[f"mlm_exit{layer}_loss"], metrics_i[f"mlm_exit{layer}_acc"]
            gen_loss = gen_loss + self.exit_weights[i] * loss_i
            weight_sum += self.exit_weights[i]
        gen_loss = gen_loss / weight_sum
        corrupted = input_ids.clone()
        corrupted[selected] = sampled
        logits = self.main(input_ids=corrupted, attention_mask=attention_mask).logits
        rtd, rtd_metrics = rtd_loss(logits, corrupted != input_ids, attention_mask, input_ids=corrupted, vocab_size=self.main.config.vocab_size)
        for i, layer in enumerate(self.exits):  # the discriminator's accuracy on samples from each exit
            if i == exit_index:
                metrics[f"rtd_acc_exit{layer}"] = rtd_metrics["rtd_acc"]
            else:
                _unrun(metrics, f"rtd_acc_exit{layer}", input_ids.device)
        loss = self.gen_weight * gen_loss + self.disc_weight * rtd
        drawn = torch.tensor(float(self.exits[exit_index]), device=input_ids.device)
        return loss, {"loss": ratio(loss, 1), "mlm_loss": ratio(gen_loss, 1), "mlm_acc": metrics[f"mlm_acc_exit{self.exits[exit_index]}"],
                      "exit_layer": ratio(drawn, 1), **metrics, **rtd_metrics}


class EarlyExitDiscriminator(torch.nn.Module):
    """Early-Exit (Disc): one Electra encoder (the discriminator's, ElectraForPreTraining) split into
    sections ending after the layers in `sections`, with an RTD head at each section end (the last
    is the discriminator's own head, so the full-depth model is a standard ElectraForPreTraining).
    Generator and discriminator share all parameters, as the paper does: the generator is the same
    encoder read by an MLM head (an Electra generator head with its output tied to the word
    embeddings).

    forward(..., active_sections=k) runs sections 1..k only, in both passes:
    - generator pass: masked input -> layers 1..sections[k-1] -> MLM head at the selected positions ->
      Gumbel-max replacements. It stops where the discriminator stops, so the skipped sections get
      no gradient from either pass (the method also sets their learning rate to 0; see
      methods/early_exit_disc.py);
    - discriminator pass: corrupted input -> the same layers; each section that ran scores RTD with its
      head. L_RTD is the mean of the sections' RTD losses (every exit is trained, as early-exit
      models train all their exits); the logged rtd_* metrics are the deepest section's.
    loss = gen_weight·L_MLM + disc_weight·L_RTD."""

    def __init__(self, discriminator: ElectraForPreTraining, sections: list[int], disallowed_ids: list[int],
                 gen_weight: float, disc_weight: float):
        super().__init__()
        self.main = discriminator
        config = discriminator.config
        self.section_heads = torch.nn.ModuleList(ElectraDiscriminatorPredictions(config) for _ in sections[:-1])
        self.mlm_predictions = ElectraGeneratorPredictions(config)
        self.mlm_output = tied_vocab_output(config.embedding_size, discriminator.electra.embeddings.word_embeddings)
        _init_new(discriminator, self.section_heads, self.mlm_predictions)
        match_zero_init_dtype(self)
        self.sections = list(sections)
        self.disallowed_ids = list(disallowed_ids)
        self.gen_weight, self.disc_weight = gen_weight, disc_weight

    def section_head(self, s: int) -> torch.nn.Module:
        return self.main.discriminator_predictions if s == len(self.sections) - 1 else self.section_heads[s]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, masked_ids: torch.Tensor, selected: torch.Tensor,
                rng: torch.Generator, active_sections: int) -> tuple[torch.Tensor, Metrics]:
        stops = self.sections[:active_sections]
        electra = self.main.electra
        gen_hidden = run_layers(electra, masked_ids, attention_mask, stops[-1:])[0]
        # chunked vocabulary loss (models/vocab_loss.py), whose forward also draws the replacements
        gen_loss, gen_metrics, sampled = chunked_mlm_loss(self.mlm_predictions(gen_hidden[selected]), self.mlm_output,
                                                          input_ids[selected], sample=(1.0, rng, self.disallowed_ids))
        corrupted = input_ids.clone()
        corrupted[selected] = sampled
        is_replaced = corrupted != input_ids

        metrics: Metrics = {}
        section_losses = []
        for s, (layer, hidden) in enumerate(zip(stops, run_layers(electra, corrupted, attention_mask, stops))):
            loss_s, metrics_s = rtd_loss(self.section_head(s)(hidden), is_replaced, attention_mask, input_ids=corrupted,
                                         vocab_size=self.main.config.vocab_size)
            section_losses.append(loss_s)
            metrics[f"rtd_acc_section{layer}"] = metrics_s["rtd_acc"]
        for layer in self.sections[active_sections:]:
            _unrun(metrics, f"rtd_acc_section{layer}", input_ids.device)
        disc_loss = torch.stack(section_losses).mean()
        loss = self.gen_weight * gen_loss + self.disc_weight * disc_loss
        depth = torch.tensor(float(stops[-1]), device=input_ids.device)
        return loss, {"loss": ratio(loss, 1), **gen_metrics, **metrics_s, "rtd_loss_sections": ratio(disc_loss, 1),
                      "exit_layer": ratio(depth, 1), **metrics}
