"""Fine-tuning one model on one task for one seed: plain torch, one process.

Why plain torch and not DeepSpeed: fine-tuning ELECTRA-Small/Base/Large (14M-335M parameters) fits
on one device with its optimizer state, and the papers fine-tune single-device; ZeRO partitioning,
launchers and a JSON config would add start-up time and failure modes for no memory gain. On CUDA
the model moves to the GPU and the forward pass runs under bf16 autocast (when the GPU supports
bf16) by itself; on CPU everything is fp32.

The optimizer is ELECTRA's (see recipes.py for the sources): AdamW with LayerNorm/bias excluded
from weight decay, linear warmup times linear decay to 0, gradient clipping, and layer-wise
learning-rate decay as in ELECTRA's `_get_layer_lrs` (model/optimization.py): with n layers,
embeddings get lr·d^(n+2), encoder layer i (0-based) lr·d^(n+1-i), the task head lr.
The schedule stays ours: transformers' get_linear_schedule_with_warmup warms up and then decays
from the peak, while ELECTRA multiplies a decay that starts at step 0 by the warmup (a lower peak:
0.9·lr at 10% warmup). Seeding (set_seed) and padding (DataCollatorWithPadding) are transformers'.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from . import metrics as metric_functions
from .recipes import Recipe
from .tasks import Split, Task

NO_DECAY = ("LayerNorm", "layer_norm", "bias")  # ELECTRA's exclude_from_weight_decay
LAYER_PATTERN = re.compile(r"(?:^|\.)layers?\.(\d+)\.")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "spiece.model", "sentencepiece.bpe.model", "vocab.json")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def device_and_autocast() -> tuple[torch.device, torch.dtype | None]:
    """CUDA with bf16 autocast when available; otherwise the CPU in fp32."""
    if torch.cuda.is_available():
        return torch.device("cuda"), (torch.bfloat16 if torch.cuda.is_bf16_supported() else None)
    return torch.device("cpu"), None


# ----------------------------------------------------------------------------------------------
# Model and tokenizer


def load_tokenizer(model_dir: Path):
    """The tokenizer saved beside the model (fast-electra export writes it there)."""
    from transformers import AutoTokenizer

    if not any((model_dir / name).is_file() for name in TOKENIZER_FILES):
        raise UserError(f"{model_dir} holds no tokenizer (none of {', '.join(TOKENIZER_FILES)})",
                        "pass a model directory that holds its tokenizer (as `fast-electra export` writes)")
    try:
        return AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True, trust_remote_code=False)
    except Exception as e:  # transformers raises OSError/ValueError/... for a directory without a tokenizer
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"cannot load a tokenizer from {model_dir}: {message}",
                        "pass a model directory that holds its tokenizer (as `fast-electra export` writes)") from None


def model_config(model_dir: Path):
    from transformers import AutoConfig

    if not model_dir.is_dir():
        raise UserError(f"model directory {model_dir} does not exist", "pass a directory from `fast-electra export` or a local Hugging Face encoder")
    if not (model_dir / "config.json").is_file():
        raise UserError(f"{model_dir} has no config.json", "pass a directory from `fast-electra export` or a local Hugging Face encoder")
    if not any((model_dir / name).is_file() for name in WEIGHT_FILES):
        raise UserError(f"{model_dir} holds no weights (none of {', '.join(WEIGHT_FILES)})",
                        "pass a directory from `fast-electra export` or a local Hugging Face encoder")
    try:
        return AutoConfig.from_pretrained(str(model_dir), local_files_only=True, trust_remote_code=False)
    except Exception as e:
        raise UserError(f"cannot read {model_dir}/config.json: {str(e).splitlines()[0]}", "pass a valid Hugging Face model directory") from None


INITS = ("pretrained", "random")


def label_names(labels: tuple[str, ...] | None, num_labels: int) -> dict:
    """`id2label` / `label2id` for the model's config, so a saved model (and a pipeline over it) says
    the task's labels instead of LABEL_0, LABEL_1. Regression keeps transformers' default."""
    if labels is None:
        return {"num_labels": num_labels}
    return {"num_labels": num_labels, "id2label": dict(enumerate(labels)), "label2id": {name: i for i, name in enumerate(labels)}}


class MeanPooled(torch.nn.Module):
    """A sequence classifier whose own task head reads the mean of the final states over the input's
    tokens (padding excluded) in place of the first token's state (recipe `pooling=mean`).

    Only for heads that read `features[:, 0]` of the encoder's output and nothing else (ELECTRA's and
    RoBERTa's `dense` + `out_proj` head): the mean goes where the first token was. BERT's head reads a
    pooler inside the encoder, so it is refused rather than silently pooled twice. Saved, the model is
    the plain Hugging Face classifier with `fast_electra_pooling: "mean"` in its config."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        head = getattr(model, "classifier", None)
        if not (hasattr(head, "dense") and hasattr(head, "out_proj")):
            raise UserError(f"pooling=mean needs a task head that reads the first token's state (ELECTRA, RoBERTa); "
                            f"{type(model).__name__} has another", "use --set pooling=cls for this model")
        self.model = model

    @property
    def config(self):
        return self.model.config

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        from transformers.modeling_outputs import SequenceClassifierOutput

        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        states = self.model.base_model(**inputs).last_hidden_state
        weights = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1)
        return SequenceClassifierOutput(logits=self.model.classifier(pooled.unsqueeze(1)))

    def save_pretrained(self, directory, **kwargs) -> None:
        self.model.config.fast_electra_pooling = "mean"
        self.model.save_pretrained(directory, **kwargs)


