"""ELECTRA's fine-tuning recipe per model size, and `--set key=value` overrides.

Sources, per number:
- learning rate 3e-4 / 1e-4 / 5e-5 (Small / Base / Large), layer-wise LR decay 0.8 / 0.8 / 0.9,
  linear warmup over the first 10% of steps then linear decay to 0, Adam eps 1e-6, batch size 32,
  3 epochs except 10 for RTE and STS-B: ELECTRA paper (Clark et al., ICLR 2020), Appendix, Table 7
  "Fine-tune hyperparameters".
- weight decay 0.01 (LayerNorm and biases excluded), gradient clipping at global norm 1.0 and
  max_seq_length 128: ELECTRA's released code (configure_finetuning.py `weight_decay_rate=0.01`,
  `max_seq_length=128`; model/optimization.py `clip_by_global_norm(..., 1.0)`). Table 7 lists
  weight decay 0; we follow the code, which produced the published numbers.
- double_unordered: ELECTRA's code (configure_finetuning.py `double_unordered=True`) adds each
  MRPC and STS-B training pair a second time with the sentences swapped, since their order carries
  no meaning (finetune/classification/classification_tasks.py, classes MRPC and STS).
- `auto` picks the size by hidden width: ELECTRA-Small has 256, Base 768, Large 1024 (Table 6).
- pooling `cls` (ELECTRA's: the task head reads the first token's final state) or `mean` (ours: it reads
  the mean of the final states over the input's tokens, padding excluded). RTD never trains [CLS]; at the
  study's scale the discriminators' [CLS] features probe no better than random init's while their
  mean-pooled ones probe best (benchmarks/results/study/probe.md). A model's config can name its own
  default: `fast_electra_pooling`, which a model fine-tuned with pooling=mean is saved with.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from ..errors import UserError


@dataclass(frozen=True)
class Recipe:
    lr: float = 1e-4
    epochs: float = 3.0
    batch_size: int = 32
    max_seq_len: int = 128
    layer_decay: float = 0.8
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    adam_eps: float = 1e-6
    clip_norm: float = 1.0  # 0 turns clipping off
    eval_batch_size: int = 128
    double_unordered: int = 1  # 1: MRPC and STS-B also train on each pair in swapped order
    pooling: str = "cls"  # what the task head reads: the first token's state, or the mean over tokens

    def to_dict(self) -> dict:
        return asdict(self)


RECIPES = {
    "small": Recipe(lr=3e-4, layer_decay=0.8),
    "base": Recipe(lr=1e-4, layer_decay=0.8),
    "large": Recipe(lr=5e-5, layer_decay=0.9),
}
POOLINGS = ("cls", "mean")
TEN_EPOCH_TASKS = ("rte", "stsb")  # ELECTRA Table 7: "10 for RTE and STS, 3 for other tasks"


def size_for_hidden(hidden_size: int) -> str:
    """ELECTRA-Small is 256 wide, Base 768, Large 1024: the nearest size at or above the width."""
    if hidden_size <= 256:
        return "small"
    if hidden_size <= 768:
        return "base"
    return "large"


def make_recipe(name: str, hidden_size: int, task_name: str, overrides: dict | list | None = None,
                model_pooling: str | None = None) -> Recipe:
    """The recipe `name` (small, base, large or auto: by `hidden_size`) for `task_name`, with the model's
    own pooling (its config's `fast_electra_pooling`) when it names one, then overrides (a dict, or a
    list of "key=value" strings as given to --set)."""
    if name == "auto":
        name = size_for_hidden(hidden_size)
    if name not in RECIPES:
        raise UserError(f"unknown recipe {name!r}", f"use one of auto, {', '.join(RECIPES)}")
    recipe = RECIPES[name]
    if model_pooling is not None:
        if model_pooling not in POOLINGS:
            raise UserError(f"the model's config names pooling {model_pooling!r}, which is not one of {', '.join(POOLINGS)}",
                            "set fast_electra_pooling to cls or mean in its config.json, or pass --set pooling=cls")
        recipe = replace(recipe, pooling=model_pooling)
    if task_name in TEN_EPOCH_TASKS:
        recipe = replace(recipe, epochs=10.0)
    return apply_overrides(recipe, overrides)


def parse_overrides(items: list[str] | None) -> dict[str, str]:
    parsed = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {item!r} is not key=value", "e.g. --set lr=1e-4 epochs=3")
        parsed[key.strip()] = value.strip()
    return parsed


def apply_overrides(recipe: Recipe, overrides: dict | list | None) -> Recipe:
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    types = {f.name: f.type for f in fields(Recipe)}
    changes = {}
    for key, value in (overrides or {}).items():
        if key not in types:
            raise UserError(f"unknown recipe key {key!r}", f"valid keys: {', '.join(types)}")
        if types[key] == "str":
            changes[key] = str(value)
            continue
        convert = int if types[key] == "int" else float
        try:
            changes[key] = convert(value)
        except (TypeError, ValueError):
            raise UserError(f"recipe key {key}={value!r} is not a{'n integer' if convert is int else ' number'}",
                            f"e.g. --set {key}={getattr(recipe, key)}") from None
    recipe = replace(recipe, **changes)
    positive = ("lr", "epochs", "batch_size", "max_seq_len", "eval_batch_size")
    for key in positive:
        if getattr(recipe, key) <= 0:
            raise UserError(f"recipe key {key} must be positive (got {getattr(recipe, key)})", f"e.g. --set {key}={getattr(RECIPES['base'], key)}")
    if not 0 < recipe.layer_decay <= 1 or not 0 <= recipe.warmup_fraction < 1 or recipe.weight_decay < 0:
        raise UserError("recipe: layer_decay must be in (0, 1], warmup_fraction in [0, 1), weight_decay >= 0",
                        "e.g. --set layer_decay=0.8 warmup_fraction=0.1 weight_decay=0.01")
    if recipe.pooling not in POOLINGS:
        raise UserError(f"recipe: pooling {recipe.pooling!r} is not one of {', '.join(POOLINGS)}", "e.g. --set pooling=mean")
    return recipe
