"""Checkpoints verify themselves: manifests with size and CRC-32 of every file, `--resume`
falling back from a damaged checkpoint to the newest intact one with one warning line, re-saves that
swap rather than delete, RNG state without pickle, disk-full and missing-RNG errors in one line.
The DeepSpeed engine is stood in for by one that writes files the way it names them."""
import json
import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from fast_electra_ds import checkpointing as ckpt
from fast_electra_ds.checkpointing import rng
from fast_electra_ds.checkpointing import save as saving
from fast_electra_ds.errors import UserError
from tests.helpers import ROOT


pytestmark = pytest.mark.usefixtures("world_of_one")


class FakeEngine:
    """Writes and reads a checkpoint's files under DeepSpeed's names."""

    def __init__(self):
        self.module = torch.nn.Linear(64, 64)
        self.fail_with: Exception | None = None

    def save_checkpoint(self, save_dir, tag, client_state, save_latest):
        assert save_latest is False
        directory = Path(save_dir) / tag
        directory.mkdir(parents=True, exist_ok=True)
        torch.save({"module": self.module.state_dict(), "trainer": client_state["trainer"]}, directory / "zero_pp_rank_0_mp_rank_00_model_states.pt")
        if self.fail_with is not None:
            raise self.fail_with
        torch.save({"moments": torch.randn(256)}, directory / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt")

    def load_checkpoint(self, load_dir, tag):
        states = torch.load(Path(load_dir) / tag / "zero_pp_rank_0_mp_rank_00_model_states.pt", weights_only=True)
        self.module.load_state_dict(states["module"])
        return str(Path(load_dir) / tag), {"trainer": states["trainer"]}


def save(engine, run, step, keep_last=5):
    return ckpt.save_checkpoint(engine, run, step, {"step": step, "consumed_samples": step * 8, "method": "electra"}, keep_last)


@pytest.fixture
def run(tmp_path):
    engine = FakeEngine()
    for step in (3, 6, 9):
        save(engine, tmp_path, step)
    return tmp_path, engine


def test_each_checkpoint_has_manifests_a_complete_marker_and_deepspeeds_latest(run):
    run, _ = run
    root = ckpt.checkpoint_root(run)
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_00000003", "step_00000006", "step_00000009"]
    assert (root / "latest").read_text() == "step_00000009"
    newest = root / "step_00000009"
    manifest = json.loads((newest / "manifest_rank0.json").read_text())["files"]
    assert set(manifest) == {"zero_pp_rank_0_mp_rank_00_model_states.pt", "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt",
                             "rng_state_rank0.pt", "trainer_state.json"}
    assert manifest["trainer_state.json"]["size"] == (newest / "trainer_state.json").stat().st_size
    assert ckpt.damage(newest) is None and ckpt.resolve_checkpoint(run) == newest


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_a_bit(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x04
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name, harm, said", [
    ("bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt", truncate, "bytes"),
    ("bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt", flip_a_bit, "checksum"),
    ("zero_pp_rank_0_mp_rank_00_model_states.pt", lambda p: p.unlink(), "missing"),
    ("trainer_state.json", truncate, "not valid JSON"),
    ("manifest_rank0.json", lambda p: p.unlink(), "manifest_rank0.json"),
    ("rng_state_rank0.pt", lambda p: p.unlink(), "missing"),
])
def test_resume_skips_a_damaged_newest_checkpoint_with_one_line(run, capsys, name, harm, said):
    run, _ = run
    newest = ckpt.checkpoint_root(run) / "step_00000009"
    harm(newest / name)
    assert ckpt.resolve_checkpoint(run, all_ranks=True).name == "step_00000006"  # the trainer's way: a collective
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "step_00000009 is damaged" in warnings[0] and name in warnings[0] and said in warnings[0], warnings
    with pytest.raises(UserError, match=f"damaged: {name}"):  # named explicitly: no silent substitute
        ckpt.resolve_checkpoint(newest)


def test_several_damaged_checkpoints_are_named_in_one_line(run, capsys):
    run, _ = run
    root = ckpt.checkpoint_root(run)
    truncate(root / "step_00000009" / "trainer_state.json")
    flip_a_bit(root / "step_00000006" / "zero_pp_rank_0_mp_rank_00_model_states.pt")
    assert ckpt.resolve_checkpoint(run).name == "step_00000003"
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "step_00000009 is damaged (trainer_state.json" in warnings[0], warnings
    assert "step_00000006 is damaged (zero_pp_rank_0_mp_rank_00_model_states.pt" in warnings[0], warnings


