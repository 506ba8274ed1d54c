"""The README.md (model card) of every exported model directory: what was trained (method, sizes),
on what (data, tokenizer), for how long (steps, batch, optimizer) and how it ended (the last value of
each metric in the run's metrics.jsonl). Read by the Hub, by people, and by `finetune` users."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import ModelCard, ModelCardData

from ..data.tokenizer import save_tokenizer_for_model
from ..metrics.logger import read_metrics


def finish_model_dir(target: Path, model, tokenizer, run_dir: Path, checkpoint: Path) -> None:
    """The tokenizer (with the model's length limit) and the model card next to a saved model."""
    save_tokenizer_for_model(tokenizer, target, model.config.max_position_embeddings)
    model_card(model, run_dir, checkpoint).save(target / "README.md")


def final_metrics(metrics_file: Path) -> dict[str, tuple[int, float]]:
    """Each metric's last logged value and its step (validation metrics may be logged less often);
    an undefined value (`null`) is NaN."""
    latest: dict[str, tuple[int, float]] = {}
    if not metrics_file.is_file():
        return latest
    for record in read_metrics(metrics_file):
        step = record.get("step")
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                latest[key] = (step, value)
    return latest


def method_summary(method: str) -> str:
    from ..methods import METHODS

    cls = METHODS.get(method)
    doc = (sys.modules[cls.__module__].__doc__ or "") if cls else ""
    return " ".join(doc.strip().split("\n\n")[0].split()) or method


def model_card(model, run_dir: Path, checkpoint: Path) -> ModelCard:
    """The Hub's card: its metadata block written and validated by huggingface_hub, the body ours."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    ds_file = run_dir / "ds_config.json"
    ds: dict[str, Any] = json.loads(ds_file.read_text()) if ds_file.is_file() else {}
    step = checkpoint.name.removeprefix("step_").lstrip("0") or "0"
    optimizer = ds.get("optimizer", {})
    schedule = ds.get("scheduler", {})
    hf = model.config
    data, train = config.get("data", {}), config.get("train", {})
    metadata = ModelCardData(library_name="transformers", tags=["electra", "fast-electra-ds", config.get("method", "")])
    lines = [
        "---",
        metadata.to_yaml(),
        "---",
        f"# {Path(train.get('out_dir', run_dir)).name}: {type(model).__name__}",
        "",
        f"Pre-trained with fast-electra-ds, method `{config.get('method')}`: {method_summary(config.get('method', ''))}",
        "",
        "```python",
        "from transformers import AutoModel, AutoTokenizer",
        "model, tokenizer = AutoModel.from_pretrained(path), AutoTokenizer.from_pretrained(path)",
        "```",
        "",
        "## Model",
        f"- {type(model).__name__}: layers {hf.num_hidden_layers}, hidden size {hf.hidden_size}, embedding size "
        f"{getattr(hf, 'embedding_size', hf.hidden_size)}, attention heads {hf.num_attention_heads}, intermediate size {hf.intermediate_size}, "
        f"vocabulary {hf.vocab_size}, positions {hf.max_position_embeddings} (the tokenizer's model_max_length)",
        "",
        "## Data",
        f"- prepared data `{data.get('path')}`, tokenizer `{data.get('tokenizer')}`, sequences of {data.get('seq_len')} tokens"
        + (f" (earlier phases, length:until fraction of steps: {', '.join(data['seq_len_schedule'])})" if data.get("seq_len_schedule") else ""),
        "",
        "## Training",
        f"- {step} of {train.get('steps')} optimizer steps (checkpoint `{checkpoint.name}`), seed {train.get('seed')}",
    ]
    if ds:
        micro, accumulation, total = (ds.get(k, 1) for k in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "train_batch_size"))
        lines.append(f"- global batch {total} sequences (micro batch {micro} x accumulation {accumulation} x {total // (micro * accumulation)} ranks), ZeRO stage {ds.get('zero_optimization', {}).get('stage', 0)}, "
                     f"{'bf16' if ds.get('bf16', {}).get('enabled') else 'fp16' if ds.get('fp16', {}).get('enabled') else 'fp32'}")
        params = {k: v for k, v in optimizer.get("params", {}).items() if k in ("lr", "betas", "eps", "weight_decay")}
        lines.append(f"- optimizer {optimizer.get('type')} {json.dumps(params)}; schedule {schedule.get('type')} "
                     f"{json.dumps({k: v for k, v in schedule.get('params', {}).items()})}")
    metrics = final_metrics(run_dir / "metrics.jsonl")
    lines += ["", "## Final metrics", ""]
    if metrics:
        lines += ["| metric | value | step |", "|---|---|---|"]
        lines += [f"| {key} | {value:.6g} | {at} |" for key, (at, value) in metrics.items()]
    else:
        lines.append("(no metrics.jsonl in the run directory)")
    lines += ["", "## Configuration", "", "The run's config.yaml:", "", "```yaml", yaml.safe_dump(config, sort_keys=False).rstrip(), "```", ""]
    return ModelCard("\n".join(lines))
