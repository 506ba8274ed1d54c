"""Replacements made ahead of time, end to end: `fast-electra replacements` on 1 and 2 ranks, then
method fast with aux.replacements=DIR (no aux loaded). With an fp32 aux, the offline path's batches,
losses and validation are the online path's (data.corruption_rng=sample); a run resumed on another
number of ranks sees the same data and masks."""
import json

import pytest
import torch

from tests.helpers import ROOT, common, launch, metrics, run_replacements, run_train_single

pytestmark = pytest.mark.integration


def fast_args(prepared, out_dir, *extra):
    return common(prepared, out_dir, "method=fast", "data.corruption_rng=sample", "train.steps=4", "train.export=false", *extra)


def pass_args(prepared, aux, replacements, *extra):
    """A pass takes the training's arguments; train.out_dir is not used."""
    return [*fast_args(prepared, "unused", f"aux.path={aux}", "aux.dtype=fp32", f"aux.replacements={replacements}", *extra), "--shard-steps", "1"]


@pytest.fixture(scope="module")
def aux(tmp_path_factory):
    from transformers import ElectraForMaskedLM

    from tests.helpers import tiny_electra_config

    path = tmp_path_factory.mktemp("aux") / "aux"
    torch.manual_seed(0)
    ElectraForMaskedLM(tiny_electra_config(2000)).save_pretrained(path)
    return path


def online_and_offline_methods(prepared, aux, replacements):
    """Method fast twice on the prepared corpus: online (the fp32 aux) and offline (the pass)."""
    from fast_electra_ds.config.run_config import load_config
    from fast_electra_ds.data.phases import PhasedData
    from fast_electra_ds.data.tokenizer import load_tokenizer
    from fast_electra_ds.methods import METHODS, TokenInfo

    overrides = [a for a in fast_args(prepared, "unused") if "=" in a and not a.startswith("-")]
    data = PhasedData(prepared["data"], load_config([str(ROOT / "configs/tiny.yaml")], overrides).seq_len_phases(), 256,
                      tokenizer=load_tokenizer(prepared["tokenizer"]))
    tokens = TokenInfo.of(data.final)
    methods = []
    for extra in ([f"aux.path={aux}", "aux.dtype=fp32"], [f"aux.replacements={replacements}"]):
        method = METHODS["fast"](load_config([str(ROOT / "configs/tiny.yaml")], overrides + extra), tokens, torch.device("cpu"))
        method.setup()
        methods.append(method)
    return data, methods


def test_offline_path_equals_the_online_path_single_process(prepared, aux, tmp_path):
    from fast_electra_ds.methods import StepContext
    from fast_electra_ds.replacements import planned_batch

    replacements = tmp_path / "replacements"
    made = run_replacements(pass_args(prepared, aux, replacements))
    assert made.returncode == 0, made.stderr[-3000:]
    assert "tokens/s" in made.stdout and "bytes per token" in made.stdout
    manifest = json.loads((replacements / "manifest.json").read_text())
    assert manifest["complete"] and manifest["global_batch"] == 8 and manifest["steps"] == 4 and manifest["bytes_per_token"] > 0

    data, (online, offline) = online_and_offline_methods(prepared, aux, replacements)
    readers = {}
    for position in range(0, 16, 8):  # the first two steps' micro-batches
        step, batch = planned_batch(data, readers, position, 8, 8, seed=1234)
        ctx = StepContext(step, step / 4, torch.Generator(), list(range(position, position + 8)))
        want, got = online.prepare_batch(batch, ctx)[0], offline.prepare_batch(batch, ctx)[0]
        assert torch.equal(want["input_ids"], got["input_ids"]) and torch.equal(want["is_replaced"], got["is_replaced"])
        assert want["is_replaced"].any()

    for name, extra in (("online", [f"aux.path={aux}", "aux.dtype=fp32"]), ("offline", [f"aux.replacements={replacements}"])):
        result = run_train_single(fast_args(prepared, tmp_path / name, *extra))
        assert result.returncode == 0, result.stderr[-3000:]
    online_records, offline_records = metrics(tmp_path / "online"), metrics(tmp_path / "offline")
    assert [r["step"] for r in offline_records] == [1, 2, 3, 4]
    for want, got in zip(online_records, offline_records):
        for key in ("loss", "rtd_loss", "replaced_frac", "temperature", "aux_acc"):
            assert got[key] == want[key], (key, want["step"])
        assert got["aux_ce"] == pytest.approx(want["aux_ce"], rel=1e-6)
    placement = json.loads((tmp_path / "offline" / "placement" / "rank0.json").read_text())
    assert "aux" not in placement  # no aux model on the rank
    assert manifest["validation_steps"] == [4]  # train.eval_every 1000: the last step only
    for key in ("val_loss", "val_rtd_auc", "val_replaced_frac"):  # held-out replacements from the pass too
        assert offline_records[-1][key] == online_records[-1][key], key


