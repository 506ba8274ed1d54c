"""The real thing on 2 CPU ranks through the deepspeed launcher, on real text: stage 1 (aux-mlm),
stage 2 (fast) under ZeRO-3, resume, export."""
import csv
import json
import re

import pytest
import torch

from tests.helpers import ROOT, common, launch, metrics, start

pytestmark = pytest.mark.integration

STEPS = 30


@pytest.fixture(scope="module")
def aux_run(prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("aux")
    launch(common(prepared, out, "method=aux-mlm", "train.steps=12"))
    return out


@pytest.fixture(scope="module")
def fast_run(prepared, aux_run, tmp_path_factory):
    """The shipped config plus DeepSpeed's other two monitors, CSV and W&B (offline: cpu_env)."""
    out = tmp_path_factory.mktemp("fast")
    ds_config = json.loads((ROOT / "ds_configs/zero3.json").read_text())
    ds_config.update(csv_monitor={"enabled": True}, wandb={"enabled": True, "project": "fast-electra-test"})
    config_file = tmp_path_factory.mktemp("fast_config") / "ds_config.json"
    config_file.write_text(json.dumps(ds_config))
    result = launch(common(prepared, out, "method=fast", f"aux.path={aux_run / 'hf'}", f"train.steps={STEPS}",
                           "train.eval_every=10", "train.progress=bar", ds_config=config_file))
    return out, result.stdout + result.stderr


def test_aux_stage_trains_and_exports_a_masked_lm(aux_run):
    from transformers import ElectraForMaskedLM

    records = metrics(aux_run)
    assert records[-1]["mlm_loss"] < records[0]["mlm_loss"]
    model = ElectraForMaskedLM.from_pretrained(aux_run / "hf")
    assert model.config.num_hidden_layers == 1  # a third of tiny's 2 layers, rounded


def test_fast_loss_decreases_and_logs_every_field(fast_run):
    run, _ = fast_run
    records = metrics(run)
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    for key in ("loss", "rtd_acc", "rtd_acc_replaced", "rtd_acc_original", "replaced_frac", "aux_acc",
                "temperature", "lr", "tokens_per_s", "tflops_per_s", "peak_memory_gb"):
        assert key in records[0], key
    first, last = records[0]["loss"], sum(r["loss"] for r in records[-3:]) / 3
    assert last < first - 0.05
    # the default curriculum (target): T never below 1, chosen per step to meet a target CE that it logs
    temperatures = [r["temperature"] for r in records]
    assert all(t >= 1.0 for t in temperatures) and temperatures[-1] <= temperatures[0]
    assert all("aux_target_ce" in r and "aux_ce" in r for r in records)
    assert 0 < records[0]["replaced_frac"] <= 0.16  # at most the 15% selected, minus samples equal to the original


def test_learning_metrics_validation_and_every_monitor_from_two_ranks(fast_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, output = fast_run
    records = metrics(run)
    for key in ("rtd_auc", "rtd_prior_gap", "rtd_context_gain", "rtd_precision", "rtd_recall"):
        assert all(key in r for r in records), key
    assert 0.0 <= records[-1]["rtd_auc"] <= 1.0
    evaluated = [r for r in records if "val_rtd_loss" in r]
    assert [r["step"] for r in evaluated] == [10, 20, 30]
    for key in ("val_rtd_auc", "val_rtd_prior_gap", "val_rtd_context_gain", "val_aux_acc"):
        assert key in evaluated[-1], key
    assert evaluated[-1]["val_rtd_loss"] < evaluated[0]["val_rtd_loss"]

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"train/loss", "train/rtd_auc", "train/rtd_context_gain", "train/temperature", "val/rtd_auc", "val/rtd_loss"} <= set(scalars)
    loss = events.Scalars("train/loss")  # x axis: samples, as DeepSpeed's own events
    assert [e.step for e in loss] == [r["samples"] for r in records] == [16 * r["step"] for r in records]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in records], rel=1e-6)
    assert [e.value for e in events.Scalars("train/step")] == [r["step"] for r in records]
    assert [e.step for e in events.Scalars("val/rtd_auc")] == [160, 320, 480]

    # DeepSpeed's CSV monitor: one file per scalar, the same values
    with (run / "csv_monitor" / "train_loss.csv").open() as rows:
        logged = list(csv.DictReader(rows))
    assert [int(r["step"]) for r in logged] == [r["samples"] for r in records]
    assert [float(r["loss"]) for r in logged] == pytest.approx([r["loss"] for r in records], rel=1e-6)
    assert (run / "csv_monitor" / "val_rtd_context_gain.csv").read_text().count("\n") == 1 + len(evaluated)
    # W&B offline (no network): the run's record file names our scalars (its format has no public reader)
    [wandb_run] = (run / "wandb").glob("offline-run-*/run-*.wandb")
    recorded = wandb_run.read_bytes()
    assert recorded.startswith(b":W&B") and recorded.count(b"train/rtd_context_gain") >= STEPS and b"val/rtd_auc" in recorded

    # rank 0's tqdm bar: step/total [elapsed<eta, rate]
    assert re.search(rf"{STEPS}/{STEPS} \[\d+:\d\d<00:00, +[\d.]+(step/s|s/step)", output), output[-2000:]


