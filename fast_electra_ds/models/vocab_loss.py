"""Vocabulary-head losses without a [rows x V] logits tensor: the output layer (hidden ->
vocabulary, a Linear) and the log-softmax run over chunks of rows; backward recomputes each chunk's
logits.

At paper-base the corrective-LM head's 8 x 512 x 128k logits, with their float32 copies and gradients,
were 6.3 GB of the main model's 7.55 GB of activations. Here at most one chunk of CHUNK_ELEMENTS logits
(and its float32 softmax and gradient) lives at a time; what is kept for backward is the head's input
[rows x e]. The price is one more forward GEMM of the output layer per step (4 GEMMs instead of 3).

ZeRO-3: the output layers are tied to the word embeddings, so their weight must get ONE gradient
through the main autograd graph (a second backward pass, as reentrant checkpointing would run, makes
ZeRO-3 reduce that parameter twice). So the weight and bias are inputs of the autograd Function, whose
backward returns their gradients (written out: d log p(t)/d logits = onehot(t) − softmax, in float32).
And the Function runs AS the output layer's forward (`_run_as_forward`): ZeRO-3 gathers a module's
parameters around its call and again before its backward (as for DeepSpeed's own
LinearFunctionForZeroStage3, which also saves the weight for backward). The number of chunks follows
the row count, so ZeRO-3's module trace does not change with chunking."""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..metrics.pairs import Metrics, ratio
from .sampling import sample_and_argmax

CHUNK_ELEMENTS = 1 << 24  # logits per chunk: 64 MiB in float32 (128 rows at V = 128k, 549 at 30522)


class VocabScores(NamedTuple):
    target: torch.Tensor  # log p(target) [N], differentiable (features and the output layer's parameters)
    argmax: torch.Tensor  # [N], over the whole vocabulary (with sampling: the sampler's, which is the same)
    max_log_prob: torch.Tensor  # log p(argmax) [N]
    at_inputs: torch.Tensor | None  # log p(inputs) [N] when `inputs` were given
    sampled: torch.Tensor | None  # one draw per row when `sample` was given


def rows_per_chunk(vocab_size: int) -> int:
    return max(1, CHUNK_ELEMENTS // vocab_size)


def vocab_log_probs(features: torch.Tensor, output_layer: torch.nn.Linear, targets: torch.Tensor,
                    inputs: torch.Tensor | None = None, sample: tuple | None = None,
                    chunk_rows: int | None = None) -> VocabScores:
    """log Softmax(output_layer(features))[targets] per row, chunk by chunk. `sample` = (temperature,
    generator, disallowed_ids): also one draw per row (models/sampling.py), taken from the forward's
    logits, so the draw costs no extra GEMM and backward never redraws."""
    chunk = chunk_rows or rows_per_chunk(output_layer.out_features)

    def chunked(x: torch.Tensor):
        return _ChunkedLogProbs.apply(x, output_layer.weight, output_layer.bias, targets, inputs, sample, chunk)

    target, argmax, top, at_inputs, sampled = _run_as_forward(output_layer, chunked, features)
    return VocabScores(target, argmax, top, at_inputs if inputs is not None else None, sampled if sample is not None else None)


def _run_as_forward(module: torch.nn.Module, function, *args):
    """function(*args) called as `module`'s forward, through module.__call__ and so its hooks (ZeRO-3's
    parameter gathering)."""
    module.forward = function  # an instance attribute shadows the class's forward for this one call
    try:
        return module(*args)
    finally:
        del module.forward


class _ChunkedLogProbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features, weight, bias, targets, inputs, sample, chunk):
        ctx.chunk = chunk
        ctx.save_for_backward(features, weight, bias, targets)
        parts: dict[str, list[torch.Tensor]] = {"target": [], "argmax": [], "top": [], "inputs": [], "sampled": []}
        for start in range(0, max(len(features), 1), chunk):
            rows = slice(start, start + chunk)
            logits = F.linear(features[rows], weight, bias)  # under autocast as the Linear would be
            ctx.logits_dtype = logits.dtype
            if sample is not None:
                temperature, generator, disallowed = sample
                drawn, best = sample_and_argmax(logits, temperature, generator, disallowed)
                parts["sampled"].append(drawn)
            logits = logits.float()
            log_total = torch.logsumexp(logits, dim=-1)
            if sample is None:
                best = logits.argmax(dim=-1)
            parts["argmax"].append(best)
            parts["top"].append(logits.gather(1, best[:, None]).squeeze(1) - log_total)
            parts["target"].append(logits.gather(1, targets[rows, None]).squeeze(1) - log_total)
            if inputs is not None:
                parts["inputs"].append(logits.gather(1, inputs[rows, None]).squeeze(1) - log_total)
        empty = features.new_zeros(0, dtype=torch.float32)
        out = [torch.cat(parts[k]) if parts[k] else empty for k in ("target", "argmax", "top", "inputs", "sampled")]
        ctx.mark_non_differentiable(*out[1:])
        return tuple(out)

    @staticmethod
    def backward(ctx, grad_target, *unused):
        features, weight, bias, targets = ctx.saved_tensors
        dtype = ctx.logits_dtype  # the forward's GEMM dtype (autocast's, or the parameters')
        w = weight.to(dtype)
        b = bias.to(dtype) if bias is not None else None
        grad_features = torch.empty_like(features)
        # in the weight's dtype: a float32 [V x e] buffer would be the largest tensor of the head's backward
        # (393 MB at V = 128k, e = 768); each chunk's GEMM accumulates in float32 and rounds once
        grad_weight = torch.zeros_like(weight)
        grad_bias = torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device)
        with torch.autocast(features.device.type, enabled=False):
            for start in range(0, len(features), ctx.chunk):
                rows = slice(start, start + ctx.chunk)
                hidden = features[rows].to(dtype)
                probs = torch.softmax(F.linear(hidden, w, b).float(), dim=-1)
                scale = grad_target[rows].float()[:, None]
                grad_logits = probs.mul_(-scale).scatter_add_(1, targets[rows, None], scale)  # (onehot − softmax)·grad
                grad_bias += grad_logits.sum(dim=0)
                grad_logits = grad_logits.to(dtype)
                grad_features[rows] = grad_logits @ w
                if weight.dtype == dtype:
                    grad_weight.addmm_(grad_logits.t(), hidden)
                else:  # autocast: the GEMM in its dtype, as autograd's, then added to the float32 gradient
                    grad_weight += grad_logits.t() @ hidden
        return (grad_features, grad_weight, grad_bias.to(bias.dtype) if bias is not None else None,
                None, None, None, None)


