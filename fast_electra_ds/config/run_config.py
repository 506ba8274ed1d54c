"""The project's run configuration: dataclasses, YAML presets, command-line overrides.

Ownership rule: the DeepSpeed JSON owns precision, ZeRO stage, the optimizer and scheduler types and
the batch sizes; this config owns the model, the method, the curriculum, the data and the run layout.
The `optim` section overrides the JSON's hyperparameters from the command line (`optim.lr=3e-4`);
ds_config.py writes them into the JSON before deepspeed.initialize.
Unknown keys are errors that name the key and list the valid ones.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_origin, get_type_hints

import yaml

from ..errors import UserError
from .seq_len import Phase, seq_len_phases
from .shipped import find_config_file, shipped_names
from .values import check_values

# Encoder sizes from the ELECTRA paper (Clark et al. 2020, Table 6 / slides' size table); "tiny" is ours,
# for tests. embedding_size < hidden_size is ELECTRA-Small's factorised embedding.
MODEL_PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(num_hidden_layers=2, hidden_size=64, embedding_size=64, num_attention_heads=2, intermediate_size=128),
    "small": dict(num_hidden_layers=12, hidden_size=256, embedding_size=128, num_attention_heads=4, intermediate_size=1024),
    "base": dict(num_hidden_layers=12, hidden_size=768, embedding_size=768, num_attention_heads=12, intermediate_size=3072),
    "large": dict(num_hidden_layers=24, hidden_size=1024, embedding_size=1024, num_attention_heads=16, intermediate_size=4096),
}


@dataclass
class ModelConfig:
    """The main model (discriminator / MLM encoder). Explicit sizes override the preset's."""

    preset: str = "small"
    num_hidden_layers: int | None = None
    hidden_size: int | None = None
    embedding_size: int | None = None
    num_attention_heads: int | None = None
    intermediate_size: int | None = None
    max_position_embeddings: int = 512
    dropout: float = 0.1
    attn_implementation: str = "sdpa"  # torch SDPA: flash / memory-efficient kernels on GPU, fused C++ on CPU
    compile: bool = False  # torch.compile the main model through DeepSpeed's engine.compile()
    # A vocabulary head over all positions of the discriminator (methods fast, electra, electra-15),
    # trained with COCO-LM/METRO's corrective-LM loss: main loss L_RTD + corrective_lm_weight * L_CLM
    # (1/50: COCO-LM's ratio). See models/corrective_lm.py.
    corrective_lm: bool = False
    corrective_lm_weight: float = 0.02

    def sizes(self) -> dict[str, int]:
        if self.preset not in MODEL_PRESETS:
            raise UserError(f"unknown model preset {self.preset!r}", f"use one of {', '.join(MODEL_PRESETS)}")
        sizes = dict(MODEL_PRESETS[self.preset])
        for key in sizes:
            if getattr(self, key) is not None:
                sizes[key] = getattr(self, key)
        return sizes


@dataclass
class AuxConfig:
    """The auxiliary masked-LM.

    For method `fast`, `path` names a local Hugging Face masked-LM directory (e.g. the export of an
    `aux-mlm` run). For method `aux-mlm`, the fractions size the model trained in stage 1 relative to
    `model`: Fast-ELECTRA/METRO use a shallower full-width model (depth 1/3: 4 of 12 layers for Base);
    ELECTRA's generator is full-depth and narrower (hidden 1/4 to 1/3).
    """

    path: str | None = None
    replacements: str | None = None  # method fast: a directory of `fast-electra replacements`; no aux runs (docs/offline-replacements.md)
    depth_fraction: float = 1 / 3
    hidden_fraction: float = 1.0
    dtype: str = "auto"  # auto: bf16, or fp16 on a GPU without bf16; or one of bf16, fp16, fp32


