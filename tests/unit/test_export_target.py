"""`fast-electra export` never deletes a user's directory: it writes only into an absent or empty
directory, and `--overwrite` replaces only an earlier export of this project."""
import json

import pytest

from fast_electra_ds.errors import UserError
from fast_electra_ds.export.exporter import EXPORT_MARKER, check_out_dir, install_export
from tests.helpers import run_cli


def finished_export(path, files=("config.json", "model.safetensors", "generator/config.json")):
    path.mkdir()
    for name in files:
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(name)
    return path


def test_the_repro_a_directory_with_user_notes_is_refused_and_kept(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes").write_text("x\n")
    (tmp_path / "runs" / "X").mkdir(parents=True)  # a source that exists: the target is what is refused
    for extra in ([], ["--overwrite"]):
        result = run_cli(["export", str(tmp_path / "runs" / "X"), str(out), *extra])
        assert result.returncode == 2, result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and str(out) in errors[0] and "Traceback" not in result.stderr, result.stderr
        assert (out / "notes").read_text() == "x\n" and [p.name for p in out.iterdir()] == ["notes"]


def test_absent_or_empty_targets_are_accepted(tmp_path):
    check_out_dir(tmp_path / "absent", overwrite=False)
    (tmp_path / "empty" / "sub").mkdir(parents=True)  # empty folders hold nothing of the user's
    check_out_dir(tmp_path / "empty", overwrite=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="not a directory"):
        check_out_dir(tmp_path / "file", overwrite=True)


def test_install_writes_a_marker_and_overwrite_replaces_only_an_earlier_export(tmp_path):
    out = tmp_path / "hf"
    install_export(finished_export(tmp_path / "new1"), out, overwrite=False)
    assert not (tmp_path / "new1").exists()
    marker = json.loads((out / EXPORT_MARKER).read_text())
    assert sorted(marker["files"]) == ["config.json", "generator/config.json", "model.safetensors"]

    with pytest.raises(UserError, match="--overwrite"):  # an earlier export, but no --overwrite
        check_out_dir(out, overwrite=False)
    install_export(finished_export(tmp_path / "new2", files=("config.json", "model.safetensors")), out, overwrite=True)
    assert sorted(p.name for p in out.rglob("*")) == sorted(["config.json", "model.safetensors", EXPORT_MARKER])
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]  # the old export and the temporary directory are gone

    (out / "my_eval.txt").write_text("mine")  # the user added a file to the export: it is theirs now
    with pytest.raises(UserError, match="my_eval.txt"):
        install_export(finished_export(tmp_path / "new3"), out, overwrite=True)
    assert (out / "my_eval.txt").read_text() == "mine"


def test_overwrite_refuses_a_directory_without_the_marker(tmp_path):
    home = finished_export(tmp_path / "home", files=("config.json", ".bashrc"))
    with pytest.raises(UserError, match="not an earlier export"):
        check_out_dir(home, overwrite=True)
    (home / EXPORT_MARKER).write_text("not json")
    with pytest.raises(UserError, match="not an earlier export"):
        check_out_dir(home, overwrite=True)
    assert (home / ".bashrc").exists()


def test_a_checkpoint_with_non_finite_weights_is_refused_and_nothing_is_written(tmp_path, monkeypatch):
    import dataclasses

    import torch

    from fast_electra_ds.config.run_config import load_config, save_config
    from fast_electra_ds.export import exporter
    from tests.method_helpers import TOKENS
    from tests.helpers import ROOT

    run = tmp_path / "run"
    checkpoint = run / "checkpoints" / "step_00000005"
    checkpoint.mkdir(parents=True)
    (run / "tokenizer").mkdir()
    save_config(load_config([str(ROOT / "configs/tiny.yaml")], ["method=aux-mlm"]), run / "config.yaml")
    (run / "tokens.json").write_text(json.dumps(dataclasses.asdict(TOKENS)))
    monkeypatch.setattr(exporter.ckpt, "resolve_checkpoint", lambda source: checkpoint)
    monkeypatch.setattr(exporter, "consolidated_state_dict",
                        lambda path: {"mlm.electra.embeddings.word_embeddings.weight": torch.tensor([[1.0, float("nan")]])})
    with pytest.raises(UserError, match="non-finite weights .*word_embeddings"):
        exporter.export(run, tmp_path / "out")
    assert not (tmp_path / "out").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["run"]