def test_no_intact_checkpoint_is_one_error(tmp_path):
    engine = FakeEngine()
    save(engine, tmp_path, 3)
    truncate(ckpt.checkpoint_root(tmp_path) / "step_00000003" / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt")
    with pytest.raises(UserError, match="no intact checkpoint .*step_00000003 is damaged"):
        ckpt.resolve_checkpoint(tmp_path)


def test_missing_rng_state_is_an_error_unless_inexact_resume_is_allowed(tmp_path):
    engine = FakeEngine()
    checkpoint = save(engine, tmp_path, 3)
    (checkpoint / "rng_state_rank0.pt").unlink()
    with pytest.raises(UserError, match="--allow-inexact-resume"):
        ckpt.resolve_checkpoint(tmp_path)
    with pytest.raises(UserError, match="lacks rng_state_rank0.pt.*--allow-inexact-resume"):
        ckpt.load_checkpoint(engine, checkpoint)
    assert ckpt.resolve_checkpoint(tmp_path, inexact=True) == checkpoint
    assert ckpt.load_checkpoint(engine, checkpoint, inexact=True)["step"] == 3


def test_a_resave_of_a_step_never_deletes_the_complete_one_first(run):
    run, engine = run
    root = ckpt.checkpoint_root(run)
    before = (root / "step_00000009" / "zero_pp_rank_0_mp_rank_00_model_states.pt").read_bytes()
    engine.fail_with = KeyboardInterrupt()  # stands for the process dying in the middle of the re-save
    with torch.no_grad():
        engine.module.weight.add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        save(engine, run, 9)
    assert ckpt.resolve_checkpoint(run) == root / "step_00000009"  # still there, still intact
    assert (root / "step_00000009" / "zero_pp_rank_0_mp_rank_00_model_states.pt").read_bytes() == before
    engine.fail_with = None
    save(engine, run, 9)  # the leftover step_00000009.saving is replaced, the swap completes
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["step_00000003", "step_00000006", "step_00000009"]
    assert (root / "step_00000009" / "zero_pp_rank_0_mp_rank_00_model_states.pt").read_bytes() != before
    assert ckpt.damage(root / "step_00000009") is None


def test_a_kill_between_the_two_renames_of_a_swap_keeps_the_step(run):
    run, _ = run
    root = ckpt.checkpoint_root(run)
    (root / "step_00000009").rename(root / "step_00000009.replaced")  # old one moved aside, new one not yet in place
    assert ckpt.resolve_checkpoint(run) == root / "step_00000009.replaced"


def test_keep_last_prunes_older_checkpoints_and_leftovers(tmp_path):
    engine = FakeEngine()
    save(engine, tmp_path, 3)
    root = ckpt.checkpoint_root(tmp_path)
    (root / "step_00000004.saving").mkdir()  # a save that died
    save(engine, tmp_path, 6, keep_last=1)
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["step_00000006"]


def test_disk_full_while_saving_is_one_line_naming_the_step_and_the_intact_checkpoint(run):
    run, engine = run
    engine.fail_with = RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 1280 vs 1174: iostream error")
    with pytest.raises(UserError) as raised:
        save(engine, run, 12)
    message = str(raised.value)
    assert "disk full while saving checkpoint step_00000012" in message and "step_00000009" in message and "--resume" in message
    assert "\n" not in message
    assert not (ckpt.checkpoint_root(run) / "step_00000012.saving").exists()  # the partial save is removed: space back
    assert ckpt.resolve_checkpoint(run).name == "step_00000009"


def test_too_little_free_space_is_refused_before_writing(run, monkeypatch):
    run, engine = run
    usage = shutil.disk_usage(run)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=1000))
    with pytest.raises(UserError, match="not enough free space for checkpoint step_00000012.*MiB free.*step_00000009"):
        save(engine, run, 12)
    assert not list(ckpt.checkpoint_root(run).glob("step_00000012*"))


def test_rng_state_round_trips_without_pickle(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    torch.save(rng.rng_state(), tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    rng.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))  # tensors and plain values only
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_rng_state_of_older_checkpoints_still_loads(tmp_path):
    """Before the tensor format: getstate() tuples and a numpy array, pickled."""
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    torch.save({"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}, tmp_path / "old.pt")
    expected = (random.random(), np.random.rand())
    rng.set_rng_state(rng.load_rng_file(tmp_path / "old.pt"))
    assert (random.random(), np.random.rand()) == expected


def test_the_project_never_unpickles():
    found = subprocess.run(["grep", "-rn", "weights_only=False", str(ROOT / "fast_electra_ds")], capture_output=True, text=True).stdout
    assert found == ""


class Payload:
    """What a hostile checkpoint would hold: unpickling it writes a file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "code ran"))


def test_deepspeeds_own_loads_never_unpickle_a_hostile_checkpoint(tmp_path):
    """export (DeepSpeed's zero_to_fp32 reader) on a checkpoint whose files carry a payload: refused in
    one line, the payload never runs."""
    from fast_electra_ds.export.exporter import consolidated_state_dict

    checkpoint = tmp_path / "checkpoints" / "step_00000001"
    checkpoint.mkdir(parents=True)
    marker = tmp_path / "pwned"
    for name in ("zero_pp_rank_0_mp_rank_00_model_states.pt", "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt"):
        torch.save({"payload": Payload(marker), "module": {}}, checkpoint / name)
    with pytest.raises(UserError, match="is not loaded .unpickling can run code"):
        consolidated_state_dict(checkpoint)
    assert not marker.exists()
    assert torch.load is torch.serialization.load  # put back


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (root only; skipped where mounting is not allowed)."""
    mount = tmp_path / "small_disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)])


def test_a_real_disk_full_while_saving_is_one_line(small_disk, monkeypatch):
    """torch.save's own error on ENOSPC, not a simulated one; the free-space check is bypassed to get there."""
    engine = FakeEngine()
    engine.module = torch.nn.Linear(300, 300)  # 360 KB of weights
    save(engine, small_disk, 1)
    filler = shutil.disk_usage(small_disk).free - 100_000  # the disk fills up (another program's output)
    (small_disk / "filler").write_bytes(b"\0" * filler)
    monkeypatch.setattr(saving, "check_free_space", lambda engine, root, step: None)
    with pytest.raises(UserError) as raised:
        save(engine, small_disk, 2)
    assert "disk full while saving checkpoint step_00000002" in str(raised.value) and "step_00000001" in str(raised.value)
    assert ckpt.resolve_checkpoint(small_disk).name == "step_00000001"
    assert not (ckpt.checkpoint_root(small_disk) / "step_00000002.saving").exists()
