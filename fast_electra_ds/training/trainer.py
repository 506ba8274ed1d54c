"""The one training loop, around the DeepSpeed engine. It knows nothing of the method: the method
prepares each micro-batch and the engine's module computes the loss."""
from __future__ import annotations

import json
import resource
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import deepspeed
import torch
import torch.distributed as dist

from .. import checkpointing as ckpt
from .compile import compile_blocks
from ..config.run_config import RunConfig, save_config
from ..config.validate import validate_config
from ..data.dataset import micro_batch_positions
from ..data.phases import PhasedData
from ..data.prefetch import Prefetcher
from ..data.tokenizer import load_tokenizer
from ..runtime.device import bind_device
from ..config.ds_config import resolve_ds_config
from ..errors import UserError
from ..metrics.logger import RunLogger, place_monitor_outputs, trim_metrics
from ..metrics.tracker import TrainingMetrics
from ..metrics.validation import Validator
from .divergence import DivergenceGuard, stop_diverged, weights_are_finite
from .loss_scale import end_applied_step, schedule_clock
from ..models.encoder import is_partitioned, local_and_total_numel
from ..runtime.process_group import scheduler_built_quietly
from ..runtime.temp_dirs import clean_orphans
from ..methods import METHODS, Method, StepContext, TokenInfo

RUN_FILES = ("config.yaml", "ds_config.json", "tokens.json", "tokenizer", ckpt.SHAPES, ckpt.HISTORY)
ROLLBACKS = "rollbacks.jsonl"  # one line per train.on_divergence=rollback: where it diverged, why, what was skipped


# --- small helpers -----------------------------------------------------------------------------------

def step_generator(seed: int, step: int, micro: int, rank: int, device: torch.device) -> torch.Generator:
    """Randomness for corruption comes from (seed, step, micro-batch, rank) alone, so a resumed
    run corrupts exactly as an uninterrupted one would."""
    value = (((seed * 1_000_003 + step) * 1_009 + micro) * 131 + rank) % (2**63 - 1)
    return torch.Generator(device=device).manual_seed(value)


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # peak RSS of this rank (Linux: KiB)


def optimizer_numel(optimizer) -> int:
    """Parameters whose fp32 master copy and Adam moments this rank's optimizer holds."""
    for flat_partitions in ("fp32_partitioned_groups_flat", "single_partition_of_fp32_groups"):  # ZeRO-3; ZeRO-1/2
        groups = getattr(optimizer, flat_partitions, None)
        if groups:
            return sum(t.numel() for t in groups)
    inner = getattr(optimizer, "optimizer", optimizer)
    return sum(p.numel() for group in inner.param_groups for p in group["params"])


