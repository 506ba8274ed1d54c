"""The in-process checks, run by `gpu_check.py --inner GROUP` in a fresh process (its own process
group and CUDA state): the device group (Adam implementation, attention path, frozen-aux placement),
peak memory against the simulation, and step time and MFU."""
from __future__ import annotations

from pathlib import Path

from .harness import FAIL, PASS, ROOT, SKIP, result

MEMORY_TOLERANCE = 0.10


def inner_device(aux: Path, device_name: str) -> list[dict]:
    import torch

    from fast_electra_ds.runtime.device import bind_device

    device = bind_device() if device_name == "cuda" else torch.device("cpu")
    out = []
    for check in (_optimizer, _attention, _aux_placement):
        try:
            out.extend(check(device, aux))
        except Exception as error:  # a broken check is a FAIL with its reason, the others still run
            out.append(result(check.__name__.strip("_"), FAIL, f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"))
    return out


def _optimizer(device, aux: Path) -> list[dict]:
    import deepspeed
    import torch
    from deepspeed.ops.op_builder.builder import OpBuilder
    from transformers import ElectraForPreTraining

    from benchmarks.engine_memory import _init_single_rank
    from fast_electra_ds.config.run_config import RunConfig, load_ds_config
    from fast_electra_ds.runtime.device import prebuilt_fused_adam
    from fast_electra_ds.config.ds_config import resolve_ds_config
    from fast_electra_ds.models.encoder import build_model, electra_config

    _init_single_rank()
    config = RunConfig()
    config.model.preset = "tiny"
    ds = resolve_ds_config(load_ds_config(str(ROOT / "ds_configs/zero3.json")), 1, config, device.type == "cuda")
    for section in ("tensorboard", "scheduler"):
        ds.pop(section, None)
    model = build_model(ElectraForPreTraining, electra_config(config.model.sizes(), config.model, 1000, 0), ds)
    engine, optimizer, _, _ = deepspeed.initialize(model=model, model_parameters=[p for p in model.parameters()], config=ds)
    inner = getattr(optimizer, "optimizer", optimizer)
    kind = f"{type(inner).__module__}.{type(inner).__name__}"
    fused, foreach = inner.defaults.get("fused"), inner.defaults.get("foreach")
    jit_built = sorted(op for op in OpBuilder._loaded_ops if "adam" in op)
    details = dict(optimizer=kind, fused=fused, foreach=foreach, prebuilt_fused_adam=prebuilt_fused_adam(), loaded_ops=jit_built,
                   ds_params={k: v for k, v in ds["optimizer"]["params"].items() if k in ("torch_adam", "fused", "foreach")})
    expected_fused = device.type == "cuda" and not prebuilt_fused_adam()
    if jit_built and not prebuilt_fused_adam():
        return [result("optimizer_no_jit", FAIL, f"DeepSpeed op(s) {jit_built} were built at run time", **details)]
    if expected_fused and not (isinstance(inner, torch.optim.AdamW) and fused):
        return [result("optimizer_no_jit", FAIL, f"expected torch's fused AdamW on CUDA, got {kind} (fused={fused})", **details)]
    return [result("optimizer_no_jit", PASS, f"{kind} (fused={fused}, foreach={foreach}), no DeepSpeed op built at run time", **details)]


def _attention(device, aux: Path) -> list[dict]:
    import torch
    from torch.profiler import ProfilerActivity, profile
    from transformers import ElectraForPreTraining

    from fast_electra_ds.config.run_config import RunConfig
    from fast_electra_ds.data.unpadded import unpadded_mask
    from fast_electra_ds.models.encoder import build_model, electra_config

    config = RunConfig()
    config.model.preset = "small"
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = build_model(ElectraForPreTraining, electra_config(config.model.sizes(), config.model, 1000, 0), None).to(device, dtype).eval()
    seen = []
    model.base_model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs.get("attention_mask")), with_kwargs=True)
    ids = torch.randint(5, 1000, (4, 128), device=device)
    padded = torch.ones(4, 128, dtype=torch.long, device=device)
    padded[1, 100:] = 0
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])

    def kernels(mask) -> list[str]:
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask)
            with profile(activities=activities) as prof:
                model(input_ids=ids, attention_mask=mask)
            if device.type == "cuda":
                torch.cuda.synchronize()
        return sorted({e.key for e in prof.key_averages() if any(s in e.key.lower() for s in ("flash", "efficient", "fmha", "attention", "cudnn"))})

    unpadded_kernels = kernels(unpadded_mask((4, 128), torch.long, device))
    dropped = seen[-1] is None
    padded_kernels = kernels(padded)
    out = [result("attention_mask_dropped", PASS if dropped else FAIL,
                  "a packed batch (no padding) reaches the encoder with no attention mask" if dropped else
                  "a packed batch still reaches the encoder with an attention mask", unpadded=unpadded_kernels, padded=padded_kernels)]
    if device.type != "cuda":
        out.append(result("sdpa_flash_kernel", SKIP, "needs a GPU (on CPU SDPA runs its flash-for-CPU kernel with or without a mask)",
                          unpadded=unpadded_kernels))
        return out
    device_kernels = [k for k in unpadded_kernels if not k.startswith("aten::")]
    flash = [k for k in unpadded_kernels if "flash" in k.lower()]
    efficient = [k for k in unpadded_kernels if "efficient" in k.lower() or "fmha" in k.lower() or "cudnn" in k.lower()]
    status = PASS if flash or efficient else FAIL
    chosen = "flash" if flash else ("memory-efficient / cuDNN" if efficient else "neither flash nor memory-efficient")
    out.append(result("sdpa_flash_kernel", status, f"SDPA chose {chosen} for a packed bf16 batch", kernels=unpadded_kernels,
                      device_kernels=device_kernels, padded_kernels=padded_kernels))
    return out


