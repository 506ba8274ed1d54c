"""The launch line as the README writes it (shipped config names, flags and overrides in any order,
`python -m fast_electra_ds.train`) and the optim section written into the DeepSpeed JSON."""
import json
import subprocess
import sys

import pytest

from fast_electra_ds.config.run_config import load_config, load_ds_config
from fast_electra_ds.config.ds_config import resolve_ds_config
from fast_electra_ds.errors import UserError
from fast_electra_ds.train import parse_args
from tests.helpers import ROOT, cpu_env

SHIPPED_JSON = sorted((ROOT / "ds_configs").glob("*.json"))


def resolve(overrides, ds=None, world_size=1):
    config = load_config([str(ROOT / "configs/tiny.yaml")], overrides)
    return resolve_ds_config(ds or load_ds_config(str(ROOT / "ds_configs/zero3.json")), world_size, config, on_cuda=False)


def test_flags_and_overrides_in_any_order():
    args = parse_args(["train.steps=5", "--ds_config", "zero3.json", "optim.lr=1e-4", "--config", "tiny.yaml", "--resume", "train.seed=3"])
    assert (args.ds_config, args.config, args.resume) == ("zero3.json", ["tiny.yaml"], True)
    assert args.overrides == ["train.steps=5", "optim.lr=1e-4", "train.seed=3"]


def test_bare_names_resolve_to_the_shipped_configs_and_a_local_file_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the checkout: only the shipped copies can answer
    shipped = json.loads((ROOT / "ds_configs/zero3.json").read_text())
    assert load_ds_config("zero3.json") == shipped
    assert load_ds_config("zero3") == shipped
    assert load_ds_config("ds_configs/zero3.json") == shipped  # the README's spelling, from any directory
    assert load_config(["tiny.yaml"]).model.preset == "tiny"
    assert load_config(["tiny"]).model.preset == "tiny"
    (tmp_path / "zero3.json").write_text(json.dumps({"train_micro_batch_size_per_gpu": 3}))
    assert load_ds_config("zero3.json") == {"train_micro_batch_size_per_gpu": 3}
    with pytest.raises(UserError, match=r"nope.json not found .*zero2.json, zero3.json"):
        load_ds_config("nope.json")
    with pytest.raises(UserError, match="elsewhere/zero3.json not found"):  # a path with folders is only that path
        load_ds_config("elsewhere/zero3.json")


