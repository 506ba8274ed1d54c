"""Config merging and validation, DeepSpeed batch arithmetic, checkpoint discovery."""
import pytest

from fast_electra_ds import checkpointing as ckpt
from fast_electra_ds.config.run_config import RunConfig, load_config
from fast_electra_ds.config.validate import validate_config
from fast_electra_ds.errors import UserError
from fast_electra_ds.models.encoder import scaled_sizes
from fast_electra_ds.config.ds_config import resolve_ds_config


def test_yaml_then_overrides(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("model:\n  preset: base\ntrain:\n  steps: 7\n")
    config = load_config([str(preset)], ["train.steps=9", "curriculum.t0=3", "model.compile=true"])
    assert config.model.preset == "base" and config.train.steps == 9
    assert config.curriculum.t0 == 3.0 and config.model.compile is True
    assert config.model.sizes()["hidden_size"] == 768


def test_override_values_take_the_field_type():
    config = load_config([], ["train.out_dir=off", "aux.path=null", "model.dropout=0", "train.export=no"])
    assert config.train.out_dir == "off" and config.aux.path is None
    assert config.model.dropout == 0.0 and config.train.export is False


@pytest.mark.parametrize("override, fragment", [
    ("train.stpes=3", "'train.stpes'"),
    ("nonsense.x=1", "'nonsense'"),
    ("train.steps=many", "not a int"),
    ("train.steps", "section.key=value"),
])
def test_bad_overrides_name_the_problem(override, fragment):
    with pytest.raises(UserError, match=fragment):
        load_config([], [override])


def test_unknown_preset():
    with pytest.raises(UserError, match="huge"):
        load_config([], ["model.preset=huge"]).model.sizes()


def test_aux_sizes_as_fractions_of_the_main_model():
    base = RunConfig().model
    base.preset = "base"
    shallow = scaled_sizes(base.sizes(), 1 / 3, 1.0)  # Fast-ELECTRA / METRO: 4 of 12 layers, full width
    assert shallow["num_hidden_layers"] == 4 and shallow["hidden_size"] == 768
    narrow = scaled_sizes(base.sizes(), 1.0, 1 / 3)  # ELECTRA-Base's generator: hidden 256, 12 layers
    assert narrow["hidden_size"] == 256 and narrow["num_hidden_layers"] == 12 and narrow["num_attention_heads"] == 4


def test_ds_batch_arithmetic():
    config = RunConfig()
    ds = resolve_ds_config({"train_batch_size": 32, "gradient_accumulation_steps": 2}, 4, config, on_cuda=False)
    assert ds["train_micro_batch_size_per_gpu"] == 4
    ds = resolve_ds_config({"train_micro_batch_size_per_gpu": 8}, 2, config, on_cuda=False)
    assert ds["train_batch_size"] == 16 and ds["gradient_accumulation_steps"] == 1
    with pytest.raises(UserError, match="inconsistent batch sizes"):
        resolve_ds_config({"train_micro_batch_size_per_gpu": 8, "train_batch_size": 24}, 2, config, on_cuda=False)
    with pytest.raises(UserError, match="not divisible"):
        resolve_ds_config({"train_batch_size": 30, "gradient_accumulation_steps": 4}, 2, config, on_cuda=False)


def test_adam_choice_follows_the_device_with_override():
    config = RunConfig()
    ds = {"train_micro_batch_size_per_gpu": 1, "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}},
          "scheduler": {"type": "WarmupDecayLR", "params": {"total_num_steps": "auto", "warmup_num_steps": "auto"}}}
    assert resolve_ds_config(ds, 1, config, on_cuda=False)["optimizer"]["params"]["torch_adam"] is True
    config.train.fused_adam = "true"  # DeepSpeed's FusedAdam; auto picks it only where prebuilt (tests/unit/test_device.py)
    assert resolve_ds_config(ds, 1, config, on_cuda=True)["optimizer"]["params"]["torch_adam"] is False
    config.train.fused_adam = "false"
    resolved = resolve_ds_config(ds, 1, config, on_cuda=True)
    assert resolved["optimizer"]["params"]["torch_adam"] is True and resolved["optimizer"]["params"]["fused"] is True
    assert resolved["scheduler"]["params"]["total_num_steps"] == config.train.steps
    assert "torch_adam" not in ds["optimizer"]["params"]  # the user's dict is left alone


def test_incomplete_checkpoint_is_never_the_latest(tmp_path):
    root = ckpt.checkpoint_root(tmp_path)
    for step, complete in ((10, True), (20, True), (30, False)):
        (root / ckpt.tag_for(step)).mkdir(parents=True)
        if complete:
            (root / ckpt.tag_for(step) / ckpt.TRAINER_STATE).write_text("{}")
            (root / ckpt.tag_for(step) / ckpt.COMPLETE).write_text(str(step))
    assert ckpt.resolve_checkpoint(tmp_path).name == ckpt.tag_for(20)
    with pytest.raises(UserError, match="incomplete"):
        ckpt.resolve_checkpoint(root / ckpt.tag_for(30))
    with pytest.raises(UserError, match="no complete checkpoint"):
        ckpt.resolve_checkpoint(tmp_path / "elsewhere")


def valid_config() -> RunConfig:
    return load_config(["tiny"], ["data.path=shards", "data.tokenizer=tokenizer", "method=electra"])


@pytest.mark.parametrize("override, message", [
    ("data.path=", "data.path is empty"),
    ("data.tokenizer=", "data.tokenizer is empty"),
    ("data.seq_len=4096", "data.seq_len 4096 exceeds model.max_position_embeddings 128"),
    ("method=nope", "unknown method 'nope'"),
])
def test_the_whole_config_is_checked_before_anything_starts(override, message):
    validate_config(valid_config(), ["electra", "fast"])
    config = load_config(["tiny"], ["data.path=shards", "data.tokenizer=tokenizer", "method=electra", override])
    with pytest.raises(UserError, match=message):
        validate_config(config, ["electra", "fast"])


def test_preflight_catches_what_the_trainer_caught_after_the_process_group(tmp_path):
    import subprocess
    import sys

    from tests.helpers import ROOT, assert_user_error, cpu_env

    result = subprocess.run([sys.executable, str(ROOT / "launcher/preflight.py"), "--ds_config", "zero3", "--config", "tiny",
                             "data.path=shards", "data.tokenizer=tokenizer", f"train.out_dir={tmp_path}", "method=nope"],
                            cwd=tmp_path, env=cpu_env(), capture_output=True, text=True, timeout=300)
    assert_user_error(result, "unknown method 'nope'", "fast")
