r"""`fast-electra replacements`: Fast-ELECTRA's replacements made ahead of time, so that training runs
no auxiliary model (docs/offline-replacements.md). It takes the training run's own arguments, with
aux.replacements=DIR naming the output:

    deepspeed --num_gpus 8 --module fast_electra_ds.replacements --ds_config zero3 --config base \
        method=fast aux.path=runs/aux/hf data.corruption_rng=sample aux.replacements=repl ... --train-ranks 64

and runs the frozen aux over the run's planned sample order (every step's global batch, as the
training's micro-batches), exactly as the online path does (FastElectra.propose), writing per sample
the selected positions and the sampled ids (data/replacements.py). Data-parallel: rank r of R makes
shards r, r + R, ...; a shard already written is skipped, so a killed pass continues. One process
without a launcher: `fast-electra replacements ...`. --train-ranks: the training's world size, which
fixes its global batch when the DeepSpeed JSON gives only a micro batch (default: this job's).
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

from .errors import UserError, run_guarded

SHARD_SAMPLES = 1 << 16  # samples per shard (rounded to whole steps): a few MB each at 128 tokens
PROGRESS_EVERY_S = 30.0


def parse_args(argv: list[str], prog: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ds_config", "--deepspeed_config", dest="ds_config", required=True, help="the training's DeepSpeed JSON (its batch sizes)")
    parser.add_argument("--config", action="append", default=[], help="the training's YAML preset(s)")
    parser.add_argument("--train-ranks", type=int, default=None, help="the training's world size (default: this job's)")
    parser.add_argument("--shard-steps", type=int, default=None, help=f"steps per shard (default: about {SHARD_SAMPLES} samples)")
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # set by the deepspeed launcher
    parser.add_argument("overrides", nargs="*", help="the training's section.key=value overrides, with aux.replacements=DIR")
    return parser.parse_intermixed_args(argv)


def checked_config(args: argparse.Namespace):
    from .config.run_config import load_config
    from .config.validate import validate_config
    from .methods import METHODS

    config = load_config(args.config, args.overrides)
    validate_config(config, METHODS)
    if config.method != "fast":
        raise UserError(f"replacements are made for method fast, not {config.method}", "pass the arguments of a method=fast run")
    if not config.aux.replacements:
        raise UserError("no output directory: aux.replacements is empty", "pass aux.replacements=DIR, as the training will")
    if config.data.corruption_rng != "sample":
        raise UserError("replacements ahead of time need data.corruption_rng=sample (draws keyed by sample, not by rank)", "add data.corruption_rng=sample here and in the training")
    for flag in ("train_ranks", "shard_steps"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be at least 1", f"pass --{flag.replace('_', '-')}=1 or more")
    return config


def prepare_output(directory: Path, manifest: dict) -> None:
    """Refuse a directory that is not this pass's; create it with its manifest (rank 0 only: the others
    would see it half made)."""
    from .data.replacements import MANIFEST, clean_temp_files, first_difference, read_manifest, write_manifest

    if directory.exists() and not directory.is_dir():
        raise UserError(f"aux.replacements {directory} is a file", "name a directory")
    # First: a pass killed while writing its first manifest leaves only a temporary file.
    removed = clean_temp_files(directory) if directory.is_dir() else []
    if (directory / MANIFEST).is_file():
        found = read_manifest(directory)
        difference = first_difference(found, manifest) or next(((key, found.get(key), manifest[key]) for key in ("samples", "shard_samples")
                                                                if found.get(key) != manifest[key]), None)
        if difference is not None:
            field, have, want = difference
            raise UserError(f"aux.replacements {directory} holds a pass for another run ({field} is {have!r} there, {want!r} here)",
                            "choose another aux.replacements, or remove that directory to redo the pass")
    elif directory.is_dir() and any(directory.iterdir()):
        raise UserError(f"aux.replacements {directory} exists and is not a replacements directory (no {MANIFEST})", "choose an empty or new directory")
    else:
        directory.mkdir(parents=True, exist_ok=True)
        write_manifest(directory, manifest)
    for path in removed:
        print(f"[fast-electra] removed {path}, a file a killed pass left half-written", flush=True)


def run(args: argparse.Namespace) -> int:
    config = checked_config(args)

    import torch.distributed as dist

    from .config.ds_config import resolve_ds_config
    from .config.run_config import load_ds_config
    from .data.phases import PhasedData
    from .data.replacements import evaluation_steps
    from .data.tokenizer import load_tokenizer
    from .errors import check_writable
    from .methods import METHODS, TokenInfo
    from .runtime.device import barrier, bind_device
    from .runtime.process_group import init_process_group, quiet_known_warnings
    from .runtime.resources import fail_on_every_rank
    from .train import single_process_defaults

    quiet_known_warnings()
    ds_config = load_ds_config(args.ds_config)
    directory = Path(config.aux.replacements)
    check_writable(directory, "aux.replacements")
    single_process_defaults()
    device = bind_device()
    init_process_group(config.train.collective_timeout_minutes)
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        ds = resolve_ds_config(ds_config, args.train_ranks or world, config, device.type == "cuda")
        global_batch, micro = ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"]
        data = PhasedData(config.data.path, config.seq_len_phases(), config.data.val_sequences, tokenizer=load_tokenizer(config.data.tokenizer))
        tokens = TokenInfo.of(data.final)
        online = copy.deepcopy(config)
        online.aux.replacements = None  # this pass is the online path
        method = METHODS["fast"](online, tokens, device)
        method.setup()
        ranks = args.train_ranks or world
        shard_steps = args.shard_steps or max(1, round(SHARD_SAMPLES / global_batch))
        validated = [step for step in evaluation_steps(config.train.steps, config.train.eval_every)
                     if len(data.phases[data.index(max(step - 1, 0))].val_indices)]  # as the trainer: no held-out samples, no evaluation
        manifest = {**method.planned(global_batch, micro, ranks), "samples": config.train.steps * global_batch,
                    "shard_samples": shard_steps * global_batch, "validation_steps": validated, "aux_path": str(config.aux.path), "complete": False}
        problem = [None]
        if rank == 0:
            try:
                prepare_output(directory, manifest)
            except UserError as err:
                problem[0] = str(err)
        dist.broadcast_object_list(problem, src=0)
        if problem[0]:
            fail_on_every_rank(problem[0], "")
        shards = planned_shards(data, manifest, micro, ranks)
        done = make_shards(method, shards, directory, manifest, rank, world, device)
        barrier()
        finish(data, shards, directory, manifest, done, rank, world, device)
        barrier()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


def planned_batch(data, readers: dict, position: int, micro: int, global_batch: int, seed: int):
    """The training's micro-batch that starts at stream `position`: the samples its RankBatches reads there."""
    from .data.dataset import RankBatches

    step = position // global_batch
    index = data.index(step)
    phase = data.phases[index]
    if index not in readers:
        readers[index] = RankBatches(phase.train, micro, 0, 1, seed=seed)
    reader = readers[index]
    reader.consumed_samples = position - phase.start * global_batch  # a phase's positions count from its first step
    return step, next(reader)