@dataclass
class GeneratorConfig:
    """The jointly trained generator of the `electra`, `electra-15`, `replace-mlm` and `all-tokens-mlm`
    methods (ELECTRA, Clark et al. 2020). It shares the main model's embeddings module (token,
    position and token-type embeddings and their LayerNorm: one set of tensors) and ties its output
    layer to the shared word embeddings; `embeddings_project` maps the shared embedding width to a
    narrower generator. Its size is a fraction of the main model's: ELECTRA uses a full-depth generator
    1/4 to 1/3 as wide (hidden_fraction); COCO-LM-style generators are shallower and full width
    (depth_fraction < 1, hidden_fraction = 1). Replacements are drawn by Gumbel-max at temperature 1
    from the generator's detached logits. loss = gen_weight * L_MLM + disc_weight * L_RTD (ELECTRA:
    1 and 50); an MLM-type main objective (replace-mlm, all-tokens-mlm) has weight 1.
    `share_embeddings: false` gives the generator embeddings and an output layer of its own (an
    ablation: the main model then gets no MLM gradient through its embeddings)."""

    hidden_fraction: float = 0.25
    depth_fraction: float = 1.0
    gen_weight: float = 1.0
    disc_weight: float = 50.0
    share_embeddings: bool = True


@dataclass
class MaskingConfig:
    """ELECTRA's official corruption rates (pretrain_helpers.mask): 15% of tokens selected, of which
    85% become [MASK] and 15% stay as they are; no random tokens."""

    mask_prob: float = 0.15
    mask_token_prob: float = 0.85
    random_token_prob: float = 0.0


CURRICULUM_KINDS = ("exp", "target")


@dataclass
class CurriculumConfig:
    """Fast-ELECTRA's sampling temperature over training, u = fraction of training done
    (methods/curriculum.py). `kind`:
    - `target` (the default): per micro-batch, the T at which the aux's cross-entropy of the original
      tokens at the selected positions equals a target that falls linearly from the corpus's unigram
      entropy at u = 0 to the aux's own (T = 1) cross-entropy at u = `span`; T = 1 from there on. span
      0.5: where the study's jointly trained ELECTRA generator came within 0.1 nats of its final loss.
      t0 and tau are unused. Chosen on evidence: in the fidelity study (benchmarks/results/study/
      fidelity-fp32.md) it learned more context than `exp` and than electra at equal main-model FLOPs.
    - `exp`: T(u) = 1 + (T0 - 1) * exp(-u / tau), the poster's formula (it gives no values; T0 = 2,
      tau = 0.1 bring T within 1% of 1 by u = 0.46). The default up to 0.1.0; it anneals before a small
      discriminator has learned any context."""

    kind: str = "target"
    t0: float = 2.0
    tau: float = 0.1
    span: float = 0.5

    def check(self) -> None:
        """One line for a value no curriculum can use (checked at load and where a curriculum is built)."""
        if self.kind not in CURRICULUM_KINDS:
            raise UserError(f"unknown curriculum.kind {self.kind!r}", f"use one of {', '.join(CURRICULUM_KINDS)}")
        if not self.span > 0:  # NaN too
            raise UserError(f"curriculum.span must be positive, got {self.span}", "give the fraction of training over which the target falls to the aux's own loss, e.g. curriculum.span=0.5")
        if not self.t0 > 0:
            raise UserError(f"curriculum.t0 must be positive, got {self.t0}", "give a start temperature, e.g. curriculum.t0=2")


@dataclass
class EmbGenConfig:
    """Method `emb-gen` (Kang et al., "Generator Replacement", Table 1 rows Emb-Gen and Emb-Gen
    (Pre-trained)): each selected token is replaced by one of its `k` nearest neighbours (L2) in the
    discriminator's input word-embedding table, chosen uniformly; the paper gives no k, 10 is ours.
    `pull_weight` weighs the extra loss, the mean squared L2 distance between original and replacement
    embeddings (the paper adds it "to offer stability" with no weight; 1.0 is ours, 0 disables it).
    `refresh_every`: 1 searches the current table every step (exact; only the step's selected ids);
    N > 1 computes a whole-vocabulary [V, k] neighbour table every N steps and reuses it in between.
    `embeddings_from`: a local Hugging Face model directory whose word embeddings initialise the
    discriminator's (same vocabulary and embedding size). `search_table`: `current` searches the
    training table (the paper: the discriminator's own embeddings); `frozen` searches the table loaded
    from `embeddings_from` once, as it was (neighbours computed once)."""

    k: int = 10
    pull_weight: float = 1.0
    refresh_every: int = 1
    embeddings_from: str | None = None
    search_table: str = "current"