def load_classifier(model_dir: Path, num_labels: int, init: str = "pretrained", labels: tuple[str, ...] | None = None,
                    pooling: str = "cls"):
    """AutoModelForSequenceClassification on the saved encoder; the task head is new (seeded by the
    caller). For an ElectraForPreTraining/ElectraForMaskedLM export the pre-training head is dropped.
    init="random": the same architecture at random initialisation (the no-pre-training baseline).
    `labels`: the task's label strings, in class-id order, for the config's id2label / label2id.
    pooling="mean": the head reads the mean over the input's tokens (MeanPooled)."""
    model = _load_classifier(model_dir, num_labels, init, labels)
    return MeanPooled(model) if pooling == "mean" else model


def _load_classifier(model_dir: Path, num_labels: int, init: str, labels: tuple[str, ...] | None):
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    names = label_names(labels, num_labels)
    if init == "random":
        config = model_config(model_dir)
        for key, value in names.items():
            setattr(config, key, value)
        return AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # "some weights were newly initialized": expected, the task head
    hf_logging.disable_progress_bar()  # a "Loading weights" bar per seed says nothing
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(model_dir), **names, local_files_only=True, trust_remote_code=False, dtype=torch.float32)
    except Exception as e:
        raise UserError(f"cannot load {model_dir} as a sequence classifier: {str(e).splitlines()[0]}",
                        "pass an encoder directory (ELECTRA, BERT, RoBERTa, ...) with its weights") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    return model


# ----------------------------------------------------------------------------------------------
# Data


@dataclass
class Encoded:
    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: np.ndarray


def encode(tokenizer, split: Split, max_seq_len: int, segment_ids: bool = True) -> Encoded:
    """Token ids (pairs as [CLS] a [SEP] b [SEP]); segment ids when the model has a segment embedding
    (ELECTRA and BERT do, RoBERTa does not)."""
    pairs = (split.text_a,) if split.text_b is None else (split.text_a, split.text_b)
    batch = tokenizer(*pairs, truncation=True, max_length=max_seq_len, return_token_type_ids=segment_ids)
    dtype = np.float32 if isinstance(split.labels[0], float) else np.int64
    return Encoded(batch["input_ids"], batch.get("token_type_ids"), np.asarray(split.labels, dtype=dtype))


def collate(collator, encoded: Encoded, indices, device: torch.device) -> dict[str, torch.Tensor]:
    """A batch of `indices` through transformers' DataCollatorWithPadding: padded to the longest
    sequence of the batch (not max_seq_len: far fewer wasted positions), with its attention mask."""
    features = [{"input_ids": encoded.input_ids[i]} if encoded.token_type_ids is None else
                {"input_ids": encoded.input_ids[i], "token_type_ids": encoded.token_type_ids[i]} for i in indices]
    return {k: v.to(device) for k, v in collator(features).items()}