def test_two_ranks_make_and_read_a_pass_and_a_resume_on_fewer_ranks_sees_the_same_masks(prepared, aux, tmp_path):
    replacements = tmp_path / "replacements"
    made = run_replacements(pass_args(prepared, aux, replacements), ranks=2)
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
    assert json.loads((replacements / "manifest.json").read_text())["global_batch"] == 16

    # No dropout: its masks come from each rank's torch RNG, which a run on fewer ranks cannot continue.
    launch(fast_args(prepared, tmp_path / "offline", f"aux.replacements={replacements}", "model.dropout=0"))
    online = tmp_path / "online"
    launch(fast_args(prepared, online, f"aux.path={aux}", "aux.dtype=fp32", "train.stop_after=2", "model.dropout=0"))
    resumed = run_train_single(["--resume", *fast_args(prepared, online, f"aux.path={aux}", "aux.dtype=fp32", "model.dropout=0",
                                                      "optim.micro_batch=8", "optim.grad_accum=2")])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    offline_records, online_records = metrics(tmp_path / "offline"), metrics(online)
    assert [r["step"] for r in online_records] == [1, 2, 3, 4]
    for want, got in zip(online_records[:2], offline_records[:2]):  # 2 ranks each: the same batches, the same losses
        assert (got["loss"], got["replaced_frac"]) == (want["loss"], want["replaced_frac"])
    for want, got in zip(online_records[2:], offline_records[2:]):  # 1 rank x 2 micro-batches after the resume
        assert got["replaced_frac"] == want["replaced_frac"] and got["samples"] == want["samples"]
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-4)


def test_a_killed_pass_continues_and_makes_the_same_shards(prepared, aux, tmp_path):
    import numpy as np

    from fast_electra_ds.runtime.temp_dirs import host_hash

    replacements = tmp_path / "replacements"
    assert run_replacements(pass_args(prepared, aux, replacements)).returncode == 0
    first = {key: value for key, value in np.load(replacements / "shard-000002.npz").items()}
    (replacements / "shard-000002.npz").unlink()  # as a pass killed before writing it leaves the directory
    half_written = replacements / f".shard-000002.npz.tmp-999999999-{host_hash()}"
    half_written.write_bytes(b"partial")
    manifest = json.loads((replacements / "manifest.json").read_text())
    (replacements / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    again = run_replacements(pass_args(prepared, aux, replacements))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "1 to make, 4 already written" in again.stdout and not half_written.exists()  # 4 training shards and the evaluation's
    second = np.load(replacements / "shard-000002.npz")
    assert all(np.array_equal(first[key], second[key]) for key in first)
    assert json.loads((replacements / "manifest.json").read_text())["complete"]


def test_bad_pass_arguments_are_one_line(prepared, aux, tmp_path):
    from tests.helpers import assert_user_error

    args = pass_args(prepared, aux, tmp_path / "r")
    assert_user_error(run_replacements([a for a in args if a != "data.corruption_rng=sample"]), "data.corruption_rng=sample")
    assert_user_error(run_replacements([a for a in args if not a.startswith("aux.replacements=")]), "aux.replacements is empty")
    assert_user_error(run_replacements([*args, "method=mlm"]), "method fast")
    assert not (tmp_path / "r").exists()