@dataclass
class EarlyExitConfig:
    """Methods `adaptive-exit` and `early-exit-disc` (Kang et al., KAIST, "Adaptive Early Exit",
    Table 1 rows Adaptive Early-Exit (Gen) and Early-Exit (Disc)). Lists are YAML lists or `a,b,c`
    on the command line.

    adaptive-exit: the jointly trained generator (sized by `generator.*`) has an MLM exit after each
    layer in `exits` (the paper: 3, 6, 9, 12 of 12). Exit i's MLM loss weighs
    `exit_loss_weights[i]` / the sum over the exits that ran (the paper's "more weight to upper
    layers", no values given: 1, 2, 3, 4 is ours). One exit per step is drawn with probabilities P,
    starting at `initial_p` (the paper: 0.1, 0.2, 0.3, 0.4); every `window` steps (the paper: 100)
    P <- Softmax(P + alpha * clip(acc_now - acc_prev, -1, 1) * [0, 1, ..., n-1]). The paper gives no
    alpha; 0.1 is the value that best reproduces its worked example (methods/adaptive_exit.py).

    early-exit-disc: the discriminator is split into sections ending after the layers in `sections`
    (the paper: 3, 6, 9, 12), each with an RTD head; every `window` steps the forward stops, for the
    next window, at the lowest section whose RTD accuracy exceeds the mean of the section accuracies."""

    exits: list[int] = field(default_factory=lambda: [3, 6, 9, 12])
    exit_loss_weights: list[float] = field(default_factory=lambda: [1.0, 2.0, 3.0, 4.0])
    initial_p: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.3, 0.4])
    alpha: float = 0.1
    window: int = 100
    sections: list[int] = field(default_factory=lambda: [3, 6, 9, 12])


@dataclass
class DataConfig:
    path: str = ""  # a directory written by `fast-electra prepare`, or Megatron/NeMo .bin/.idx prefixes, comma-separated (data/indexed.py), or a weighted blend "0.3 A 0.7 B" (data/blend.py)
    tokenizer: str = ""  # the tokenizer directory the shards were made with
    seq_len: int = 128  # with seq_len_schedule: the last phase's length
    # Earlier phases at other lengths, `SEQ_LEN:UNTIL` (UNTIL a fraction of train.steps), e.g. [128:0.9]
    # with seq_len 512: BERT's 90% of steps at 128, then 512. Empty: one phase. See config/seq_len.py.
    seq_len_schedule: list[str] = field(default_factory=list)
    # Held-out packed sequences for validation (taken out of training): at most 5% of the data set,
    # spread over it in 8 blocks; 0 turns validation off. See data/dataset.py validation_split.
    val_sequences: int = 256
    # Corruption's random draws: `step` keyed by (seed, step, micro-batch, rank); `sample` by (seed, the
    # sample's position in the training stream), the same on any world size (methods/corruption_rng.py).
    corruption_rng: str = "step"