def padding_collator(tokenizer, model_dir: Path):
    from transformers import DataCollatorWithPadding

    if tokenizer.pad_token_id is None:
        raise UserError(f"the tokenizer in {model_dir} has no padding token", "pass an encoder whose tokenizer defines one (ELECTRA, BERT and RoBERTa do)")
    return DataCollatorWithPadding(tokenizer, padding="longest", return_tensors="pt")


# ----------------------------------------------------------------------------------------------
# Optimizer


def layer_depth(name: str, num_layers: int) -> int:
    """ELECTRA's depth of a parameter: embeddings 0, encoder layer i -> i+1, everything else (the
    task head, a pooler) n+2, which gets the full learning rate."""
    if "embeddings" in name:  # embeddings and ELECTRA's embeddings_project
        return 0
    match = LAYER_PATTERN.search(name)
    if match:
        return int(match.group(1)) + 1
    return num_layers + 2


def parameter_groups(model: torch.nn.Module, recipe: Recipe, num_layers: int) -> list[dict]:
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        depth = layer_depth(name, num_layers)
        decay = not any(marker in name for marker in NO_DECAY)
        group = groups.setdefault((depth, decay), {
            "params": [], "lr": recipe.lr * recipe.layer_decay ** (num_layers + 2 - depth),
            "weight_decay": recipe.weight_decay if decay else 0.0, "depth": depth,
        })
        group["params"].append(param)
    return [groups[key] for key in sorted(groups)]


def warmup_linear_decay(total_steps: int, warmup_fraction: float):
    """Multiplier of the base LR at a step, as ELECTRA's create_optimizer (model/optimization.py):
    a linear decay from 1 at step 0 to 0 at total_steps, times a linear warmup min(1, step/W) over
    the first W = warmup_fraction·total_steps steps. The warmup counts the update being made
    (step + 1), so that no update has LR 0."""
    warmup = warmup_fraction * total_steps

    def multiplier(step: int) -> float:
        decay = max(0.0, 1.0 - step / total_steps)
        return decay * (min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0)

    return multiplier


# ----------------------------------------------------------------------------------------------
# Training and evaluation


@torch.no_grad()
def predict(model, encoded: Encoded, collator, batch_size: int, regression: bool,
            device: torch.device, autocast: torch.dtype | None) -> np.ndarray:
    model.eval()
    # Evaluating in length order pads least; the predictions are put back in file order.
    order = np.argsort([len(ids) for ids in encoded.input_ids], kind="stable")
    out = np.empty(len(order), dtype=np.float32 if regression else np.int64)
    for start in range(0, len(order), batch_size):
        indices = order[start:start + batch_size]
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            logits = model(**collate(collator, encoded, indices, device)).logits.float()
        out[indices] = (logits[:, 0] if regression else logits.argmax(-1)).cpu().numpy()
    return out


def evaluate(model, task: Task, dev: dict[str, Encoded], collator, recipe: Recipe,
             device: torch.device, autocast: torch.dtype | None, predictions_out: dict | None = None) -> dict[str, float]:
    """Every metric on every dev split; `predictions_out`, when given, receives each split's predictions."""
    results = {}
    positive = task.labels.index(task.positive_label) if task.positive_label is not None else 1
    for suffix, encoded in dev.items():
        predictions = predict(model, encoded, collator, recipe.eval_batch_size, task.is_regression, device, autocast)
        if predictions_out is not None:
            predictions_out[suffix] = predictions
        for name, value in metric_functions.compute(task.metrics, predictions, encoded.labels, positive).items():
            results[f"{name}_{suffix}" if suffix else name] = value
    return results


