"""Peak memory of the project's real training step, measured: the method's `build_model`, wrapped by
`deepspeed.initialize` as trainer.Trainer does it (ZeRO stage and 16-bit precision as in ds_configs/),
one rank in this process (world size 1), one warm-up step then one measured step
(prepare_batch with the frozen aux's sampling, engine forward, backward, step).

How it is counted. On CUDA: torch.cuda.max_memory_allocated over the measured step. On CPU there is
no caching allocator with statistics, so the count is allocator-level: torch.profiler with
profile_memory=True records every CPU allocation and free of c10's allocator with the running total
of bytes allocated since profiling began (`total_allocated`); profiling starts before the model is
built, so that total is every live tensor byte the run owns, and the peak is its largest value
inside the measured step. This sees what tensor-level tracking (MemTracker) cannot: DeepSpeed's flat
partitions, buffers and kernels' temporaries, whatever Python object holds them. Not counted (as in
the simulation): memory that is not a torch CPU tensor (the Python heap, gloo / shared-memory
communication buffers).

`kind`: "main" (the main model's step alone: fast's module with random replacement labels, no aux),
"original" (method electra: generator of the aux size trained jointly, sharing the embeddings),
"fast" (method fast: the frozen 16-bit aux samples in prepare_batch, then the main model's step)."""
from __future__ import annotations

import gc
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import SPECIALS, random_id_tokens
from fast_electra_ds.runtime.process_group import free_port

ROOT = Path(__file__).resolve().parents[1]


def ds_config_for(setting, base: str | Path = ROOT / "ds_configs" / "zero3.json") -> dict[str, Any]:
    """ds_configs/zero3.json with the setting's micro-batch, ZeRO stage and precision; no scheduler and
    no monitors (a measurement writes no TensorBoard events)."""
    ds = json.loads(Path(base).read_text())
    for section in ("scheduler", "tensorboard", "wandb", "csv_monitor", "comet"):
        ds.pop(section, None)
    ds.update(train_micro_batch_size_per_gpu=setting.micro_batch, gradient_accumulation_steps=1)
    ds["zero_optimization"] = {**ds.get("zero_optimization", {}), "stage": setting.zero_stage}
    ds.pop("bf16", None), ds.pop("fp16", None)
    if setting.precision in ("bf16", "fp16"):
        ds[setting.precision] = {"enabled": True}
    return ds


def run_config_for(setting, method: str):
    """The RunConfig whose main model, generator and aux sizes are the setting's."""
    from fast_electra_ds.config.run_config import RunConfig

    config = RunConfig(method=method)
    model = config.model
    model.num_hidden_layers, model.hidden_size, model.embedding_size = setting.main_layers, setting.main_hidden, setting.main_hidden
    model.num_attention_heads = setting.main_heads or max(1, setting.main_hidden // 64)
    model.intermediate_size = setting.main_intermediate
    model.max_position_embeddings, model.dropout = setting.seq_len, setting.dropout
    model.corrective_lm = setting.corrective_lm and method in ("fast", "electra")
    config.data.seq_len = setting.seq_len
    config.masking.mask_prob = setting.mask_prob
    config.generator.depth_fraction = setting.aux_layers / setting.main_layers
    config.generator.hidden_fraction = setting.aux_hidden / setting.main_hidden
    return config


def _init_single_rank() -> None:
    """A one-rank gloo/nccl process group for this process, kept for the process's life (DeepSpeed
    caches its groups: a destroyed and re-created group breaks the next engine)."""
    import deepspeed
    import torch.distributed as dist

    if dist.is_initialized():
        return
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    deepspeed.init_distributed(dist_backend="gloo" if not torch.cuda.is_available() else "nccl")


def _batch(setting, vocab_size: int, device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab_size, (setting.micro_batch, setting.seq_len), generator=g)
    ids[:, 0], ids[:, -1] = SPECIALS["cls_id"], SPECIALS["sep_id"]
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}


def _step(method, engine, batch: dict[str, torch.Tensor], step: int, kind: str, device: torch.device) -> None:
    from fast_electra_ds.methods import StepContext

    ctx = StepContext(step, 0.5, torch.Generator(device=device).manual_seed(step))
    if kind == "main":  # the main model alone: replacement labels without an aux model
        is_replaced = torch.rand(batch["input_ids"].shape, generator=ctx.generator, device=device) < method.config.masking.mask_prob
        inputs = {**batch, "is_replaced": is_replaced}
        if method.config.model.corrective_lm:
            inputs["original_ids"] = batch["input_ids"]
    else:
        inputs, _ = method.prepare_batch(batch, ctx)
    loss, _ = engine(**inputs)
    engine.backward(loss)
    engine.step()