def test_help_texts_are_titled_and_the_module_runs(tmp_path):
    module = subprocess.run([sys.executable, "-m", "fast_electra_ds.train", "--help"], cwd=tmp_path, env=cpu_env(),
                            capture_output=True, text=True, timeout=60)
    assert module.returncode == 0 and module.stdout.startswith("usage: python -m fast_electra_ds.train"), module.stdout + module.stderr
    assert "--ds_config zero3.json \\\n        --config base.yaml" in module.stdout  # the continuation survives
    cli = subprocess.run([sys.executable, "-m", "fast_electra_ds.cli", "train", "--help"], cwd=tmp_path, env=cpu_env(),
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0 and cli.stdout.startswith("usage: fast-electra train"), cli.stdout + cli.stderr
    missing = subprocess.run([sys.executable, "-m", "fast_electra_ds.train", "train.steps=1"], cwd=tmp_path, env=cpu_env(),
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "--ds_config" in missing.stderr


@pytest.mark.parametrize("path", SHIPPED_JSON, ids=lambda p: p.name)
def test_shipped_configs_warm_up_linearly_to_the_optimizer_lr(path):
    ds = json.loads(path.read_text())
    assert ds["scheduler"]["params"]["warmup_type"] == "linear"  # ELECTRA's warmup; DeepSpeed's default is log
    resolved = resolve(["train.steps=100"], ds)
    assert resolved["scheduler"]["params"]["warmup_max_lr"] == resolved["optimizer"]["params"]["lr"] == ds["optimizer"]["params"]["lr"]
    assert resolved["scheduler"]["params"]["warmup_num_steps"] == 10  # 10% by default


def test_optim_overrides_reach_the_deepspeed_json_and_its_scheduler():
    resolved = resolve(["train.steps=200", "optim.lr=1e-4", "optim.warmup_ratio=0.05", "optim.weight_decay=0",
                        "optim.betas=0.9,0.98", "optim.eps=1e-8", "optim.min_lr=1e-6"])
    assert resolved["optimizer"]["params"] | {"torch_adam": None} == {"lr": 1e-4, "betas": [0.9, 0.98], "eps": 1e-8, "weight_decay": 0.0, "torch_adam": None}
    assert resolved["scheduler"]["params"] == {"warmup_min_lr": 1e-6, "warmup_max_lr": 1e-4, "warmup_num_steps": 10,
                                               "warmup_type": "linear", "total_num_steps": 200}
    assert resolve(["train.steps=200", "optim.warmup_steps=7"])["scheduler"]["params"]["warmup_num_steps"] == 7


def test_the_scheduler_deepspeed_builds_peaks_at_the_overridden_lr():
    import torch
    from deepspeed.runtime.lr_schedules import WarmupDecayLR

    params = resolve(["train.steps=40", "optim.lr=2e-3", "optim.warmup_ratio=0.25"])["scheduler"]["params"]
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=2e-3)
    scheduler = WarmupDecayLR(optimizer, **params)
    rates = []
    for _ in range(40):
        scheduler.step()  # the engine's order: step i's rate is set before its update
        rates.append(scheduler.get_lr()[0])
    assert max(rates) == pytest.approx(2e-3)
    assert rates[5] == pytest.approx(2e-3 * 5 / 10)  # linear warmup over 10 steps


def test_peak_lr_has_one_source_of_truth():
    ds = json.loads((ROOT / "ds_configs/zero3.json").read_text())
    ds["scheduler"]["params"]["warmup_max_lr"] = 1e-3  # the JSON's lr is 5e-4
    with pytest.raises(UserError, match=r"warmup_max_lr 0.001 differs from its optimizer lr 0.0005.*\"auto\""):
        resolve([], ds)
    ds["scheduler"]["params"]["warmup_max_lr"] = ds["optimizer"]["params"]["lr"]  # an old JSON, agreeing
    assert resolve(["optim.lr=3e-4"], ds)["scheduler"]["params"]["warmup_max_lr"] == 3e-4


@pytest.mark.parametrize("overrides, ds_edit, message", [
    (["optim.warmup_ratio=0.1", "optim.warmup_steps=5"], None, "both optim.warmup_ratio and optim.warmup_steps"),
    (["optim.warmup_ratio=1.5"], None, "optim.warmup_ratio is 1.5"),
    (["optim.warmup_steps=0"], None, "optim.warmup_steps is 0"),
    (["train.steps=10", "optim.warmup_steps=20"], None, "exceeds train.steps 10"),
    (["optim.betas=0.9"], None, "not two numbers"),
    (["optim.lr=1e-4"], lambda ds: ds.pop("optimizer"), "no optimizer section"),
    (["optim.warmup_ratio=0.1"], lambda ds: ds.pop("scheduler"), "no scheduler section"),
    (["optim.micro_batch=0"], None, "optim.micro_batch is 0"),
    (["optim.lr=fast"], None, "'optim.lr' has value 'fast', not a float"),
])
def test_optim_mistakes_are_one_line(overrides, ds_edit, message):
    ds = json.loads((ROOT / "ds_configs/zero3.json").read_text())
    if ds_edit:
        ds_edit(ds)
    with pytest.raises(UserError, match=message) as error:
        resolve(overrides, ds)
    assert "\n" not in str(error.value)


def test_batch_sizes_from_the_command_line():
    def batches(overrides, world_size=2):
        ds = resolve(overrides, world_size=world_size)
        return ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"], ds["train_batch_size"]

    assert batches([]) == (8, 1, 16)  # the JSON's micro batch 8
    assert batches(["optim.micro_batch=4"]) == (4, 1, 8)
    assert batches(["optim.grad_accum=3"]) == (8, 3, 48)
    assert batches(["optim.global_batch=64"]) == (8, 4, 64)  # the accumulation follows
    assert batches(["optim.global_batch=64", "optim.grad_accum=2"]) == (16, 2, 64)  # the micro batch follows
    assert batches(["optim.global_batch=64", "optim.micro_batch=16", "optim.grad_accum=2"]) == (16, 2, 64)
    with pytest.raises(UserError, match="inconsistent batch sizes"):
        batches(["optim.global_batch=64", "optim.micro_batch=16", "optim.grad_accum=1"])
    with pytest.raises(UserError, match="inconsistent batch sizes"):
        batches(["optim.global_batch=20"])  # not a multiple of micro 8 x world 2


def test_a_taken_rendezvous_port_is_one_line_naming_a_free_one(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = dict(cpu_env(), RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        result = subprocess.run([sys.executable, "-m", "fast_electra_ds.train", "--ds_config", "zero3", "--config", "tiny", f"train.out_dir={tmp_path}",
                                 f"data.path={tmp_path / 'data'}", f"data.tokenizer={tmp_path / 'tokenizer'}"],  # past the config checks, to the rendezvous
                                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: the rendezvous port {port} (MASTER_PORT) is already in use") and "--master_port" in line


def test_the_launch_line_runs_the_installed_module_where_there_is_no_checkout(monkeypatch, tmp_path):
    from fast_electra_ds.runtime import launch

    assert launch.train_command(["a=1"], ranks=1)[1] == str(launch.TRAIN_SCRIPT)  # the checkout's own train.py
    monkeypatch.setattr(launch, "TRAIN_SCRIPT", tmp_path / "train.py")  # a wheel install: no train.py
    assert launch.train_command(["a=1"], ranks=1)[1:] == ["-m", "fast_electra_ds.train", "a=1"]
    line = launch.train_command(["a=1"], ranks=2)
    assert line[0] == "deepspeed" and line[-3:] == ["--module", "fast_electra_ds.train", "a=1"]