def _aux_placement(device, aux: Path) -> list[dict]:
    import torch

    from fast_electra_ds.data.tokenizer import load_tokenizer, tokenizer_fingerprint
    from fast_electra_ds.models.aux import load_frozen_aux

    tokenizer = load_tokenizer(str(aux))
    frozen = load_frozen_aux(str(aux), len(tokenizer), tokenizer_fingerprint(tokenizer), "auto", device)
    params = list(frozen.model.parameters())
    dtypes = sorted({str(p.dtype) for p in params})
    devices = sorted({p.device.type for p in params})
    wanted = "torch.float16" if device.type == "cuda" and not torch.cuda.is_bf16_supported() else "torch.bfloat16"
    ids = torch.randint(5, len(tokenizer), (2, 32), device=device)
    selected = torch.zeros(2, 32, dtype=torch.bool, device=device)
    selected[:, 3] = True
    sampled, _ = frozen.propose(ids, torch.ones_like(ids), selected, 1.0, torch.Generator(device=device).manual_seed(0), [0, 1, 2, 3])
    details = dict(dtypes=dtypes, devices=devices, requires_grad=any(p.requires_grad for p in params), training=frozen.model.training,
                   sampled_device=sampled.device.type)
    ok = dtypes == [wanted] and devices == [device.type] and not details["requires_grad"] and not frozen.model.training and sampled.device.type == device.type
    return [result("aux_16bit_on_device", PASS if ok else FAIL,
                   f"frozen aux {'/'.join(dtypes)} on {'/'.join(devices)}, no gradients, eval mode, sampling on the device" if ok else
                   f"frozen aux is {dtypes} on {devices} (requires_grad {details['requires_grad']}), expected {wanted} on {device.type}", **details)]


def inner_memory(names: tuple[str, ...] = ("small", "paper-base")) -> list[dict]:
    """Real steps' torch.cuda.max_memory_allocated against the simulation (benchmarks/memory.py)."""
    from benchmarks.memory import KINDS, measure_real, simulate
    from fast_electra_ds.accounting.paper import get_setting

    out = []
    for name in names:
        setting = get_setting(name, zero_stage=3, world_size=1, precision="bf16", original_generator="electra")
        simulated, measured = simulate(setting), measure_real(setting, repeats=1)
        rows = {}
        for kind in KINDS:
            sim, real = simulated[f"{kind}_total" if kind != "main" else "main"], measured[f"{kind}_total" if kind != "main" else "main"]
            rows[kind] = {"simulated_mib": sim / 2**20, "measured_mib": real / 2**20, "error": (sim - real) / real}
        worst = max(abs(r["error"]) for r in rows.values())
        text = ", ".join(f"{k} {r['measured_mib']:.0f}/{r['simulated_mib']:.0f} MiB" for k, r in rows.items())
        out.append(result(f"memory_vs_simulation_{name}", PASS if worst <= MEMORY_TOLERANCE else FAIL,
                          f"measured/simulated {text} (worst {worst:.1%}, limit {MEMORY_TOLERANCE:.0%})", rows=rows))
    return out


def inner_throughput(shape: str = "base") -> list[dict]:
    """Fast and Original (electra with the aux-size generator) through the DeepSpeed engine as the
    trainer runs them (benchmarks/engine_throughput.py), MFU against a GEMM peak measured in that run;
    beside them, interleaved, fast-offline (replacements made ahead of time) and main-only (its floor)."""
    from benchmarks.engine_throughput import MAIN_ONLY, OFFLINE, measure

    r = measure(shape, 1, ["fast", "original", MAIN_ONLY, OFFLINE], steps=4, warmup=1)
    fast, original, ratio = r["methods"]["fast"], r["methods"]["original"], r["fast_over_original"]
    offline, floor = r["fast_offline_over_original"], r["main_only_over_original"]
    details = dict(gemm_peak_tflops=r["gemm_peak_tflops"], fast_step_ms=fast["step_s"] * 1e3, original_step_ms=original["step_s"] * 1e3,
                   fast_mfu=fast["mfu"], original_mfu=original["mfu"], fast_over_original=ratio,
                   fast_offline_over_original=offline, main_only_over_original=floor, shape=shape)
    text = (f"Fast {fast['step_s'] * 1e3:.1f} ms / Original {original['step_s'] * 1e3:.1f} ms per step through the engine "
            f"(ratio {ratio['measured']:.2f}, FLOPs predict {ratio['predicted']:.2f}); MFU {fast['mfu']:.0%} / {original['mfu']:.0%} "
            f"of a {r['gemm_peak_tflops']:.0f} TFLOP/s bf16 GEMM peak measured in the same run (shape {shape}); "
            f"fast-offline/original {offline['measured']:.2f} against the main-only floor {floor['measured']:.2f}")
    sane = all(0 < m["mfu"] <= 1 for m in (fast, original))
    if not sane:
        return [result("step_time_mfu", FAIL, text + "; MFU out of (0, 1]", **details)]
    if ratio["measured"] >= 1:
        return [result("step_time_mfu", FAIL, text + "; Fast is not faster per step than Original", **details)]
    return [result("step_time_mfu", PASS, text, **details)]