def train_one_seed(model_dir: Path, task: Task, train: Encoded, dev: dict[str, Encoded], collator,
                   recipe: Recipe, seed: int, progress: bool = True, init: str = "pretrained",
                   keep_best: bool = False) -> tuple[dict[str, float], dict, torch.nn.Module, dict[str, np.ndarray]]:
    """Fine-tune a fresh copy of the model with `seed` (head initialisation, dropout, data order) and
    evaluate on every dev split at the end of training, as ELECTRA does. Returns (metrics, stats,
    model, each dev split's predictions at the end of training). With `keep_best`, the dev sets are also evaluated after every epoch and the returned
    model holds the weights of the epoch with the best main metric (the reported metrics stay those
    of the end of training, the papers' protocol; stats name the best epoch and its metrics); that
    model's own dev predictions are returned too, under the keys "best" + suffix."""
    from tqdm.auto import tqdm
    from transformers import set_seed

    device, autocast = device_and_autocast()
    set_seed(seed)  # Python, NumPy and torch (every device)
    model = load_classifier(model_dir, task.num_labels, init, task.labels, recipe.pooling).to(device)
    num_layers = int(getattr(model.config, "num_hidden_layers", 0))
    optimizer = torch.optim.AdamW(parameter_groups(model, recipe, num_layers), lr=recipe.lr,
                                  betas=(0.9, 0.999), eps=recipe.adam_eps)
    steps_per_epoch = math.ceil(len(train.labels) / recipe.batch_size)
    total_steps = max(1, math.ceil(recipe.epochs * steps_per_epoch))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_linear_decay(total_steps, recipe.warmup_fraction))
    generator = torch.Generator().manual_seed(seed)  # data order: a function of the seed alone
    labels = torch.from_numpy(train.labels)

    best: dict = {}

    def consider(epoch: float, results: dict[str, float], predictions: dict[str, np.ndarray]) -> None:
        if not best or results[task.main_metric] > best["metrics"][task.main_metric]:
            state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            best.update(epoch=epoch, metrics=results, state=state, predictions=predictions)

    model.train()
    losses = []
    bar = tqdm(total=total_steps, desc=f"{task.name} seed {seed}", unit="step", disable=not progress, leave=False)
    step = 0
    while step < total_steps:
        for batch_indices in torch.randperm(len(train.labels), generator=generator).split(recipe.batch_size):
            if step == total_steps:
                break
            indices = batch_indices.tolist()
            with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                logits = model(**collate(collator, train, indices, device)).logits.float()
            target = labels[indices].to(device)
            if task.is_regression:
                loss = torch.nn.functional.mse_loss(logits[:, 0], target)
            else:
                loss = torch.nn.functional.cross_entropy(logits, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if recipe.clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.clip_norm)
            optimizer.step()
            schedule.step()
            step += 1
            losses.append(loss.item())
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-10:]):.4f}")
            if keep_best and step % steps_per_epoch == 0 and step < total_steps:
                epoch_predictions: dict[str, np.ndarray] = {}
                consider(step / steps_per_epoch, evaluate(model, task, dev, collator, recipe, device, autocast, epoch_predictions),
                         epoch_predictions)
                model.train()
    bar.close()
    dev_predictions: dict[str, np.ndarray] = {}
    results = evaluate(model, task, dev, collator, recipe, device, autocast, dev_predictions)
    stats = {"steps": total_steps, "final_train_loss": float(np.mean(losses[-max(1, steps_per_epoch // 10):]))}
    if keep_best:
        consider(round(total_steps / steps_per_epoch, 3), results, dict(dev_predictions))
        model.load_state_dict(best["state"])
        stats.update(best_epoch=best["epoch"], best_metrics=best["metrics"])
        dev_predictions.update({f"best{suffix}": predictions for suffix, predictions in best["predictions"].items()})
    return results, stats, model, dev_predictions


def majority_baseline(task: Task, train_labels: np.ndarray, dev: dict[str, Encoded]) -> dict[str, float]:
    """Every metric of always predicting the training set's most frequent class (the train mean for
    regression, whose correlations are 0 by the constant-prediction rule in metrics.py)."""
    if task.is_regression:
        constant: float | int = float(train_labels.mean())
    else:
        constant = int(np.bincount(train_labels.astype(np.int64), minlength=task.num_labels).argmax())
    positive = task.labels.index(task.positive_label) if task.positive_label is not None else 1
    results = {}
    for suffix, encoded in dev.items():
        predictions = np.full(len(encoded.labels), constant)
        for name, value in metric_functions.compute(task.metrics, predictions, encoded.labels, positive).items():
            results[f"{name}_{suffix}" if suffix else name] = value
    return results
