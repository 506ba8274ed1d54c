"""`method=electra` (generator and discriminator trained jointly in one ZeRO-3 engine) on 2 CPU ranks
through the deepspeed launcher, and what switching `method` keeps the same: checkpoint layout and the
export command."""
import json
from pathlib import Path

import pytest
import torch

from tests.helpers import common, launch, metrics, run_cli

pytestmark = pytest.mark.integration

STEPS = 30


@pytest.fixture(scope="module")
def electra_run(prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("electra")
    launch(common(prepared, out, "method=electra", f"train.steps={STEPS}", "train.save_every=10"))  # keeps steps 20 and 30
    return out


@pytest.fixture(scope="module")
def mlm_run(prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("mlm")
    launch(common(prepared, out, "method=mlm", "train.steps=4"))
    return out


def test_both_losses_fall_and_every_metric_is_logged(electra_run):
    records = metrics(electra_run)
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    for key in ("loss", "mlm_loss", "mlm_acc", "rtd_loss", "rtd_acc", "rtd_acc_replaced", "rtd_acc_original",
                "replaced_frac", "tflops_per_s", "peak_memory_gb"):
        assert key in records[0], key
    for key in ("mlm_loss", "rtd_loss", "loss"):
        last = sum(r[key] for r in records[-3:]) / 3
        assert last < records[0][key] * 0.97, (key, records[0][key], last)
    assert records[0]["loss"] == pytest.approx(records[0]["mlm_loss"] + 50 * records[0]["rtd_loss"], rel=1e-3)
    assert 0 < records[0]["replaced_frac"] <= 0.16


def test_zero3_partitions_generator_and_discriminator_together(electra_run):
    from fast_electra_ds.config.run_config import load_config
    from fast_electra_ds.methods import METHODS, TokenInfo

    config = load_config([str(electra_run / "config.yaml")])
    tokens = TokenInfo(**json.loads((electra_run / "tokens.json").read_text()))
    module = METHODS["electra"](config, tokens, torch.device("cpu")).build_model(None)
    whole = sum(p.numel() for p in module.parameters())  # shared embeddings counted once
    discriminator = sum(p.numel() for p in module.main.parameters())
    ranks = [json.loads((electra_run / "placement" / f"rank{r}.json").read_text()) for r in range(2)]
    for record in ranks:
        assert record["main_total_params"] == whole > discriminator  # the generator is in the engine
        assert abs(record["main_local_params"] / whole - 0.5) < 0.05  # and partitioned with the rest
    assert "aux" not in ranks[0]  # nothing lives outside the engine


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(prepared, electra_run, tmp_path):
    """Also: a damaged newest checkpoint (one bit of rank 1's optimizer shard flipped) is skipped with
    one warning line, and the run resumes exactly from the checkpoint before it."""
    args = common(prepared, tmp_path, "method=electra", f"train.steps={STEPS}")
    launch(args + ["train.stop_after=12", "train.save_every=6"])
    assert [r["step"] for r in metrics(tmp_path)] == list(range(1, 13))
    shard = next((tmp_path / "checkpoints" / "step_00000012").glob("*zero_pp_rank_1_*optim_states.pt"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    output = launch(args + ["--resume"])
    warnings = [line for line in (output.stdout + output.stderr).splitlines() if line.startswith("warning: checkpoint")]
    assert len(warnings) == 1 and "step_00000012 is damaged" in warnings[0] and shard.name in warnings[0], warnings
    assert "resumed from " + str(tmp_path / "checkpoints" / "step_00000006") in output.stdout
    resumed, uninterrupted = metrics(tmp_path), metrics(electra_run)
    assert [r["step"] for r in resumed] == list(range(1, STEPS + 1))
    for a, b in zip(resumed, uninterrupted):
        for key in ("loss", "mlm_loss", "rtd_loss", "replaced_frac"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (a["step"], key, a[key], b[key])


def test_resume_on_another_number_of_ranks_continues_closely(prepared, electra_run, tmp_path):
    """2 -> 1 -> 2 ranks from the unchanged run's step-20 checkpoint: --resume goes through DeepSpeed's
    universal checkpoint, says so in one line, and the continued losses stay close to the unchanged
    run's (not equal: 1 rank sees half the global batch, and no rank's RNG state carries over)."""
    import shutil

    from tests.helpers import run_train_single

    shutil.copytree(electra_run, tmp_path, dirs_exist_ok=True, ignore=shutil.ignore_patterns("hf", "step_00000030", "latest"))
    reference = {r["step"]: r for r in metrics(electra_run)}

    def close_to_reference(steps):
        records = {r["step"]: r for r in metrics(tmp_path)}
        for step in steps:
            for key in ("loss", "mlm_loss", "rtd_loss"):
                assert records[step][key] == pytest.approx(reference[step][key], rel=0.03), (step, key, records[step][key], reference[step][key])

    args = common(prepared, tmp_path, "method=electra", f"train.steps={STEPS}", "train.stop_after=2", "train.export=false")
    one = run_train_single(args + ["--resume"], timeout=600)  # 2 -> 1
    assert one.returncode == 0, one.stderr[-3000:]
    said = [line for line in one.stdout.splitlines() if "was written by 2 ranks, this run has 1" in line]
    assert len(said) == 1 and "universal" in said[0], one.stdout[-3000:]
    close_to_reference([21, 22])
    two = launch(args + ["--resume"])  # 1 -> 2, from the 1-rank checkpoint of step 22
    assert "checkpoint step_00000022 was written by 1 rank, this run has 2" in two.stdout, two.stdout[-3000:]
    assert [r["step"] for r in metrics(tmp_path)] == list(range(1, 25))
    close_to_reference([23, 24])


def test_export_writes_discriminator_and_a_stand_alone_generator(electra_run, tmp_path):
    from transformers import ElectraForMaskedLM, ElectraForPreTraining

    from fast_electra_ds.models.aux import load_frozen_aux

    out = tmp_path / "export"
    result = run_cli(["export", str(electra_run), str(out)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "generator: max |logit - engine|" in result.stdout
    discriminator = ElectraForPreTraining.from_pretrained(out).eval()
    generator, info = ElectraForMaskedLM.from_pretrained(out / "generator", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert generator.config.hidden_size == discriminator.config.hidden_size // 4
    for (name, a), b in zip(discriminator.electra.embeddings.named_parameters(), generator.electra.embeddings.parameters()):
        assert torch.equal(a, b), name  # one set of embeddings, written into both
    probe = torch.load(sorted((electra_run / "checkpoints").glob("step_*"))[-1] / "probe.pt", weights_only=False)
    with torch.no_grad():
        for name, model in (("", discriminator), ("generator", generator.eval())):
            logits = model(input_ids=probe["input_ids"], attention_mask=probe["attention_mask"]).logits
            assert (logits - probe["logits"][name]).abs().max() < 3e-2, name  # bf16 engine vs fp32 export
    # "train the auxiliary model once": the generator is a valid aux.path for method fast
    tokens = json.loads((electra_run / "tokens.json").read_text())
    aux = load_frozen_aux(str(out / "generator"), tokens["vocab_size"], tokens["fingerprint"], "auto", torch.device("cpu"))
    selected = probe["attention_mask"].bool() & (torch.arange(probe["input_ids"].shape[1]) % 7 == 3)
    sampled, _ = aux.propose(probe["input_ids"], probe["attention_mask"], selected, 1.0, torch.Generator().manual_seed(0), [0, 1, 2, 3, 4])
    assert sampled.shape == (selected.sum(),)


def test_deepspeeds_zero_to_fp32_finds_the_latest_checkpoint_and_matches_export(electra_run, tmp_path):
    """DeepSpeed's own tool, as a user runs it, without -t: `latest` names the newest complete checkpoint."""
    import subprocess
    import sys

    from fast_electra_ds.export.exporter import consolidated_state_dict
    from fast_electra_ds.checkpointing import resolve_checkpoint

    root = electra_run / "checkpoints"
    result = subprocess.run([sys.executable, str(root / "zero_to_fp32.py"), str(root), str(tmp_path / "fp32")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    theirs = torch.load(tmp_path / "fp32" / "pytorch_model.bin", weights_only=True)
    ours = consolidated_state_dict(resolve_checkpoint(electra_run))
    assert (root / "latest").read_text() == f"step_{STEPS:08d}" and set(theirs) == set(ours)
    for name, tensor in ours.items():
        assert torch.equal(theirs[name].float(), tensor), name


def test_switching_method_keeps_checkpoint_layout_and_export_command(electra_run, mlm_run, tmp_path):
    from transformers import ElectraForMaskedLM

    def layout(run: Path) -> set[str]:
        step = sorted((run / "checkpoints").glob("step_*"))[-1]
        return {p.name for p in step.iterdir()}

    assert layout(electra_run) == layout(mlm_run)
    assert {p.name for p in electra_run.iterdir()} >= {"config.yaml", "ds_config.json", "tokens.json", "tokenizer", "metrics.jsonl",
                                                        "placement", "checkpoints", "hf"}
    assert {p.name for p in mlm_run.iterdir()} == {p.name for p in electra_run.iterdir()}
    result = run_cli(["export", str(mlm_run), str(tmp_path / "mlm")])
    assert result.returncode == 0, result.stderr[-3000:]
    model = ElectraForMaskedLM.from_pretrained(tmp_path / "mlm")
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2  # the main model's size
    assert not (tmp_path / "mlm" / "generator").exists()
    records = metrics(mlm_run)
    assert records[-1]["mlm_loss"] < records[0]["mlm_loss"]