def measure_engine_step(setting, kind: str) -> int:
    """Peak bytes of one training step of `kind` through the DeepSpeed engine, on this process's
    device, world size 1. `setting` is an accounting.paper.PaperSetting (world_size must be 1)."""
    import deepspeed
    from torch.profiler import ProfilerActivity, profile, record_function
    from transformers import ElectraForMaskedLM

    from fast_electra_ds.methods import METHODS
    from fast_electra_ds.config.ds_config import resolve_ds_config

    if setting.world_size != 1:
        raise ValueError("the measured step runs one rank: use world_size 1 (the simulation divides for more)")
    _init_single_rank()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    method_name = {"main": "fast", "original": "electra", "fast": "fast"}[kind]
    config = run_config_for(setting, method_name)
    tokens = random_id_tokens(setting.vocab_size, "memory-benchmark")
    gc.collect()
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        ElectraForMaskedLM(setting.aux_config()).save_pretrained(tmp)  # the aux, of the setting's size
        config.aux.path = tmp
        config.aux.dtype = setting.precision
        on_cuda = device.type == "cuda"
        if on_cuda:
            torch.cuda.empty_cache()
            base = torch.cuda.memory_allocated()
        profiler = profile(activities=[ProfilerActivity.CPU], profile_memory=True) if not on_cuda else None
        if profiler is not None:
            profiler.__enter__()
        try:
            method = METHODS[method_name](config, tokens, device)
            if kind != "main":
                method.setup()
                for model in method.frozen_modules().values():
                    # safetensors loads CPU weights as a memory map of the file, outside torch's
                    # allocator; a copy makes them count, as they would on a GPU (copied to the device)
                    for param in model.parameters():
                        param.data = param.data.clone()
            ds_config = resolve_ds_config(ds_config_for(setting), 1, config, on_cuda)
            module = method.build_model(ds_config)
            engine, _, _, _ = deepspeed.initialize(model=module, model_parameters=method.param_groups(module), config=ds_config)
            engine.train()
            batch = _batch(setting, tokens.vocab_size, device)
            _step(method, engine, batch, 0, kind, device)  # the first step creates the optimizer states
            if on_cuda:
                torch.cuda.reset_peak_memory_stats()
            with record_function("measured_step"):
                _step(method, engine, batch, 1, kind, device)
            if on_cuda:
                peak = torch.cuda.max_memory_allocated() - base
        finally:
            if profiler is not None:
                profiler.__exit__(None, None, None)
        if profiler is not None:
            peak = _peak_in(profiler, "measured_step")
        engine.destroy()
        del engine, module, method
        gc.collect()
    return int(peak)


def _peak_in(profiler, region: str) -> int:
    """Largest running total of allocated CPU bytes at any allocation inside `region`, relative to the
    total before the first allocation this profiler saw."""
    first_total = None
    peak = 0

    def allocations(node):
        if node.name == "[memory]":
            yield node
        for child in node.children:
            yield from allocations(child)

    def find(node):
        if node.name == region:
            return node
        for child in node.children:
            found = find(child)
            if found is not None:
                return found
        return None

    roots = profiler.profiler.kineto_results.experimental_event_tree()
    events = sorted((e for r in roots for e in allocations(r)), key=lambda e: e.start_time_ns)
    if events:
        first = events[0].extra_fields
        first_total = first.total_allocated - first.alloc_size  # what was allocated before profiling began
    target = next((n for r in roots if (n := find(r)) is not None), None)
    if target is None:
        raise RuntimeError(f"no profiler region {region!r}")
    inside = sorted((e for e in allocations(target) if e.extra_fields.device.type == "cpu"), key=lambda e: e.start_time_ns)
    for event in inside:
        peak = max(peak, event.extra_fields.total_allocated - (first_total or 0))
    LAST["before_step"] = inside[0].extra_fields.total_allocated - inside[0].extra_fields.alloc_size - (first_total or 0) if inside else 0
    return peak


LAST: dict[str, int] = {}  # detail of the last measurement (bytes live when the measured step began)
