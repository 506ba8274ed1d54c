"""`fast-electra export RUN_OR_CHECKPOINT OUT_DIR`: consolidate a (ZeRO-sharded) checkpoint into
Hugging Face model directories (config, safetensors weights, tokenizer)."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from .. import checkpointing as ckpt
from ..config.run_config import load_config
from ..data.tokenizer import load_tokenizer
from ..errors import UserError, check_writable, writing_to
from ..runtime.temp_dirs import clean_orphans, temp_name
from ..checkpointing.safe_load import weights_only_loads
from .model_card import finish_model_dir
from ..methods import METHODS, TokenInfo


def consolidated_state_dict(checkpoint: Path) -> dict[str, torch.Tensor]:
    """fp32 weights of the whole trainable module, gathered from every rank's shards."""
    import logging

    from deepspeed.utils import logger as ds_logger
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    if any(checkpoint.glob("*zero_pp_rank_*_optim_states.pt")):  # ZeRO stages 1-3
        level = ds_logger.level
        ds_logger.setLevel(logging.WARNING)
        try:
            with weights_only_loads(f"checkpoint {checkpoint}"):  # DeepSpeed's loads would unpickle
                return get_fp32_state_dict_from_zero_checkpoint(str(checkpoint.parent), tag=checkpoint.name)
        finally:
            ds_logger.setLevel(level)
    states = checkpoint / "mp_rank_00_model_states.pt"
    if not states.is_file():
        raise UserError(f"checkpoint {checkpoint} has no model states", "it is damaged: export an earlier checkpoint")
    return {k: v.float() for k, v in torch.load(states, map_location="cpu", weights_only=True)["module"].items()}


def parameter_aliases(module: torch.nn.Module) -> dict[str, set[str]]:
    """Each parameter name -> the other names of the same Parameter in `module`."""
    names: dict[int, list[str]] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    return {name: set(group) - {name} for group in names.values() for name in group}


EXPORT_MARKER = "fast_electra_export.json"  # names the files an export wrote: only such a directory is ever replaced


def check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """OUT_DIR must be absent or empty; with `overwrite`, it may also be an earlier export of this
    project holding nothing but the files that export wrote. Anything else is the user's: refuse."""
    if not out_dir.exists() and not out_dir.is_symlink():
        return
    if out_dir.is_symlink() or not out_dir.is_dir():
        raise UserError(f"export target {out_dir} exists and is not a directory", "choose an absent or empty directory")
    present = {str(p.relative_to(out_dir)) for p in out_dir.rglob("*") if not p.is_dir()}
    if not present:
        return
    marker = out_dir / EXPORT_MARKER
    if not overwrite:
        hint = "pass --overwrite to replace that earlier export" if marker.is_file() else "choose an absent or empty directory"
        raise UserError(f"export target {out_dir} is not empty ({len(present)} files)", hint)
    try:
        written = set(json.loads(marker.read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"export target {out_dir} is not an earlier export of fast-electra (no readable {EXPORT_MARKER}); --overwrite replaces only those",
                        "choose an absent or empty directory") from None
    foreign = sorted(present - written - {EXPORT_MARKER})
    if foreign:
        raise UserError(f"export target {out_dir} holds files an export did not write ({', '.join(foreign[:3])}); --overwrite replaces only an earlier export",
                        "move those files away or choose another directory")


def install_export(tmp: Path, out_dir: Path, overwrite: bool) -> None:
    """Move the finished export in `tmp` to `out_dir` by renames: a reader sees the old export or the new one, never half of one."""
    check_out_dir(out_dir, overwrite)  # again: the directory may have changed while the models were written
    files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if not p.is_dir())
    (tmp / EXPORT_MARKER).write_text(json.dumps({"files": files}, indent=1) + "\n")
    if not out_dir.exists():
        os.replace(tmp, out_dir)
    elif not any(out_dir.iterdir()):
        os.replace(tmp, out_dir)  # rename(2) replaces an empty directory
    else:  # an earlier export (checked above): swap, then remove the old one
        old = Path(tempfile.mkdtemp(prefix=temp_name(out_dir, "old") + "-", dir=out_dir.parent))
        os.replace(out_dir, old / "export")
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)


