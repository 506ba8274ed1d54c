r"""Training entry point, run once per rank by the `deepspeed` launcher (or torchrun):

    deepspeed --num_nodes N --num_gpus G train.py --ds_config zero3.json \
        --config base.yaml [section.key=value ...] [--resume]

From an installed wheel: `deepspeed --module fast_electra_ds.train ...`; one process without a
launcher: `python -m fast_electra_ds.train ...` or `fast-electra train ...`.
--ds_config and --config take a file, or the bare name of a shipped one (zero2, zero3, zero3_offload;
tiny, small, base, large); a local file of that name wins. Flags and overrides go in any order.
Overrides: any config key, e.g. train.steps=200 model.preset=base optim.lr=3e-4 optim.warmup_ratio=0.01
optim.micro_batch=32 (the optim section is written into the DeepSpeed JSON).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .errors import PeerRankFailure, UserError, run_guarded
from .runtime.job_failure import QUIET_EXIT_DELAY_S, said_elsewhere, say_once
from .runtime.watchdog import Watchdog, WatchdogThread, store_client, wait_for_export

STOPPED_MARKER = "STOPPED_BY_SIGNAL"  # in train.out_dir: the run checkpointed on SIGUSR1/SIGTERM before its last step
_EARLY_STOP: list[int] = []
EXPORT_KEY = "fast-electra/final-export"


def _note_early_stop(signum, frame) -> None:
    """SIGUSR1 before the training loop installs its handler (a scheduler's warning during start-up)
    must not kill the process: remember it, and the loop stops after its first step."""
    _EARLY_STOP.append(signum)


PEER_FAILURE_SIGNS = ("Connection closed by peer", "remote worker crashing", "Connection reset by peer", "NCCL communicator was aborted",
                      "Timed out")  # gloo's words when a peer hung past train.collective_timeout_minutes


def latest_checkpoint_words(out_dir: str) -> str:
    from .checkpointing import checkpoint_root, complete_checkpoints

    found = complete_checkpoints(checkpoint_root(Path(out_dir)))
    return f"latest complete checkpoint: {found[-1]}" if found else "no complete checkpoint yet"


def peer_failure(err: Exception, out_dir: str) -> PeerRankFailure | None:
    """A collective failing because another rank is gone, as one actionable line."""
    import torch.distributed as dist

    if not (isinstance(err, dist.DistBackendError) or any(sign in str(err) for sign in PEER_FAILURE_SIGNS)):
        return None
    return PeerRankFailure(f"another rank of this job stopped ({str(err).splitlines()[0][-120:]}); {latest_checkpoint_words(out_dir)}",
                           "see the first failing rank's log, then re-launch with --resume")


def parse_args(argv: list[str], prog: str = "train.py") -> argparse.Namespace:
    from .config.run_config import TrainConfig

    defaults = (f"Defaults: {TrainConfig().safety_summary()} (train.save_every, train.save_every_minutes, "
                f"train.keep_last, train.eval_every; 0 turns a rule off).")
    parser = argparse.ArgumentParser(prog=prog, description=__doc__, epilog=defaults, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ds_config", "--deepspeed_config", dest="ds_config", required=True,
                        help="DeepSpeed JSON (batch sizes, precision, ZeRO, optimizer, scheduler): a file or a shipped name, e.g. zero3.json")
    parser.add_argument("--config", action="append", default=[], help="YAML preset(s), merged in order: files or shipped names, e.g. tiny.yaml")
    parser.add_argument("--resume", action="store_true", help="continue from the latest complete checkpoint in train.out_dir")
    parser.add_argument("--allow-inexact-resume", action="store_true", help="resume even from a checkpoint that lacks a rank's RNG state (the losses then differ)")
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # set by the deepspeed launcher
    parser.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.steps=200 optim.lr=3e-4")
    return parser.parse_intermixed_args(argv)  # flags before, between or after the overrides


def single_process_defaults() -> None:
    """Allow `python train.py ...` without a launcher: a world of one."""
    if "RANK" not in os.environ:
        from .runtime.process_group import free_port

        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))


def run(args: argparse.Namespace) -> int:
    import signal

    from .runtime.launcher_death import die_with_launcher
    from .runtime.resources import check_out_dir_writable, raise_on_every_rank
    from .runtime.run_lock import hold_run_lock
    from .config.run_config import load_config, load_ds_config
    from .config.validate import validate_config
    from .methods import METHODS
    from .runtime.process_group import explain_op_builds, init_process_group, quiet_known_warnings

    signal.signal(signal.SIGUSR1, _note_early_stop)
    quiet_known_warnings()

    try:
        config = load_config(args.config, args.overrides)  # user mistakes surface before any process group
        validate_config(config, METHODS)
        ds_config = load_ds_config(args.ds_config)
    except UserError as err:  # every rank reads the same arguments: rank 0 alone says what is wrong
        raise_on_every_rank(err, int(os.environ.get("RANK", 0)))
    check_out_dir_writable(config.train.out_dir)  # before the model is built
    die_with_launcher()  # no rank left training when the launcher is killed

    import torch.distributed as dist

    from .runtime.device import barrier, bind_device, cpu_bf16_is_emulated
    from .training.trainer import Trainer

    single_process_defaults()
    started = time.time()
    device = bind_device()  # before the first collective, so NCCL never guesses this rank's GPU
    if device.type == "cpu" and ds_config.get("bf16", {}).get("enabled") and cpu_bf16_is_emulated() and int(os.environ.get("RANK", 0)) == 0:
        print("[fast-electra] warning: this CPU has no native bf16 (no avx512_bf16 / amx_bf16 flag), so bf16 steps are "
              "emulated and several times slower than fp32; on this machine use --ds_config zero3_fp32.json "
              "(and aux.dtype=fp32 for method=fast)", flush=True)
    explain_op_builds()  # a first start compiles DeepSpeed's CPU collectives: said, and timed
    init_process_group(config.train.collective_timeout_minutes)  # a taken MASTER_PORT is one line naming a free one
    store = store_client()  # the ranks' word outside collectives: the final export's end, a mistake one rank found
    watchdog = None
    try:
        unlink_shm_allreduce_buffer()
        hold_run_lock(config.train.out_dir)  # one job per train.out_dir
        trainer = Trainer(config, ds_config, resume=args.resume, allow_inexact_resume=args.allow_inexact_resume)
        rank = dist.get_rank()
        watchdog = start_watchdog(config, trainer, store_client())  # a client of its own: the store serves one call at a time
        result = trainer.train(signals_before_start=_EARLY_STOP)
        if rank == 0:  # tells a batch script (launcher/slurm) to requeue rather than finish
            marker = trainer.run_dir / STOPPED_MARKER
            if result["stopped_by_signal"]:
                marker.write_text(json.dumps({"step": result["step"], "checkpoint": result["checkpoint"]}) + "\n")
            else:
                marker.unlink(missing_ok=True)
        # Rank 0 exports on CPU; the others wait for its key in the store for as long as that takes (not
        # in a barrier, which the collective timeout would end), and stay in the group meanwhile: a rank
        # that left early aborted at exit ("terminate called without an active exception").
        if watchdog is not None:
            watchdog.watchdog.mode = "export"
        if rank == 0:
            outcome = "failed"
            try:
                if result["finished"] and config.train.export:
                    from .export.exporter import export

                    try:
                        differences = export(result["checkpoint"], trainer.run_dir / "hf", overwrite=True)  # replaces only this project's earlier export
                    except UserError as err:
                        err.known_to_every_rank = True  # the others read "failed" under EXPORT_KEY and leave quietly
                        raise
                    result["export"] = str(trainer.run_dir / "hf")
                    result["export_max_logit_difference"] = differences
                outcome = "done"
            finally:
                announce_export(store, outcome)
        elif wait_for_export(store, EXPORT_KEY) != "done":
            return PeerRankFailure.exit_code  # rank 0 printed why
        result["wall_time_s"] = time.time() - started
        if rank == 0:
            print("[fast-electra] done: " + json.dumps(result), flush=True)
        barrier()
    except UserError as err:
        if err.known_to_every_rank or say_once(store, dist.get_world_size(), err.exit_code, leave_process_group):
            raise
        time.sleep(QUIET_EXIT_DELAY_S)  # another rank found it first and says it
        return err.exit_code
    except RuntimeError as err:
        failure = peer_failure(err, config.train.out_dir)
        if failure is None:
            raise
        exit_code = said_elsewhere(store)
        if exit_code is not None:  # the rank that left said why
            time.sleep(QUIET_EXIT_DELAY_S)
            return exit_code
        raise failure from None
    finally:
        if watchdog is not None:
            watchdog.stop()
        leave_process_group()
    return 0


def leave_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        try:
            dist.destroy_process_group()
        except RuntimeError:
            pass  # the group is already broken by a lost peer


def start_watchdog(config, trainer, store) -> WatchdogThread | None:
    """Hang detection while training (train.stall_minutes; 0: off)."""
    import torch.distributed as dist

    if not config.train.stall_minutes:
        return None
    watchdog = Watchdog(dist.get_rank(), dist.get_world_size(), config.train.stall_minutes * 60, store, lambda: trainer.state.step)
    return WatchdogThread(watchdog, trainer.run_dir, lambda: latest_checkpoint_words(config.train.out_dir)).start()


def announce_export(store, outcome: str) -> None:
    if store is not None:
        store.set(EXPORT_KEY, outcome)


def unlink_shm_allreduce_buffer() -> None:
    """DeepSpeed's CPU all-reduce maps a 64 MiB /dev/shm segment per rank and never unlinks it, so every
    run would leave them behind (RAM-backed: hundreds of runs fill the machine). Once every rank has
    mapped every segment (init_distributed returned everywhere: the barrier), the names are no longer
    needed; the mappings stay valid until the processes exit."""
    import torch.distributed as dist

    from .runtime.device import barrier

    barrier()
    rank = dist.get_rank()
    for segment in Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_{os.getuid()}_*_{os.environ.get('MASTER_PORT', '*')}_{rank}"):
        segment.unlink(missing_ok=True)


def cli(argv: list[str], prog: str = "fast-electra train") -> int:
    return run(parse_args(argv, prog))


def main(argv: list[str] | None = None, prog: str = "train.py") -> int:
    return run_guarded(lambda args: cli(args, prog), sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":  # python -m fast_electra_ds.train, deepspeed --module fast_electra_ds.train
    sys.exit(main(prog="python -m fast_electra_ds.train"))
