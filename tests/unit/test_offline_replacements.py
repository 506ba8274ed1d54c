"""Replacements made ahead of time (data/replacements.py, fast_electra_ds/replacements.py): what the
pass writes for a micro-batch is what the online path draws, method fast reads it back into the same
batch, and a pass that is not the run's is one line naming the field."""
import json

import numpy as np
import pytest
import torch

from fast_electra_ds.data.replacements import (MANIFEST, ReplacementStore, clean_temp_files, evaluation_steps, first_difference,
                                               read_manifest, shard_name, validation_shard_name, write_manifest)
from fast_electra_ds.errors import UserError
from fast_electra_ds.methods import METHODS, StepContext, TokenInfo
from fast_electra_ds.metrics.validation import validation_key
from fast_electra_ds.replacements import append_batch, new_parts, prepare_output, write_parts
from tests.method_helpers import TOKENS, batch, config, fast_method

SAMPLE = ("data.corruption_rng=sample",)


def make_pass(directory, method, batches, shard_samples):
    """A pass written as `fast-electra replacements` writes it: the online path's propose per micro-batch
    of consecutive positions, `shard_samples` per shard; returns the manifest."""
    micro = len(batches[0]["input_ids"])
    manifest = {**method.planned(shard_samples, micro, 1), "samples": micro * len(batches), "shard_samples": shard_samples,
                "validation_steps": []}
    directory.mkdir()
    write_manifest(directory, manifest)
    per_shard = shard_samples // micro
    for index in range(0, len(batches), per_shard):
        parts = new_parts()
        for number in range(index, index + per_shard):
            positions = list(range(number * micro, (number + 1) * micro))
            append_batch(parts, batches[number]["input_ids"], *method.propose(batches[number], StepContext(0, 0.2, torch.Generator(), positions)))
        write_parts(directory / shard_name(index // per_shard), parts)
    return manifest


def offline_method(directory, *overrides, unigram_entropy=TOKENS.unigram_entropy):
    tokens = TokenInfo(**{**TOKENS.__dict__, "unigram_entropy": unigram_entropy})
    method = METHODS["fast"](config("method=fast", *SAMPLE, f"aux.replacements={directory}", *overrides), tokens, torch.device("cpu"))
    method.setup()
    return method


@pytest.mark.parametrize("kind", ["exp", "target"])
def test_the_offline_batches_are_the_online_ones(tmp_path, kind):
    extra = (f"curriculum.kind={kind}",)
    online = fast_method(*SAMPLE, *extra, unigram_entropy=4.0)
    batches = [batch(rows=4, seed=s) for s in range(4)]
    make_pass(tmp_path / "repl", online, batches, shard_samples=8)
    offline = offline_method(tmp_path / "repl", *extra, unigram_entropy=4.0)
    assert offline.aux is None and offline.frozen_modules() == {}
    for number, data in enumerate(batches):
        ctx = StepContext(0, 0.2, torch.Generator().manual_seed(number), list(range(number * 4, number * 4 + 4)))
        want, want_metrics = online.prepare_batch(data, ctx)
        got, got_metrics = offline.prepare_batch(data, ctx)
        assert want.keys() == got.keys()
        for key in want:
            assert torch.equal(want[key], got[key]), key
        assert want_metrics.keys() == got_metrics.keys()
        for name, (num, den) in want_metrics.items():
            assert (got_metrics[name][0] / got_metrics[name][1]).item() == pytest.approx((num / den).item(), rel=1e-6), name


def test_held_out_samples_are_read_from_their_evaluations_shard(tmp_path):
    """Validation's samples are keyed below zero (metrics/validation.py) and read from the shard of the
    evaluation's step, made at that step's temperature."""
    online = fast_method(*SAMPLE)
    make_pass(tmp_path / "repl", online, [batch(rows=4)], shard_samples=4)
    held_out, keys = batch(rows=3, seed=9), [validation_key(k) for k in range(3)]
    parts = new_parts()
    append_batch(parts, held_out["input_ids"], *online.propose(held_out, StepContext(1, 1.0, torch.Generator(), keys)))
    write_parts(tmp_path / "repl" / validation_shard_name(1), parts)
    offline = offline_method(tmp_path / "repl")
    ctx = StepContext(1, 1.0, torch.Generator().manual_seed(3), keys)
    assert torch.equal(online.prepare_batch(held_out, ctx)[0]["input_ids"], offline.prepare_batch(held_out, ctx)[0]["input_ids"])
    assert evaluation_steps(10, 4) == [4, 8, 10] and evaluation_steps(10, 0) == [10] and evaluation_steps(8, 4) == [4, 8]


def test_a_shard_costs_about_four_bytes_per_selected_token(tmp_path):
    online = fast_method(*SAMPLE)
    batches = [batch(rows=64, length=64, padding=0, seed=s) for s in range(2)]
    make_pass(tmp_path / "repl", online, batches, shard_samples=128)
    size = (tmp_path / "repl" / shard_name(0)).stat().st_size
    selected = 128 * round(0.15 * 62)  # [CLS] and [SEP] are never selected
    overhead = 7 * 300  # the npz's per-array headers
    assert size <= selected * 4 + 128 * 16 + overhead


def test_a_pass_for_another_run_is_one_line_naming_the_field(tmp_path):
    make_pass(tmp_path / "repl", fast_method(*SAMPLE), [batch(rows=4)], shard_samples=4)
    for override, field in [("train.seed=7", "seed"), ("curriculum.span=0.3", "curriculum.span"), ("masking.mask_prob=0.2", "masking.mask_prob"),
                            ("train.steps=50", "steps")]:
        method = offline_method(tmp_path / "repl", override)
        with pytest.raises(UserError, match=rf"made for another run: {field} is"):
            method.build_model({"train_batch_size": 4, "train_micro_batch_size_per_gpu": 4})
    with pytest.raises(UserError, match="global_batch is 4 there, 8 in this run"):
        offline_method(tmp_path / "repl").build_model({"train_batch_size": 8, "train_micro_batch_size_per_gpu": 4})


def test_a_run_longer_than_the_pass_is_refused_before_it_starts(tmp_path):
    make_pass(tmp_path / "repl", fast_method(*SAMPLE, "train.steps=3"), [batch(rows=4, seed=s) for s in range(2)], shard_samples=4)
    with pytest.raises(UserError, match="holds replacements for 8 of the 12 samples"):
        offline_method(tmp_path / "repl", "train.steps=3").build_model({"train_batch_size": 4, "train_micro_batch_size_per_gpu": 4})


def test_replacements_need_sample_indexed_corruption_and_a_pass_directory(tmp_path):
    method = METHODS["fast"](config("method=fast", f"aux.replacements={tmp_path}"), TOKENS, torch.device("cpu"))
    with pytest.raises(UserError, match="data.corruption_rng=sample"):
        method.setup()
    with pytest.raises(UserError, match="has no manifest.json"):
        offline_method(tmp_path)


def test_the_pass_refuses_a_directory_it_did_not_write_and_a_pass_of_another_run(tmp_path):
    manifest = {**fast_method(*SAMPLE).planned(8, 4, 2), "samples": 16, "shard_samples": 8}
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a replacements directory"):
        prepare_output(foreign, manifest)
    assert (foreign / "notes.txt").read_text() == "mine"
    mine = tmp_path / "mine"
    prepare_output(mine, manifest)
    assert read_manifest(mine) == manifest
    prepare_output(mine, manifest)  # the same pass again: continues
    with pytest.raises(UserError, match="seed is 1234 there, 5 here"):
        prepare_output(mine, {**manifest, "seed": 5})
    with pytest.raises(UserError, match="samples is 16 there, 32 here"):
        prepare_output(mine, {**manifest, "samples": 32})


def test_a_killed_writers_temporary_files_are_removed_and_only_those(tmp_path):
    from fast_electra_ds.runtime.temp_dirs import host_hash

    dead = tmp_path / f".{shard_name(3)}.tmp-999999999-{host_hash()}"
    other_host = tmp_path / f".{shard_name(4)}.tmp-999999999-00000000"
    user = tmp_path / "shard-000005.npz.bak"
    for path in (dead, other_host, user):
        path.write_bytes(b"x")
    assert clean_temp_files(tmp_path) == [dead]
    assert other_host.exists() and user.exists()


def test_first_difference_names_the_key_inside_a_section():
    assert first_difference({"masking": {"mask_prob": 0.15}}, {"masking": {"mask_prob": 0.2}}) == ("masking.mask_prob", 0.15, 0.2)
    assert first_difference({"seed": 1}, {"seed": 1}) is None


def test_the_manifest_is_json_with_the_fields_that_fix_a_pass(tmp_path):
    manifest = make_pass(tmp_path / "repl", fast_method(*SAMPLE), [batch(rows=4)], shard_samples=4)
    stored = json.loads((tmp_path / "repl" / MANIFEST).read_text())
    assert stored == manifest
    for field in ("tokenizer", "seed", "steps", "global_batch", "masking", "curriculum", "data"):
        assert field in stored
    arrays = np.load(tmp_path / "repl" / shard_name(0))
    assert arrays["columns"].dtype == np.uint16 and arrays["ids"].dtype == np.uint16 and len(arrays["counts"]) == 4
    assert ReplacementStore(tmp_path / "repl").lookup([2], 0)[0][0].tolist() == arrays["columns"][arrays["counts"][:2].sum():arrays["counts"][:3].sum()].tolist()