def export(source: str | Path, out_dir: str | Path, verify: bool = True, overwrite: bool = False) -> dict[str, float]:
    """Write each Hugging Face model of the checkpoint's method to OUT_DIR (or OUT_DIR/<name>).
    OUT_DIR must be absent or empty, or with `overwrite` an earlier export. Returns, when the
    checkpoint carries probe logits of the trained engine, the largest absolute difference of the
    exported models' logits from them."""
    out_dir = Path(out_dir)
    if not Path(source).exists():
        raise UserError(f"export source {source} does not exist", "pass a run directory (train.out_dir) or one of its checkpoints/step_* directories")
    check_out_dir(out_dir, overwrite)  # before the work
    check_writable(out_dir, "export target")
    clean_orphans(out_dir, ("export", "old"))  # left by an export killed before it finished
    checkpoint = ckpt.resolve_checkpoint(source)
    run_dir = checkpoint.parent.parent
    for name in ("config.yaml", "tokens.json", "tokenizer"):
        if not (run_dir / name).exists():
            raise UserError(f"run directory {run_dir} lacks {name}", "export a checkpoint inside the run directory train.py wrote")
    config = load_config([str(run_dir / "config.yaml")])
    tokens = TokenInfo(**json.loads((run_dir / "tokens.json").read_text()))
    method = METHODS[config.method](config, tokens, torch.device("cpu"))
    module = method.build_model(None)
    aliases = parameter_aliases(module)
    state = consolidated_state_dict(checkpoint)
    broken = [name for name, tensor in state.items() if torch.is_tensor(tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if broken:  # a diverged run's checkpoint (one written before the divergence guard, or by another tool)
        raise UserError(f"checkpoint {checkpoint} holds non-finite weights ({len(broken)} tensors, e.g. {broken[0]}): the run diverged before it",
                        "export an earlier checkpoint (fast-electra export RUN/checkpoints/step_N OUT)")
    missing, unexpected = module.load_state_dict(state, strict=False)
    # A tied or shared Parameter (an output layer tied to the word embeddings, a generator sharing the
    # main model's embeddings) is one tensor under several names: loaded when any of its names was.
    tied = {name for name in missing if aliases.get(name, set()) & set(state)}
    if set(missing) - tied or unexpected:
        raise UserError(f"checkpoint {checkpoint} does not fit method {config.method} (missing {sorted(set(missing) - tied)[:3]}, unexpected {sorted(unexpected)[:3]})", "export with the run directory that wrote it")
    module.eval()
    tokenizer = load_tokenizer(str(run_dir / "tokenizer"))

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=temp_name(out_dir, "export") + "-", dir=out_dir.parent))  # ours alone: no user path is reused
    umask = os.umask(0o022)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would make the export private
    try:
        exports = method.exports(module)
        for name, model in exports.items():
            target = tmp / name if name else tmp
            model.save_pretrained(target, safe_serialization=True)
            finish_model_dir(target, model, tokenizer, run_dir, checkpoint)  # tokenizer with the length limit, README.md model card
        install_export(tmp, out_dir, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # left only when something failed

    differences = {}
    probe_file = checkpoint / "probe.pt"
    if verify and probe_file.is_file():
        probe = torch.load(probe_file, weights_only=True)
        for name, model in exports.items():
            with torch.no_grad():
                logits = model(input_ids=probe["input_ids"], attention_mask=probe["attention_mask"]).logits
            differences[name or "model"] = (logits.float() - probe["logits"][name]).abs().max().item()
    return differences


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="fast-electra export", description=__doc__)
    parser.add_argument("source", help="a run directory (its latest complete checkpoint) or a checkpoints/step_* directory")
    parser.add_argument("out_dir", help="where to write the Hugging Face model directory (absent or empty)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it holds an earlier export (and nothing else)")
    args = parser.parse_args(argv)
    with writing_to(args.out_dir):
        differences = export(args.source, args.out_dir, overwrite=args.overwrite)
    check = ", ".join(f"{name}: max |logit - engine| = {diff:.3g}" for name, diff in differences.items())
    print(f"exported {args.source} -> {args.out_dir}" + (f" ({check})" if check else ""))
    return 0