def training_batches(data, readers: dict, first: int, stop: int, micro: int, global_batch: int, seed: int):
    """(step, batch, stream positions) of the training micro-batches at positions [first, stop)."""
    for position in range(first, stop, micro):
        step, batch = planned_batch(data, readers, position, micro, global_batch, seed)
        yield step, batch, list(range(position, position + micro))


def validation_batches(data, step: int, micro: int, ranks: int):
    """(step, batch, keys) of the held-out batches of the evaluation after `step`, grouped as a run on
    `ranks` ranks groups them (metrics/validation.py), then the samples past an equal share (which runs
    on other numbers of ranks read): every held-out sample, in the split's order."""
    import torch

    from .metrics.validation import rank_batches, validation_key

    phase = data.phases[data.index(max(step - 1, 0))]
    count = len(phase.val_indices)
    groups = [group for rank in range(ranks) for group in rank_batches(count, micro, rank, ranks)]
    covered = sum(len(group) for group in groups)
    groups += [list(range(k, min(k + micro, count))) for k in range(covered, count, micro)]
    for group in groups:
        items = [phase.dataset[int(phase.val_indices[k])] for k in group]
        yield step, {key: torch.stack([item[key] for item in items]) for key in items[0]}, [validation_key(k) for k in group]


def planned_shards(data, manifest: dict, micro: int, ranks: int) -> list:
    """Every file of the pass: (name, a function giving its micro-batches)."""
    from functools import partial

    from .data.replacements import shard_name, validation_shard_name

    total, per_shard, readers = manifest["samples"], manifest["shard_samples"], {}
    shards = [(shard_name(i), partial(training_batches, data, readers, i * per_shard, min((i + 1) * per_shard, total), micro,
                                      manifest["global_batch"], manifest["seed"])) for i in range(-(-total // per_shard))]
    return shards + [(validation_shard_name(step), partial(validation_batches, data, step, micro, ranks)) for step in manifest["validation_steps"]]


def make_shards(method, shards: list, directory: Path, manifest: dict, rank: int, world: int, device) -> dict:
    """This rank's missing shards (every world-th), written; what it made (samples, tokens, FLOPs, seconds)."""
    import torch

    from .methods import StepContext

    written = {name for name, _ in shards if (directory / name).is_file()}
    todo = [(name, batches) for number, (name, batches) in enumerate(shards) if number % world == rank and name not in written]
    if rank == 0:
        print(f"[fast-electra] replacements: {manifest['samples']} samples ({manifest['steps']} steps x {manifest['global_batch']}) and "
              f"{len(manifest['validation_steps'])} evaluations in {len(shards)} shards over {world} ranks; {len(shards) - len(written)} to make"
              + (f", {len(written)} already written (a pass that stopped)" if written else ""), flush=True)
    made, started = {"samples": 0, "tokens": 0, "flops": 0.0}, time.perf_counter()
    said = started
    for number, (name, batches) in enumerate(todo, 1):
        parts = new_parts()
        for step, batch, positions in batches():
            batch = {key: value.to(device) for key, value in batch.items()}
            with torch.no_grad():
                proposal = method.propose(batch, StepContext(step, step / manifest["steps"], torch.Generator(), positions))
            append_batch(parts, batch["input_ids"], *proposal)
            rows, seq_len = batch["input_ids"].shape
            made["samples"] += rows
            made["tokens"] += rows * seq_len
            made["flops"] += rows * method.aux_flops_per_sequence(seq_len)
            if rank == 0 and time.perf_counter() - said > PROGRESS_EVERY_S:  # a large shard takes a while
                said = time.perf_counter()
                print(f"[fast-electra] replacements: rank 0 making {name} ({number}/{len(todo)} of its own); "
                      f"{made['tokens'] / (said - started):,.0f} tokens/s on this rank", flush=True)
        write_parts(directory / name, parts)
        if rank == 0:
            rate = made["tokens"] / (time.perf_counter() - started)
            print(f"[fast-electra] replacements: rank 0 wrote {name} ({number}/{len(todo)} of its own); {rate:,.0f} tokens/s on this rank", flush=True)
    made["seconds"] = time.perf_counter() - started
    return made


def new_parts() -> dict[str, list]:
    """What append_batch collects for one shard, and write_parts writes."""
    from .data.replacements import SAMPLE_STATS

    return {key: [] for key in ("counts", "columns", "ids", *SAMPLE_STATS)}


def append_batch(parts: dict, original, selected, sampled, aux_argmax, temperature: float, metrics: dict) -> None:
    """Per sample: its selected columns and sampled ids (row-major, as `corrupted[selected] = sampled`
    reads them), its count, the aux's correct argmaxes, and its micro-batch's T and mean CEs."""
    import numpy as np

    selected = selected.cpu()
    rows, columns = selected.nonzero(as_tuple=True)
    counts = selected.sum(dim=1)
    hits = (aux_argmax.cpu() == original.cpu()[selected]).numpy().astype(np.float64)
    correct = np.bincount(rows.numpy(), weights=hits, minlength=len(counts)).astype(np.int64)

    def mean(name: str) -> float:
        pair = metrics.get(name)
        return 0.0 if pair is None or pair[1].item() == 0 else (pair[0] / pair[1]).item()

    parts["counts"].append(counts.numpy())
    parts["columns"].append(columns.numpy())
    parts["ids"].append(sampled.cpu().numpy())
    parts["correct"].append(correct)
    parts["temperature"].append(np.full(len(counts), float(temperature)))
    parts["ce"].append(np.full(len(counts), mean("aux_ce")))
    parts["target_ce"].append(np.full(len(counts), mean("aux_target_ce")))


def write_parts(path: Path, parts: dict) -> None:
    import numpy as np

    from .data.replacements import SAMPLE_STATS, write_shard

    joined = {key: np.concatenate(value) if value else np.zeros(0) for key, value in parts.items()}
    stats = {key: joined[key] for key in SAMPLE_STATS}
    write_shard(path, joined["counts"], joined["columns"], joined["ids"], stats)


def finish(data, shards: list, directory: Path, manifest: dict, made: dict, rank: int, world: int, device) -> None:
    """The throughput line (all ranks' tokens over the slowest rank's time), the shards' size per token,
    and, once every shard is there, the manifest marked complete."""
    import torch
    import torch.distributed as dist

    from .data.replacements import write_manifest

    sums = torch.tensor([made["samples"], made["tokens"], made["flops"]], dtype=torch.float64, device=device)
    slowest = torch.tensor([made["seconds"]], dtype=torch.float64, device=device)
    dist.all_reduce(sums)
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
    if rank != 0:
        return
    samples, tokens, flops = (float(v) for v in sums.tolist())
    seconds = max(float(slowest.item()), 1e-9)
    present = [directory / name for name, _ in shards if (directory / name).is_file()]
    stored = sum(p.stat().st_size for p in present if p.name.startswith("shard-"))
    training_tokens = sum(phase_tokens(data, manifest))
    if tokens:
        print(f"[fast-electra] replacements: {int(samples)} samples, {int(tokens)} tokens in {seconds:.1f} s: {tokens / seconds:,.0f} tokens/s "
              f"over {world} ranks ({flops / seconds / 1e12:.3f} aux TFLOP/s, {flops / tokens:,.0f} aux FLOPs per token)", flush=True)
    complete = len(present) == len(shards)
    per_token = stored / training_tokens
    write_manifest(directory, {**manifest, "complete": complete, "bytes": stored, "tokens": training_tokens,
                               "bytes_per_token": round(per_token, 4) if complete else None})
    print(f"[fast-electra] replacements: {len(present)}/{len(shards)} shards in {directory}"
          + (f", {stored:,} bytes of training replacements, {per_token:.3f} bytes per token" if complete else ": incomplete, re-run to continue")
          + "; train with the same arguments (aux.replacements names them)", flush=True)
    print("[fast-electra] done: " + json.dumps({"directory": str(directory), "complete": complete, "bytes": stored}), flush=True)


def phase_tokens(data, manifest: dict):
    """Tokens of the planned stream, phase by phase (sequences x their length)."""
    for phase in data.phases:
        first, last = phase.start * manifest["global_batch"], min(phase.end * manifest["global_batch"], manifest["samples"])
        yield max(0, last - first) * phase.seq_len


def cli(argv: list[str], prog: str = "fast-electra replacements") -> int:
    return run(parse_args(argv, prog))


def main(argv: list[str] | None = None, prog: str = "python -m fast_electra_ds.replacements") -> int:
    return run_guarded(lambda args: cli(args, prog), sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":  # deepspeed --module fast_electra_ds.replacements, torchrun -m fast_electra_ds.replacements
    sys.exit(main())