@dataclass
class TrainConfig:
    """The run's layout and safety net. By default a run checkpoints every 1000 steps or every 30
    minutes of wall time, whichever comes first, keeps the newest 2, and validates every 1000 steps:
    a crash loses at most 30 minutes, as HF Trainer's save-every-500-steps default intends."""

    out_dir: str = "runs/default"
    steps: int = 100  # optimizer steps
    seed: int = 1234
    log_every: int = 1
    # Checkpoints: every `save_every` steps or every `save_every_minutes` of wall time, whichever
    # comes first, and always at the end (0 turns either rule off); the newest `keep_last` are kept.
    save_every: int = 1000
    save_every_minutes: float = 30.0
    keep_last: int = 2
    eval_every: int = 1000  # validation every N steps (metrics val_*); always at the last step; 0: only there
    progress: str = "auto"  # console: "bar" (tqdm), "lines" (one line per log step), "auto" (bar on a terminal)
    stop_after: int = 0  # stop (with a checkpoint) after this many steps this session; 0: run to `steps`
    export: bool = True  # write <out_dir>/hf at the end
    fused_adam: str = "auto"  # auto: torch's fused AdamW on CUDA (DeepSpeed's FusedAdam if prebuilt), torch's Adam on CPU; "true": DeepSpeed's FusedAdam; "false"
    # The divergence guard (training/divergence.py): more fp16-overflow-skipped steps than this share of
    # the last `skipped_window` steps stops the run; 1 never stops on skips (a non-finite loss still does).
    max_skipped_share: float = 0.5
    skipped_window: int = 20
    # A diverged run "stop"s (exit 4, checkpoints untouched) or "rollback"s: reloads its newest checkpoint and
    # goes on past the samples read since, as large-scale trainers do after a loss spike; at most
    # `max_rollbacks` times in one session, then it stops.
    on_divergence: str = "stop"
    max_rollbacks: int = 3
    # How long a rank waits in one collective before the job fails (a hung or lost peer). DeepSpeed's own
    # default is 10 minutes. The final export is not bounded by it: the other ranks wait for it through the store.
    collective_timeout_minutes: float = 30.0
    # No finished step for this long ends the job with one line naming the stalled rank(s) and a stack
    # dump per rank (runtime/watchdog.py); shorter than the collective timeout, longer than the slowest
    # validation or checkpoint. 0: off.
    stall_minutes: float = 15.0

    def safety_summary(self) -> str:
        """How often the run checkpoints and validates, in words (the run's start line and `--help`)."""
        rules = [f"every {self.save_every} steps"] if self.save_every else []
        rules += [f"every {self.save_every_minutes:g} minutes of wall time"] if self.save_every_minutes else []
        saves = (" or ".join(rules) + ", whichever comes first, and " if len(rules) == 2 else
                 rules[0] + " and " if rules else "") + "at the end"
        kept = f"the newest {self.keep_last} kept" if self.keep_last > 0 else "all kept"
        checks = f"every {self.eval_every} steps and at the last step" if self.eval_every else "at the last step"
        return f"checkpoints {saves} ({kept}); validation {checks}"


@dataclass
class OptimConfig:
    """Optimizer, schedule and batch hyperparameters, written into the DeepSpeed JSON before
    initialize (ds_config.resolve_ds_config). None keeps the JSON's value. The optimizer's lr is the
    one peak learning rate: the scheduler's warmup_max_lr follows it. Warmup: `warmup_steps`, or
    `warmup_ratio` of train.steps; with neither, a JSON `"warmup_num_steps": "auto"` is 10%."""

    lr: float | None = None  # optimizer.params.lr (the peak of the warmup)
    warmup_ratio: float | None = None
    warmup_steps: int | None = None
    min_lr: float | None = None  # scheduler warmup_min_lr: where the warmup starts
    weight_decay: float | None = None
    betas: list[float] | None = None  # `0.9,0.98` on the command line
    eps: float | None = None
    micro_batch: int | None = None  # train_micro_batch_size_per_gpu
    grad_accum: int | None = None  # gradient_accumulation_steps
    global_batch: int | None = None  # train_batch_size = micro x accumulation x world size


