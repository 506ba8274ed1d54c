"""The checks that train: a `fast` run under ZeRO-3 that must learn, resume exactly and export what
it trained; the fp16 config with every step overflowing; model.compile without graph breaks."""
from __future__ import annotations

import json
import math
from pathlib import Path

from .harness import FAIL, PASS, ROOT, SKIP, Runs, losses, records, result

STEPS = 12  # training steps of the `fast` runs (tiny model): enough for the loss to fall
RESUME_TOLERANCE = {"cpu": 0.0, "cuda": 5e-3}  # |loss difference| resumed vs uninterrupted (GPU kernels are not all deterministic)
EXPORT_TOLERANCE = 0.05  # max |logit difference|, exported Hugging Face model vs the 16-bit engine


def check_fast_run(runs: Runs, aux: Path, ranks: int, device: str) -> dict:
    name = f"fast_zero3_bf16_{ranks}{'gpu' if device == 'cuda' else 'cpu'}"
    backend = "NCCL" if device == "cuda" else "gloo"
    whole, parts = runs.work / f"{name}_whole", runs.work / f"{name}_resumed"
    common = ("method=fast", f"aux.path={aux}", f"train.steps={STEPS}")
    done = runs.train(f"{name}_whole", whole, *common, ranks=ranks)
    runs.train(f"{name}_first_half", parts, *common, f"train.stop_after={STEPS // 2}", ranks=ranks)
    resumed = runs.train(f"{name}_resumed", parts, *common, "--resume", ranks=ranks)
    a, b = losses(whole), losses(parts)
    first, last = sum(a[s] for s in (1, 2, 3)) / 3, sum(a[s] for s in (STEPS - 2, STEPS - 1, STEPS)) / 3
    gap = max(abs(a[s] - b[s]) for s in a)
    export = max((done.get("export_max_logit_difference") or {"missing": math.inf}).values())
    export_resumed = max((resumed.get("export_max_logit_difference") or {"missing": math.inf}).values())
    details = dict(ranks=ranks, backend=backend, loss_first3=first, loss_last3=last, resume_max_loss_difference=gap,
                   export_max_logit_difference=max(export, export_resumed), steps=STEPS)
    problems = []
    if not last < first:
        problems.append(f"loss did not fall ({first:.4f} -> {last:.4f})")
    if sorted(a) != sorted(b) or gap > RESUME_TOLERANCE[device]:
        problems.append(f"resumed run differs from the uninterrupted one (max |loss difference| {gap:.3g} > {RESUME_TOLERANCE[device]})")
    if max(export, export_resumed) > EXPORT_TOLERANCE:
        problems.append(f"export differs from the engine (max |logit difference| {max(export, export_resumed):.3g} > {EXPORT_TOLERANCE})")
    if problems:
        return result(name, FAIL, "; ".join(problems), **details)
    return result(name, PASS, f"{ranks} rank(s), {backend}: loss {first:.4f} -> {last:.4f}, resumed run's largest loss difference {gap:.2g}, "
                              f"export's largest logit difference {max(export, export_resumed):.2g}", **details)


def check_fp16_overflow(runs: Runs, aux: Path, device: str) -> dict:
    """Every step overflows (initial loss scale 2^40): DeepSpeed skips every update. The trainer's step
    counter and consumed_samples still advance; the lr and the temperature curriculum do not."""
    name = "fp16_forced_overflow"
    from deepspeed.accelerator import get_accelerator

    if not get_accelerator().is_fp16_supported():
        return result(name, SKIP, f"DeepSpeed's {get_accelerator()._name} accelerator does not support fp16 here")
    config = json.loads((ROOT / "ds_configs/zero3_fp16.json").read_text())
    config["fp16"]["initial_scale_power"] = 40
    path = runs.work / "fp16_overflow.json"
    path.write_text(json.dumps(config))
    out, steps = runs.work / name, 4
    runs.train(name, out, "method=fast", f"aux.path={aux}", f"train.steps={steps}", "train.export=false", ds_config=path)
    logged = records(out)
    from fast_electra_ds import checkpointing as ckpt
    from fast_electra_ds.config.run_config import RunConfig

    final = ckpt.complete_checkpoints(ckpt.checkpoint_root(out))[-1]
    state = json.loads((final / ckpt.TRAINER_STATE).read_text())
    t0 = RunConfig().curriculum.t0
    batch = config["train_micro_batch_size_per_gpu"] * config["gradient_accumulation_steps"]
    details = dict(steps=state["step"], consumed_samples=state["consumed_samples"], lrs=[r["lr"] for r in logged],
                   temperatures=[r["temperature"] for r in logged], t0=t0)
    problems = []
    if state["step"] != steps or state["consumed_samples"] != steps * batch:
        problems.append(f"step {state['step']} / consumed_samples {state['consumed_samples']}, expected {steps} / {steps * batch}")
    if any(r["lr"] != 0 for r in logged):
        problems.append("the lr advanced on skipped steps")
    if any(not math.isclose(r["temperature"], t0) for r in logged):
        problems.append(f"the temperature left T0={t0} on skipped steps ({details['temperatures']})")
    if problems:
        return result(name, FAIL, "; ".join(problems), **details)
    return result(name, PASS, f"{steps} overflowing steps skipped: step counter and consumed_samples advanced, lr 0 and T = T0 throughout", **details)


def check_compile(runs: Runs, aux: Path) -> dict:
    """model.compile=true on `fast`: the compiled blocks break no graph (TORCH_LOGS=graph_breaks)."""
    name = "compile_fast_graph_breaks"
    runs.train(name, runs.work / name, "method=fast", f"aux.path={aux}", "train.steps=4", "train.export=false", "model.compile=true",
               extra_env={"TORCH_LOGS": "graph_breaks"})
    breaks = [line for line in (runs.logs / f"{name}.log").read_text(errors="replace").splitlines() if "Graph break" in line and "user code at" in line]
    where = sorted({line.split("user code at ", 1)[1].strip() for line in breaks})
    if breaks:
        return result(name, FAIL, f"{len(breaks)} graph break(s) at {', '.join(where)[:300]}", locations=where)
    return result(name, PASS, "4 compiled fast steps under ZeRO-3 with no graph break")