def chunked_mlm_loss(features: torch.Tensor, output_layer: torch.nn.Module, targets: torch.Tensor,
                     prefix: str = "mlm", sample: tuple | None = None) -> tuple[torch.Tensor, Metrics, torch.Tensor | None]:
    """objectives.mlm_loss of output_layer(features) without the logits: (cross-entropy averaged over
    the rows, its metrics, the draws when `sample` is given)."""
    scores = vocab_log_probs(features, output_layer, targets, sample=sample)
    loss = -scores.target.mean()
    correct = scores.argmax == targets
    metrics = {f"{prefix}_loss": ratio(loss, 1), f"{prefix}_acc": ratio(correct.sum(), correct.numel())}
    return loss, metrics, scores.sampled


def masked_lm_loss(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, selected: torch.Tensor,
                   targets: torch.Tensor, prefix: str = "mlm") -> tuple[torch.Tensor, Metrics]:
    """The loss and metrics of mlm_loss(masked_lm_logits(model, ...), targets) (models/pretraining.py)
    for an ElectraForMaskedLM, without its [M x V] logits."""
    hidden = model.electra(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    loss, metrics, _ = chunked_mlm_loss(model.generator_predictions(hidden[selected]), model.generator_lm_head, targets, prefix)
    return loss, metrics


def masked_lm_loss_and_sample(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, selected: torch.Tensor,
                              targets: torch.Tensor, generator: torch.Generator,
                              disallowed_ids: list[int]) -> tuple[torch.Tensor, Metrics, torch.Tensor]:
    """masked_lm_loss and one draw per selected position from the same logits at temperature 1 (ELECTRA's
    generator): what mlm_loss(logits) and gumbel_max_sample(logits) gave, without the [M x V] logits."""
    hidden = model.electra(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    return chunked_mlm_loss(model.generator_predictions(hidden[selected]), model.generator_lm_head, targets,
                            sample=(1.0, generator, disallowed_ids))


def copy_mechanism_scores(scores: VocabScores, gate_logits: torch.Tensor, inputs: torch.Tensor,
                          targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p(target), argmax prediction) under the copy mechanism p(x) = D·1[x = input] + (1 − D)·p_mlm(x),
    D = sigmoid(gate_logits), from the chunked scores (pretraining.copy_mechanism_log_probs and
    copy_mechanism_predictions without [N x V] tensors). The argmax is the input token when its
    mixture probability D + (1 − D)·p_mlm(input) is at least (1 − D)·max p_mlm, else the MLM's argmax."""
    gate = gate_logits.float()
    log_copy, log_generate = torch.nn.functional.logsigmoid(gate), torch.nn.functional.logsigmoid(-gate)
    copy = torch.where(targets == inputs, log_copy, torch.full_like(log_copy, float("-inf")))
    log_probs = torch.logaddexp(copy, log_generate + scores.target)
    with torch.no_grad():
        keep = torch.sigmoid(gate)
        input_prob = keep + (1 - keep) * scores.at_inputs.exp()
        predictions = torch.where(input_prob >= (1 - keep) * scores.max_log_prob.exp(), inputs, scores.argmax)
    return log_probs, predictions