@dataclass
class RunConfig:
    method: str = "fast"
    model: ModelConfig = field(default_factory=ModelConfig)
    aux: AuxConfig = field(default_factory=AuxConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    emb_gen: EmbGenConfig = field(default_factory=EmbGenConfig)
    early_exit: EarlyExitConfig = field(default_factory=EarlyExitConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def seq_len_phases(self) -> list[Phase]:
        return seq_len_phases(self.data.seq_len_schedule, self.data.seq_len, self.train.steps)


def _apply(obj: Any, values: dict[str, Any], where: str) -> None:
    hints = get_type_hints(type(obj))
    valid = [f.name for f in fields(obj)]
    for key, value in values.items():
        if key not in valid:
            name = f"{where}.{key}" if where else key
            raise UserError(f"unknown config key {name!r}", f"valid keys{' in ' + where if where else ''}: {', '.join(valid)}")
        current = getattr(obj, key)
        path = f"{where}.{key}" if where else key
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise UserError(f"config key {path!r} must be a mapping", f"give its fields: {', '.join(f.name for f in fields(current))}")
            _apply(current, value, path)
        else:
            setattr(obj, key, _coerce(value, hints[key], path))


def _coerce(value: Any, hint: Any, path: str) -> Any:
    optional = type(None) in getattr(hint, "__args__", ())
    if optional and (value is None or (isinstance(value, str) and value.lower() in ("null", "none", "~"))):
        return None
    if optional and get_origin(hint) is not list:  # `list[float] | None`: the list inside
        lists = [t for t in hint.__args__ if get_origin(t) is list]
        hint = lists[0] if lists else hint
    if get_origin(hint) is list:
        items = value.split(",") if isinstance(value, str) else value  # `a,b,c` from the command line
        if not isinstance(items, (list, tuple)):
            raise UserError(f"config key {path!r} has value {value!r}, not a list", "give a YAML list or comma-separated values, e.g. 3,6,9,12")
        return [_coerce(item.strip() if isinstance(item, str) else item, hint.__args__[0], f"{path}[{i}]") for i, item in enumerate(items)]
    kinds = [t for t in getattr(hint, "__args__", (hint,)) if t is not type(None)]
    kind = kinds[0]
    try:
        if kind is bool:
            if isinstance(value, str):
                if value.lower() in ("true", "1", "yes", "on"):
                    return True
                if value.lower() in ("false", "0", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        return kind(value)
    except (TypeError, ValueError):
        raise UserError(f"config key {path!r} has value {value!r}, not a {kind.__name__}", f"give a {kind.__name__}") from None


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise UserError(f"override {text!r} is not of the form section.key=value", "e.g. train.steps=200")
    key, raw = text.split("=", 1)
    # Kept as text and converted by the field's type: YAML would turn out_dir=off into False.
    return key.strip().split("."), raw


def load_config(paths: list[str] | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Merge YAML files in order, then `section.key=value` overrides."""
    config = RunConfig()
    for path in paths or []:
        p = find_config_file(path, "configs", (".yaml", ".yml"))
        if p is None:
            raise UserError(f"config file {path} not found (neither here nor among the shipped configs: {', '.join(shipped_names('configs', '.yaml'))})",
                            "pass an existing YAML file or a shipped name, e.g. --config tiny.yaml")
        try:
            values = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as err:
            raise UserError(f"config file {path} is not valid YAML ({str(err).splitlines()[0]})", "fix the syntax") from None
        if not isinstance(values, dict):
            raise UserError(f"config file {path} must hold a mapping of sections", "see configs/tiny.yaml")
        _apply(config, values, "")
    for text in overrides or []:
        keys, value = _parse_override(text)
        nested: Any = value
        for key in reversed(keys):
            nested = {key: nested}
        _apply(config, nested, "")
    check_values(config)
    return config


def save_config(config: RunConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


def load_ds_config(path: str) -> dict[str, Any]:
    """A JSON file, or a bare name (`zero3.json`, `zero3`) of the shipped ds_configs; a local file wins."""
    p = find_config_file(path, "ds_configs", (".json",))
    if p is None:
        raise UserError(f"DeepSpeed config {path} not found (neither here nor among the shipped ds_configs: {', '.join(shipped_names('ds_configs', '.json'))})",
                        "pass a JSON file or a shipped name, e.g. --ds_config zero3.json")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"DeepSpeed config {path} is not valid JSON ({err.msg} at line {err.lineno})", "fix the JSON") from None