class StopSignal:
    """SIGUSR1 / SIGTERM (a scheduler's warning before a time limit or pre-emption) ask for a
    checkpoint at the end of the current step and a clean exit."""

    def __init__(self, signals_before_start: list[int] = ()) -> None:
        self.received = False
        for sig in (signal.SIGUSR1, signal.SIGTERM):
            signal.signal(sig, self._handle)
        # Read after installing the handlers: a signal is either in that list or seen by _handle.
        self.received = self.received or bool(signals_before_start)

    def _handle(self, signum, frame) -> None:
        self.received = True

    def agreed(self, device: torch.device, save_due: bool = False) -> tuple[bool, bool]:
        """(stop, save) as every rank agrees: either is true if it is on any rank. One collective
        a step carries both, so a wall-clock rule never splits the ranks."""
        flags = torch.tensor([float(self.received), float(save_due)], device=device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return bool(flags[0].item()), bool(flags[1].item())


class SaveClock:
    """Wall-time checkpoints: due once `minutes` have passed since the last checkpoint (or the
    start of this session); 0 never. Each rank reads its own clock; StopSignal.agreed makes the
    decision the same on all."""

    def __init__(self, minutes: float, clock=time.monotonic) -> None:
        self.seconds, self.clock = minutes * 60, clock
        self.reset()

    def reset(self) -> None:
        self.last = self.clock()

    def due(self) -> bool:
        return self.seconds > 0 and self.clock() - self.last >= self.seconds


@dataclass
class TrainerState:
    step: int = 0
    consumed_samples: int = 0
    method_state: dict[str, Any] | None = None


# --- the run ------------------------------------------------------------------------------------------

class Trainer:
    def __init__(self, config: RunConfig, ds_config: dict[str, Any], resume: bool = False, allow_inexact_resume: bool = False):
        self.config = config
        self.run_dir = Path(config.train.out_dir)
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.device = bind_device()  # train.py bound it before the first collective; the same answer here

        validate_config(config, METHODS)  # train.py did before the process group; a direct caller gets the same checks
        self.tokenizer = load_tokenizer(config.data.tokenizer)
        # One packing of the corpus per length of data.seq_len_schedule; the final one names the vocabulary.
        self.data = PhasedData(config.data.path, config.seq_len_phases(), config.data.val_sequences, tokenizer=self.tokenizer)
        self.dataset = self.data.final
        self.tokens = TokenInfo.of(self.dataset)
        self.ds_config = place_monitor_outputs(resolve_ds_config(ds_config, self.world_size, config, self.device.type == "cuda"), self.run_dir)

        checkpoint, self.changes = None, []
        if resume:
            checkpoint = ckpt.resolve_checkpoint(self.run_dir, all_ranks=True, inexact=allow_inexact_resume)  # every rank verifies its share of the files
            self.changes = ckpt.check_resume(self.run_dir, config.to_dict(), self.tokens.__dict__, self.ds_config)  # before any weight is loaded
            saved_method = json.loads((checkpoint / ckpt.TRAINER_STATE).read_text()).get("method")
            if saved_method != config.method:
                raise UserError(f"checkpoint {checkpoint} was written by method {saved_method}, not {config.method}", f"resume with method={saved_method}, or start a new train.out_dir")
            checkpoint = ckpt.for_world_size(checkpoint, self.world_size, self.ds_config)  # another number of ranks: a universal checkpoint
        elif ckpt.complete_checkpoints(ckpt.checkpoint_root(self.run_dir)):
            raise UserError(f"{self.run_dir} already holds checkpoints", "pass --resume to continue that run, or choose another train.out_dir")

        self.method: Method = METHODS[config.method](config, self.tokens, self.device)
        self.method.setup()  # outside ZeRO: the frozen aux model is whole on every rank
        torch.manual_seed(config.train.seed)  # identical initial weights on every rank and run
        module = self.method.build_model(self.ds_config)
        if config.model.compile:
            compile_blocks(module)  # before initialize: each block one ZeRO-3 leaf, its forward compiled
        with scheduler_built_quietly():
            self.engine, _, _, _ = deepspeed.initialize(model=module, model_parameters=self.method.param_groups(module), config=self.ds_config)
        self.micro_batch = self.engine.train_micro_batch_size_per_gpu()
        self.accumulation = self.engine.gradient_accumulation_steps()
        self.metrics = TrainingMetrics(self.device, self.method.reads_step_metrics, self.tokens.unigram_entropy)
        self.validators = [Validator(phase.dataset, phase.val_indices, self.micro_batch, self.rank, self.world_size, config.train.seed,
                                     self.device, step_generator) for phase in self.data.phases]

        self.state = TrainerState()
        self.rollbacks, self.rolled_back_at_sample = 0, 0
        self.shapes = ckpt.parameter_shapes(self.engine.module)
        if checkpoint is not None:
            ckpt.check_model_shapes(self.run_dir, self.shapes, self.changes)
            saved = ckpt.load_checkpoint(self.engine, checkpoint, inexact=allow_inexact_resume)
            self.state = TrainerState(saved["step"], saved["consumed_samples"], saved.get("method_state"))
            self.method.load_state_dict(self.state.method_state or {})
            self.metrics.load_state_dict(saved.get("metrics_state"))
            self.log(f"resumed from {checkpoint} at step {self.state.step}")
            for note in self.changes:
                self.log(f"resume: {note}")
        self.write_run_files()
        self.write_placement()

    # --- bookkeeping ------------------------------------------------------------------------------
    def log(self, text: str) -> None:
        if getattr(self, "logger", None) is not None:
            self.logger.print(text)
        elif self.rank == 0:
            print(f"[fast-electra] {text}", flush=True)

    def write_run_files(self) -> None:
        """The run directory is self-contained: export needs only it."""
        if self.rank == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.config, self.run_dir / "config.yaml")  # the current config; every session's stays in the history
            ckpt.write_history(self.run_dir, self.config.to_dict(), self.ds_config, self.state.step)
            (self.run_dir / "ds_config.json").write_text(json.dumps(self.ds_config, indent=1))
            (self.run_dir / "tokens.json").write_text(json.dumps(self.tokens.__dict__, indent=1))
            (self.run_dir / ckpt.SHAPES).write_text(json.dumps(self.shapes))
            if not (self.run_dir / "tokenizer").is_dir():
                self.tokenizer.save_pretrained(self.run_dir / "tokenizer")
            self.trim_metrics(self.run_dir / "metrics.jsonl")
            clean_orphans(self.run_dir / "hf", ("export", "old"))  # a final export killed before it finished
        dist.barrier()

    def write_placement(self) -> None:
        """Where this rank's parameters live: the evidence that ZeRO partitions the main model and
        that frozen models stay whole, gradient-free and outside the optimizer."""
        local, total = local_and_total_numel(self.engine.module)
        engine_params = {id(p) for p in self.engine.module.parameters()}
        record = {"rank": self.rank, "world_size": self.world_size, "main_local_params": local, "main_total_params": total,
                  "optimizer_params": optimizer_numel(self.engine.optimizer)}
        for name, model in self.method.frozen_modules().items():
            params = list(model.parameters())
            record[name] = {
                "params": sum(p.numel() for p in params),
                "param_bytes": sum(p.numel() * p.element_size() for p in params),
                "buffer_bytes": sum(b.numel() * b.element_size() for b in model.buffers()),
                "dtypes": sorted({str(p.dtype) for p in params}),
                "requires_grad": any(p.requires_grad for p in params),
                "in_engine": any(id(p) in engine_params for p in params),
                "partitioned": any(is_partitioned(p) for p in params),
                "training_mode": model.training,
            }
        placement_dir = self.run_dir / "placement"
        placement_dir.mkdir(parents=True, exist_ok=True)
        (placement_dir / f"rank{self.rank}.json").write_text(json.dumps(record, indent=1))
        if self.rank == 0:
            frozen = "; ".join(f"{n}: {r['params'] / 1e6:.2f}M params, {r['param_bytes'] / 2**20:.1f} MiB + {r['buffer_bytes'] / 2**10:.1f} KiB buffers, {'/'.join(r['dtypes'])}"
                               for n, r in record.items() if isinstance(r, dict))
            self.log(f"main model: {total / 1e6:.2f}M params, {local / 1e6:.2f}M on this rank" + (f"; {frozen}" if frozen else ""))

    def trim_metrics(self, path: Path) -> None:
        if path.is_file() and (dropped := trim_metrics(path, self.state.step)):
            self.log(f"warning: {path.name}: dropped {dropped} unreadable line(s), as a crash or a full disk leaves them")

    def save(self) -> Path:
        """The loop checked the weights first (a non-finite model is never saved)."""
        state = {"step": self.state.step, "consumed_samples": self.state.consumed_samples,
                 "method": self.config.method, "method_state": self.method.state_dict(),
                 "metrics_state": self.metrics.state_dict()}
        path = ckpt.save_checkpoint(self.engine, self.run_dir, self.state.step, state, self.config.train.keep_last)
        self.log(f"saved checkpoint {path}")
        return path

    def diverged(self, reason: str) -> None:
        found = ckpt.complete_checkpoints(ckpt.checkpoint_root(self.run_dir))
        stop_diverged(self.rank, self.state.step, reason, str(found[-1]) if found else None)

    def roll_back(self, reason: str, guard: DivergenceGuard) -> bool:
        """train.on_divergence=rollback: reload the newest checkpoint and go on past the samples read
        since it (the batches that led to the divergence are not seen again). False: stop instead."""
        cfg = self.config.train
        found = ckpt.complete_checkpoints(ckpt.checkpoint_root(self.run_dir))
        if cfg.on_divergence != "rollback" or not found or self.rollbacks >= cfg.max_rollbacks:
            return False
        self.rollbacks += 1
        diverged_at, read_until = self.state.step, self.state.consumed_samples
        saved = ckpt.load_checkpoint(self.engine, found[-1])
        self.state = TrainerState(saved["step"], read_until, saved.get("method_state"))
        self.method.load_state_dict(self.state.method_state or {})
        self.metrics.load_state_dict(saved.get("metrics_state"))
        self.metrics.discard_window()
        guard.reset()
        self.batches.close()
        self.batches = self.open_batches()
        skipped_from = max(saved["consumed_samples"], self.rolled_back_at_sample)  # an earlier rollback skipped those before
        self.rolled_back_at_sample = read_until
        event = {"diverged_at_step": diverged_at, "reason": reason, "checkpoint": str(found[-1]), "resumed_at_step": saved["step"],
                 "skipped_samples": [skipped_from, read_until], "rollback": self.rollbacks}
        if self.rank == 0:
            self.trim_metrics(self.run_dir / "metrics.jsonl")  # the steps after the checkpoint are trained again
            with (self.run_dir / ROLLBACKS).open("a") as out:
                out.write(json.dumps(event) + "\n")
        self.log(f"warning: training diverged at step {diverged_at}: {reason}; rolled back to {found[-1]} (step {saved['step']}) "
                 f"and skipped the {read_until - skipped_from} samples read since "
                 f"(train.on_divergence=rollback, {self.rollbacks} of train.max_rollbacks={cfg.max_rollbacks}; {ROLLBACKS})")
        return True

    # --- the loop --------------------------------------------------------------------------------
    def train(self, signals_before_start: list[int] = ()) -> dict[str, Any]:
        self.batches = self.open_batches()
        try:
            return self.run_steps(signals_before_start)
        finally:
            self.batches.close()  # its thread ends before the rank does, on every path

    def open_batches(self) -> Prefetcher:
        """This rank's batches from the run's position (step, consumed_samples), read ahead."""
        return Prefetcher(self.data.batches(self.micro_batch, self.accumulation, self.rank, self.world_size, self.config.train.seed,
                                            self.state.step, self.state.consumed_samples), self.device)

    def run_steps(self, signals_before_start: list[int]) -> dict[str, Any]:
        cfg = self.config.train
        stop = StopSignal(signals_before_start)
        guard = DivergenceGuard(self.device, cfg.skipped_window, cfg.max_skipped_share, loss_scaled=self.engine.fp16_enabled())
        save_clock = SaveClock(cfg.save_every_minutes)
        last_step = cfg.steps if not cfg.stop_after else min(cfg.steps, self.state.step + cfg.stop_after)
        logger = RunLogger(self.run_dir, self.rank, self.engine.monitor, cfg.steps, self.state.step, cfg.progress)
        self.logger = logger
        stopped_by_signal = False
        window_started, window_steps = time.perf_counter(), 0
        self.engine.train()
        phase = self.data.phases[self.data.index(self.state.step)]
        self.log(f"method {self.config.method}: {cfg.steps} steps, global batch {self.global_batch} x "
                 f"{phase.seq_len} tokens on {self.world_size} ranks ({self.device.type}); "
                 f"{len(phase.train)} training and {self.validators[self.data.index(self.state.step)].sequences} validation sequences")
        if len(self.data.phases) > 1:
            self.log("sequence length " + ", then ".join(f"{p.seq_len} for steps {p.start + 1}-{p.end}" for p in self.data.phases)
                     + f"; the global batch stays {self.global_batch} sequences, so tokens per step follow the length")
        self.log(cfg.safety_summary() + ("" if self.validators[-1] else "; validation off (data.val_sequences=0)"))
        while self.state.step < last_step:
            if self.state.step and self.data.seq_len(self.state.step) != self.data.seq_len(self.state.step - 1):
                self.log_switch()
            ctx = StepContext(*schedule_clock(self.engine, self.state.step, cfg.steps), torch.Generator())  # fp16: skipped steps don't count
            for micro in range(self.accumulation):
                batch = next(self.batches)  # on the device, read ahead in a background thread
                ctx.generator = step_generator(cfg.seed, self.state.step, micro, self.rank, self.device)
                ctx.positions = micro_batch_positions(self.state.consumed_samples, micro, self.micro_batch, self.rank, self.world_size)
                inputs, outside_metrics = self.method.prepare_batch(batch, ctx)
                loss, metrics = self.engine(**inputs)
                guard.see_loss(loss)
                self.engine.backward(loss)
                self.method.before_optimizer_step(self.engine.optimizer.param_groups)
                self.engine.step()
                self.metrics.add({**metrics, **outside_metrics})
            self.state.step += 1
            self.state.consumed_samples = self.batches.consumed_samples
            window_steps += 1
            divergence = guard.end_step(end_applied_step(self.engine, self.method, ctx, self.metrics.step_values()))
            stopping, time_to_save = stop.agreed(self.device, save_clock.due())
            saving = (stopping or time_to_save or self.state.step == last_step
                      or (cfg.save_every and self.state.step % cfg.save_every == 0))
            if not divergence and saving and not weights_are_finite(self.engine.module, self.device):
                divergence = "the model's weights are not finite"  # never saved, never `latest`, never rotates a good one away
            if divergence:
                if self.roll_back(divergence, guard):
                    window_started, window_steps = time.perf_counter(), 0
                    continue
                self.diverged(divergence)
            logger.advance(self.state.step)
            evaluating = bool(self.validator()) and (self.state.step == cfg.steps or (cfg.eval_every and self.state.step % cfg.eval_every == 0))
            # A log window also ends at every checkpoint, so a resumed run logs the same windows, and
            # at a change of sequence length, so a window's tokens and FLOPs are of one length.
            switching = self.data.seq_len(self.state.step) != self.data.seq_len(self.state.step - 1)
            if self.state.step % cfg.log_every == 0 or saving or evaluating or switching:
                record = self.window_record(ctx, (time.perf_counter() - window_started) / window_steps)
                logger.record(self.state.step, self.state.consumed_samples, {**record, **(self.validate() if evaluating else {})})
                window_started, window_steps = time.perf_counter(), 0
            if stopping:
                stopped_by_signal = True
                self.log(f"stop signal received: checkpointing at step {self.state.step} and exiting")
                break
            if saving and self.state.step < last_step:
                self.save()
                save_clock.reset()
        final_checkpoint = self.save()
        logger.close()
        finished = self.state.step >= cfg.steps
        if finished:
            self.save_probe(final_checkpoint)
        return {"step": self.state.step, "finished": finished, "stopped_by_signal": stopped_by_signal, "checkpoint": str(final_checkpoint),
                **({"rollbacks": self.rollbacks} if self.rollbacks else {})}

    def window_record(self, ctx: StepContext, step_time: float) -> dict[str, Any]:
        """The log window's metric averages (one all-reduce), the method's own values and speed."""
        record = self.metrics.window_values()
        record.update(self.method.logged_values(ctx))
        sequences, seq_len = self.global_batch, self.data.seq_len(self.state.step - 1)  # the window's steps are of one length
        flops = self.method.flops_per_sequence(seq_len) * sequences
        record.update(lr=self.engine.get_lr()[0], step_time_s=step_time, seq_len=seq_len, tokens_per_s=sequences * seq_len / step_time,
                      tflops_per_s=flops / step_time / 1e12, peak_memory_gb=self.peak_memory() / 2**30)
        return record

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.accumulation * self.world_size

    def validator(self) -> Validator:
        """Validation at the length of the last step done (held-out text is the same at every length)."""
        return self.validators[self.data.index(max(self.state.step - 1, 0))]

    def log_switch(self) -> None:
        before, after = self.data.seq_len(self.state.step - 1), self.data.seq_len(self.state.step)
        phase = self.data.phases[self.data.index(self.state.step)]
        self.log(f"step {self.state.step + 1}: sequence length {before} -> {after}; the global batch stays {self.global_batch} sequences, "
                 f"{self.global_batch * before} -> {self.global_batch * after} tokens per step; {len(phase.train)} training sequences")

    def validate(self) -> dict[str, float]:
        cfg = self.config.train
        progress = self.state.step / cfg.steps
        return self.validator().evaluate(self.engine, self.method, lambda generator, keys: StepContext(self.state.step, progress, generator, keys),
                                       self.metrics.detector, self.metrics.unigram_entropy)

    def peak_memory(self) -> int:
        peak = torch.tensor([float(peak_memory_bytes(self.device))], device=self.device)
        dist.all_reduce(peak, op=dist.ReduceOp.MAX)
        return int(peak.item())

    @torch.no_grad()
    def save_probe(self, checkpoint: Path) -> None:
        """Logits of the engine's exported models on one fixed sequence, so export can prove it
        reproduces the trained engine."""
        self.engine.eval()
        sample = self.dataset[0]
        input_ids, attention_mask = sample["input_ids"][None].to(self.device), sample["attention_mask"][None].to(self.device)
        probe = {"input_ids": input_ids.cpu(), "attention_mask": attention_mask.cpu(), "logits": {}}
        for name, model in self.method.exports(self.engine.module).items():
            probe["logits"][name] = model(input_ids=input_ids, attention_mask=attention_mask).logits.float().cpu()
        if self.rank == 0:
            torch.save(probe, checkpoint / "probe.pt")
        dist.barrier()
        self.engine.train()

