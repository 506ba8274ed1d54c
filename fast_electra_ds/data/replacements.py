"""Replacements made ahead of time (`fast-electra replacements`, docs/offline-replacements.md): for
every sample of a run's planned stream, the positions Fast-ELECTRA's online path selects and the
tokens its sampler draws there, so that training runs no auxiliary model (`aux.replacements=DIR`).

A directory holds `manifest.json` (what fixes the pass: the aux's and tokenizer's fingerprints, seed,
steps, global batch, masking, curriculum, the data's shape, when the run validates) and shards
`shard-NNNNNN.npz`, each the samples of `shard_samples` consecutive stream positions (whole steps), and
`val-SSSSSSSS.npz`, the held-out samples of the evaluation after step S. A shard holds, per sample, the
count of selected positions, the aux's correct argmaxes among them, its micro-batch's temperature,
aux cross-entropy and target cross-entropy (the logged aux metrics); and, per selected position, its
column (uint16) and sampled id (uint16 below 65536 tokens, else uint32): about 4 bytes per selected
token plus 16 per sample, 0.72 bytes per token measured at 15% masking and 128 tokens. Every file is written to a
temporary name beside it and renamed, so a shard is whole or absent and a killed pass continues where
it stopped."""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..runtime.temp_dirs import host_hash, pid_runs, write_atomically

MANIFEST = "manifest.json"
FORMAT = 1
# Fields that must equal the run's, in the order they are checked (the first difference is named).
MATCHED = ("format", "corruption_rng", "tokenizer", "aux", "seed", "steps", "global_batch", "micro_batch", "masking",
           "curriculum", "data", "validation")
REDO = "re-run `fast-electra replacements` with this run's arguments into another aux.replacements directory"


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.npz"


def validation_shard_name(step: int) -> str:
    """The held-out samples' replacements for the evaluation after step `step` (at that step's temperature)."""
    return f"val-{step:08d}.npz"


def evaluation_steps(steps: int, eval_every: int) -> list[int]:
    """The steps after which a run validates (training/trainer.py): every `eval_every` and the last."""
    return sorted({s for s in range(eval_every, steps + 1, eval_every)} | {steps}) if eval_every else [steps]


