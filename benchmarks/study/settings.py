"""What one study is: its settings (the command line's choices), the models, tasks and learning-rate
factor it compares, and where its preset and peak learning rate come from."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fast_electra_ds.config.run_config import RunConfig, load_config
from fast_electra_ds.errors import UserError


ROOT = Path(__file__).resolve().parents[2]
METHODS = ("mlm", "electra", "fast")
RANDOM_INIT = "random-init"  # the no-pre-training baseline: the same main model, untrained
TASK = "sst2"  # Rotten Tomatoes in SST-2's layout
TASKS = (TASK, "convention")  # and the party of 2012 convention speech paragraphs (finetune/convention.py)
ROBUSTNESS = ("electra", "fast")  # also pre-trained at LR_FACTOR x the peak learning rate
LR_FACTOR = 3.0


@dataclass
class Settings:
    work: Path
    preset: str
    overrides: list[str]
    ranks: int
    micro_batch: int
    vocab_size: int
    aux_steps: int
    main_steps: int
    budget: float | None
    methods: list[str]
    seeds: list[int]
    corpus: list[str] | None
    pydoc: bool
    recipe: str
    finetune_overrides: list[str]
    finetune_train_limit: int | None
    lr: float | None = None  # peak pre-training learning rate; None: ds_configs/zero3.json's
    evaluations: int = 12  # validations (and checkpoints) per pre-training run: the curves
    tasks: tuple[str, ...] = TASKS
    robustness: bool = False  # also electra and fast at LR_FACTOR x the peak lr
    report_only: bool = False  # build the table from the finished stages, run nothing
    jobs: int = 1  # fine-tuning runs at once
    precision: str = "bf16"  # of the pre-training runs' DeepSpeed engine (and the frozen aux): bf16 or fp32

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.ranks

    @property
    def tokens_per_step(self) -> int:
        """Main-model training tokens per optimizer step: the curves' x axis."""
        return self.global_batch * self.run_config().data.seq_len

    def run_config(self, extra: list[str] | None = None) -> RunConfig:
        return load_config([str(preset_path(self.preset))], self.overrides + (extra or []))


def preset_path(preset: str) -> Path:
    path = Path(preset)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise UserError(f"config file {path} not found", "pass --preset with a name in configs/ or a YAML path")
        return path
    path = ROOT / "configs" / f"{preset}.yaml"
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in (ROOT / "configs").glob("*.yaml")))
        raise UserError(f"unknown preset {preset!r}", f"use one of {names} or a YAML path")
    return path


def pretraining_lr(settings: Settings) -> float:
    return settings.lr if settings.lr is not None else json.loads((ROOT / "ds_configs" / "zero3.json").read_text())["optimizer"]["params"]["lr"]