def test_zero3_partitions_main_model_and_aux_stays_frozen_whole(fast_run):
    run, _ = fast_run
    ranks = [json.loads((run / "placement" / f"rank{r}.json").read_text()) for r in range(2)]
    total = ranks[0]["main_total_params"]
    for record in ranks:
        assert record["world_size"] == 2
        assert abs(record["main_local_params"] / total - 0.5) < 0.05  # each rank holds about half
        # The optimizer holds this rank's partition of the main model and nothing of the aux model.
        assert record["main_local_params"] <= record["optimizer_params"] <= record["main_local_params"] * 1.01
        aux = record["aux"]
        assert aux["requires_grad"] is False and aux["in_engine"] is False and aux["partitioned"] is False
        assert aux["training_mode"] is False and aux["dtypes"] == ["torch.bfloat16"]
        assert aux["param_bytes"] == aux["params"] * 2
    assert ranks[0]["aux"]["params"] == ranks[1]["aux"]["params"]  # whole on every rank


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(prepared, aux_run, fast_run, tmp_path):
    run, _ = fast_run
    args = common(prepared, tmp_path, "method=fast", f"aux.path={aux_run / 'hf'}", f"train.steps={STEPS}")
    launch(args + ["train.stop_after=12"])
    assert [r["step"] for r in metrics(tmp_path)] == list(range(1, 13))
    launch(args + ["--resume"])
    resumed, uninterrupted = metrics(tmp_path), metrics(run)
    assert [r["step"] for r in resumed] == list(range(1, STEPS + 1))
    for a, b in zip(resumed, uninterrupted):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6), (a["step"], a["loss"], b["loss"])
    # validation uses fixed masks and samples: the same model gives the same validation metrics
    assert resumed[-1]["val_rtd_loss"] == pytest.approx(uninterrupted[-1]["val_rtd_loss"], rel=1e-5)
    assert resumed[-1]["val_rtd_context_gain"] == pytest.approx(uninterrupted[-1]["val_rtd_context_gain"], rel=1e-4, abs=1e-6)


def test_export_loads_in_transformers_and_matches_the_engine(fast_run):
    from transformers import AutoTokenizer, ElectraForPreTraining

    run, stdout = fast_run
    model = ElectraForPreTraining.from_pretrained(run / "hf").eval()
    tokenizer = AutoTokenizer.from_pretrained(run / "hf")
    assert tokenizer.mask_token == "[MASK]"
    probe = torch.load(sorted((run / "checkpoints").glob("step_*"))[-1] / "probe.pt", weights_only=False)
    with torch.no_grad():
        logits = model(input_ids=probe["input_ids"], attention_mask=probe["attention_mask"]).logits
    engine_logits = probe["logits"][""]
    assert logits.shape == engine_logits.shape
    # The engine computes in bf16 from the fp32 master weights the export holds: bf16 rounding only.
    assert (logits - engine_logits).abs().max() < 1e-2


def test_killed_rank_gives_one_line_error_and_resumable_checkpoints(prepared, aux_run, tmp_path):
    import subprocess
    import time

    from fast_electra_ds.checkpointing import resolve_checkpoint

    args = common(prepared, tmp_path, "method=fast", f"aux.path={aux_run / 'hf'}", "train.steps=100000", "train.save_every=3",
                  "train.keep_last=2")
    job = start(args)
    try:
        deadline = time.time() + 240
        while not list((tmp_path / "checkpoints").glob("step_*/COMPLETE")) and time.time() < deadline:
            time.sleep(0.5)
        assert job.poll() is None, "training ended before a checkpoint was written"
        rank1 = subprocess.run(["pgrep", "-f", f"local_rank=1 .*train.out_dir={tmp_path}"], capture_output=True, text=True).stdout.split()
        assert rank1, "rank 1 not found"
        subprocess.run(["kill", "-9", *rank1])
        output, _ = job.communicate(timeout=120)
    finally:
        job.kill()
    assert job.returncode != 0
    errors = [line for line in output.splitlines() if "error: another rank of this job stopped" in line]
    assert len(errors) == 1 and "--resume" in errors[0], output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    latest = resolve_checkpoint(tmp_path)  # only complete checkpoints count
    launch(args[:-3] + [f"train.steps={int(latest.name.split('_')[1]) + 2}", "--resume"])
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])["step"] == int(latest.name.split("_")[1]) + 2