def model_fingerprint(path: str | os.PathLike) -> str:
    """sha256 over a Hugging Face model directory's config and weight files: the aux that made a pass."""
    directory, digest = Path(path), hashlib.sha256()
    files = sorted(p for p in directory.iterdir() if p.is_file() and (p.name == "config.json" or p.suffix in (".safetensors", ".bin")))
    for file in files:
        digest.update(file.name.encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def clean_temp_files(directory: Path) -> list[Path]:
    """Remove the temporary files of this host's passes that died (their pid no longer runs)."""
    pattern = re.compile(r"\.(?:shard-\d{6}\.npz|val-\d{8}\.npz|manifest\.json)\.tmp-(\d+)-([0-9a-f]{8})")
    removed = []
    for path in directory.iterdir():
        match = pattern.fullmatch(path.name)
        if match and match[2] == host_hash() and not pid_runs(int(match[1])) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    write_atomically(directory / MANIFEST, json.dumps(manifest, indent=1) + "\n")


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    if not path.is_file():
        raise UserError(f"aux.replacements {directory} has no {MANIFEST}: it is not a directory written by `fast-electra replacements`", REDO)
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise UserError(f"{path} is damaged ({err})", REDO) from None


def first_difference(found: dict[str, Any], wanted: dict[str, Any]) -> tuple[str, Any, Any] | None:
    """(field as `name` or `name.key`, the pass's value, the run's) of the first MATCHED field that differs."""
    for name in MATCHED:
        have, want = found.get(name), wanted.get(name)
        if have == want:
            continue
        if isinstance(have, dict) and isinstance(want, dict):
            key = next(k for k in sorted(set(have) | set(want)) if have.get(k) != want.get(k))
            return f"{name}.{key}", have.get(key), want.get(key)
        return name, have, want
    return None


SAMPLE_STATS = ("correct", "temperature", "ce", "target_ce")  # per sample in a shard, beside its counts, columns and ids


def write_shard(path: Path, counts: np.ndarray, columns: np.ndarray, ids: np.ndarray, stats: dict[str, np.ndarray]) -> None:
    arrays = {"counts": counts.astype(np.uint16), "columns": columns.astype(np.uint16),
              "ids": ids.astype(np.uint16 if ids.size == 0 or ids.max() < 65536 else np.uint32),
              **{key: value.astype(np.uint16 if key == "correct" else np.float32) for key, value in stats.items()}}
    write_atomically(path, lambda handle: np.savez(handle, **arrays))


class Shard:
    """One shard read whole (a few MB): per sample, its selected columns and sampled ids."""

    def __init__(self, path: Path):
        with np.load(path) as data:
            self.arrays = {key: data[key] for key in data.files}
        self.starts = np.concatenate([[0], np.cumsum(self.arrays["counts"], dtype=np.int64)])

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.starts[index], self.starts[index + 1]
        return self.arrays["columns"][lo:hi].astype(np.int64), self.arrays["ids"][lo:hi].astype(np.int64)


class ReplacementStore:
    """A finished pass, read by training: `lookup(positions, step)` -> each sample's columns, ids and stats."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise UserError(f"aux.replacements {self.directory} is not a directory", "pass the directory `fast-electra replacements` wrote")
        self.manifest = read_manifest(self.directory)
        self.shard_samples = int(self.manifest["shard_samples"])
        self._cache: dict[str, Shard] = {}

    def check(self, wanted: dict[str, Any], needed_samples: int) -> None:
        """One line for a pass that is not this run's, or that covers fewer samples than it needs."""
        if wanted.get("aux") is None:  # no aux loaded: nothing to compare it with
            wanted = {**wanted, "aux": self.manifest.get("aux")}
        difference = first_difference(self.manifest, wanted)
        if difference is not None:
            field, have, want = difference
            raise UserError(f"aux.replacements {self.directory} was made for another run: {field} is {have!r} there, {want!r} in this run", REDO)
        shards = -(-needed_samples // self.shard_samples)
        missing = [i for i in range(shards) if not (self.directory / shard_name(i)).is_file()]
        unvalidated = [s for s in self.manifest.get("validation_steps", []) if not (self.directory / validation_shard_name(s)).is_file()]
        finish = "re-run the same `fast-electra replacements` command; it continues where it stopped"
        if missing:
            raise UserError(f"aux.replacements {self.directory} holds replacements for {missing[0] * self.shard_samples} of the {needed_samples} "
                            f"samples this run needs ({shard_name(missing[0])} and {len(missing) - 1} more shards missing): the pass did not finish", finish)
        if unvalidated:
            raise UserError(f"aux.replacements {self.directory} lacks the held-out replacements of {len(unvalidated)} evaluations "
                            f"({validation_shard_name(unvalidated[0])} first): the pass did not finish", finish)

    def _shard(self, name: str) -> Shard:
        if name not in self._cache:
            if len(self._cache) >= 3:  # positions come in order: the current shard, the next and a validation one
                self._cache.pop(next(iter(self._cache)))
            self._cache[name] = Shard(self.directory / name)
        return self._cache[name]

    def lookup(self, positions: list[int], step: int) -> tuple[list[np.ndarray], list[np.ndarray], dict[str, np.ndarray]]:
        """(columns per sample, ids per sample, stats: counts, correct, temperature, ce, target_ce per sample)
        at stream `positions`, or at held-out keys below zero (metrics/validation.py) for the evaluation after `step`."""
        columns, ids, stats = [], [], {key: [] for key in ("counts", *SAMPLE_STATS)}
        for position in positions:
            if position < 0:
                shard, local = self._shard(validation_shard_name(step)), -1 - position
            else:
                shard, local = self._shard(shard_name(position // self.shard_samples)), position % self.shard_samples
            sample_columns, sample_ids = shard.sample(local)
            columns.append(sample_columns)
            ids.append(sample_ids)
            for key in stats:
                stats[key].append(shard.arrays[key][local])
        return columns, ids, {key: np.asarray(value) for key, value in stats.items()}


def planned_manifest(config, fingerprint: str, unigram_entropy: float | None, global_batch: int, micro_batch: int, ranks: int,
                     aux: dict[str, str] | None) -> dict[str, Any]:
    """What a pass for `config` (a RunConfig) must have been made with. `aux`: the aux's fingerprint and
    dtype, or None where the run loads no aux (not checked then). The micro batch and, for validation,
    the number of ranks matter only to `target`, whose temperature is chosen per micro-batch."""
    curriculum = config.curriculum
    return {"format": FORMAT, "corruption_rng": config.data.corruption_rng, "tokenizer": fingerprint, "aux": aux,
            "seed": config.train.seed, "steps": config.train.steps, "global_batch": global_batch,
            "micro_batch": micro_batch if curriculum.kind == "target" else None,
            "masking": {key: getattr(config.masking, key) for key in ("mask_prob", "mask_token_prob", "random_token_prob")},
            "curriculum": ({"kind": "exp", "t0": curriculum.t0, "tau": curriculum.tau} if curriculum.kind == "exp"
                           else {"kind": curriculum.kind, "span": curriculum.span}),
            # the corpus: its tokenizer (above) and unigram entropy, a function of every token count
            "data": {"seq_len": config.data.seq_len, "seq_len_schedule": list(config.data.seq_len_schedule),
                     "val_sequences": config.data.val_sequences, "unigram_entropy": unigram_entropy},
            "validation": {"eval_every": config.train.eval_every, "ranks": ranks if curriculum.kind == "target" else None}}
